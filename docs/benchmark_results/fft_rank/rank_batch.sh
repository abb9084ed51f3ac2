#!/bin/bash
# diag_batch.sh NAME CT MASK PROTOCOL SEED CASES...
name=$1; ct=$2; mask=$3; protocol=$4; seed=$5; shift 5
cd /work/main
for i in "$@"; do
  d=/tmp/s30/cases/${name}_${protocol}${seed}_$i
  [ -f $d/xray.mha ] || PYTHONPATH=SOPIRegistration .venv/bin/python -m sopi --progress none simulate $ct --mask $mask --protocol $protocol --realistic --seed $seed --case $i --cases 10 --out $d > /dev/null 2>&1
  PYTHONPATH=SOPIRegistration .venv/bin/python docs/benchmark_results/fft_rank/rank_of_truth.py $ct $mask $d none 2>&1 | grep RESULT
done
