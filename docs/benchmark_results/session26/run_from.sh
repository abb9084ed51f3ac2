#!/bin/bash
# usage: run_from.sh TAG SEED RESULTS_DIR CT MASK
OMP_NUM_THREADS=1 SEED=$2 OPT=adam G=${G:-60} RS=1.0 TS=2.0 LR=${LR:-0.05} F=${F:-1} /work/main/.venv/bin/python /tmp/s26/polish.py $4 $5 $3 > /tmp/s26/$1_s$2.txt 2>&1
