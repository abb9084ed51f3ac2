# reg.sh CASE OUT [opts]: one case as benchmarks/independent_xrays.py run registers it (seed = its seed + case)
C=$1; O=$2; shift 2
cd "$(dirname "$0")/../../../.."
S=$(date +%s.%N)
OMP_NUM_THREADS=1 PYTHONPATH=SOPIRegistration .venv/bin/python -m sopi --progress none register --ct $(python3 -c "import json;print(json.load(open('$C/gt.json'))['ct'])") --xray $C/xray.mha --geometry $C/geometry.json --init $C/init.json --seed $(python3 -c "import json;d=json.load(open('$C/gt.json'));print(d['seed']+d['case'])") --out $O "$@" > $O.log 2>&1
echo "$(date +%s.%N) - $S" | bc > $O.wall
