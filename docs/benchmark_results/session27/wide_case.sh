#!/bin/bash
# wide_case.sh NAME CT MASK SEED CASE
d=/tmp/s27/wide/$1_wide$4_$5
cd /work/main
[ -f $d/xray.mha ] || PYTHONPATH=SOPIRegistration .venv/bin/python -m sopi --progress none simulate $2 --mask $3 --protocol wide --realistic --seed $4 --case $5 --cases 10 --out $d > /dev/null 2>&1
PYTHONPATH=SOPIRegistration .venv/bin/python /tmp/s27/truth_rot.py $2 $3 $d 2>&1 | grep -E "RESULT|Error|error" 
