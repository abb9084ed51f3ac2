#!/bin/bash
# A/B whole sopi register wall time: base (HEAD) vs working tree, interleaved
for c in "$@"; do
  d=/tmp/s25/chest_wide_$c
  for v in base new; do
    if [ $v = base ]; then P=/tmp/s25/base/SOPIRegistration; else P=/work/main/SOPIRegistration; fi
    s=$(date +%s.%N)
    (cd /tmp && PYTHONPATH=$P /work/main/.venv/bin/python -m sopi --progress none register --ct /tmp/data/popi_ct.nii.gz --xray $d/xray.mha --geometry $d/geometry.json --init $d/init.json --out /tmp/s25/ab_${c}_$v.json > /dev/null 2>&1)
    e=$(date +%s.%N)
    python3 -c "
import json; r=json.load(open('/tmp/s25/ab_${c}_$v.json')); print('case $c $v wall', round($e-$s,1), 'engine', r['time_s'], 'conf', r['confidence'], r['matrix'][0][:2])"
  done
done
