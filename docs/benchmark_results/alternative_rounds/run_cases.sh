#!/bin/bash
# alt_batch.sh NAME CT MASK PROTOCOL SEED CASES...: simulate (if needed) and register with the new code, passes dumped
name=$1; ct=$2; mask=$3; protocol=$4; seed=$5; shift 5
cd /work/main
for i in "$@"; do
  d=/tmp/s30/cases/${name}_${protocol}${seed}_$i
  [ -f $d/xray.mha ] || PYTHONPATH=/work/wt_alt/SOPIRegistration .venv/bin/python -m sopi --progress none simulate $ct --mask $mask --protocol $protocol --realistic --seed $seed --case $i --cases 10 --out $d > /dev/null 2>&1
  OMP_NUM_THREADS=1 PYTHONPATH=/work/wt_alt/SOPIRegistration .venv/bin/python /tmp/s30/alt_log.py --progress none register --ct $ct --xray $d/xray.mha --init $d/init.json --seed $((seed + i)) --out $d/alt.json > $d/alt.log 2>&1
  echo "$name $protocol $seed $i done $(date +%T)"
done
