# speed/run.sh: whole `sopi register` wall time (default method, spine segmented, 2 threads) on own realistic paper cases
cd /work/main
S=SOPIRegistration/Resources/SampleData
for spec in "sample $S/sample_ct.nii.gz $S/sample_ct_vertebrae.nii.gz" "pelvis /tmp/data/ts_pelvis_ct.nii.gz /tmp/data/ts_pelvis_spine.nii.gz" "chest /tmp/data/popi_ct.nii.gz /tmp/data/popi_spine.nii.gz"; do
  set -- $spec; name=$1; ct=$2; mask=$3
  for c in 0 1 2; do
    d=/tmp/s22/speed/${name}_$c
    [ -f $d/xray.mha ] || PYTHONPATH=SOPIRegistration .venv/bin/python -m sopi --progress none simulate $ct --mask $mask --protocol paper --seed 0 --case $c --cases 10 --realistic --out $d > /dev/null 2>&1
    s=$(date +%s.%N)
    PYTHONPATH=SOPIRegistration .venv/bin/python -m sopi --progress none register --ct $ct --xray $d/xray.mha --geometry $d/geometry.json --init $d/init.json --out $d/res.json > $d/log 2>&1
    e=$(date +%s.%N)
    echo "$name $c wall $(echo "$e - $s" | bc) $(tail -n 2 $d/log | tr '\n' ' ')"
  done
done
