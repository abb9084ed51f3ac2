#!/bin/bash
S=/work/main/SOPIRegistration/Resources/SampleData; T=/work/shared/data/tptbox_lumbar_crop
for name in $(cat /tmp/s29/refined_cases.txt); do
  ctname=${name%%_*}; i=${name##*_}; d=/tmp/s29/cases/$name
  case $ctname in chest) ct=/tmp/data/popi_ct.nii.gz;; pelvis) ct=/tmp/data/ts_pelvis_ct.nii.gz;; sample) ct=$S/sample_ct.nii.gz;; tptbox) ct=$T/sub-ct_label-22_ct.nii.gz;; esac
  PYTHONPATH=/work/wt29/SOPIRegistration /usr/bin/time -o /tmp/s29/tc.txt -f "%e %M" /work/main/.venv/bin/python -m sopi --progress none register --ct $ct --xray $d/xray.mha --init $d/init.json --seed $i --out $d/res_close.json > /dev/null 2>&1
  echo "$name $(tail -1 /tmp/s29/tc.txt)" >> /tmp/s29/ab_close.txt
done
