#!/bin/bash
# reg.sh MINHU CASEDIR [extra...]: sopi register as independent_xrays.py run does, with min_hu changed
minhu=$1; f=$2; shift 2
seed=$(python3 -c "import json;d=json.load(open('$f/gt.json'));print(d['seed']+d['case'])")
ct=$(python3 -c "import json;print(json.load(open('$f/gt.json'))['ct'])")
start=$(date +%s.%N)
OMP_NUM_THREADS=1 PYTHONPATH=/work/main/SOPIRegistration /work/main/.venv/bin/python /tmp/s34/exp/run_minhu.py $minhu --progress none register --ct $ct --xray $f/xray.mha --geometry $f/geometry.json --init $f/init.json --seed $seed --out $f/result.json "$@" 2> $f/register.log
echo "$(echo "$(date +%s.%N) - $start" | bc)" > $f/wall_s.txt
