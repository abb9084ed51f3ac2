#!/bin/bash
# Realistic paper-protocol cases, ten per CT and seed: make_paper.sh "sample tpt pelvis chest" "0 1" -> /tmp/s31/paper/s{seed}/{ct}_{case}
S=/work/main/SOPIRegistration/Resources/SampleData; T=/work/shared/data/tptbox_lumbar_crop
declare -A CT=( [sample]="$S/sample_ct.nii.gz $S/sample_ct_vertebrae.nii.gz" [tpt]="$T/sub-ct_label-22_ct.nii.gz $T/sub-ct_seg-vert_label-22_msk.nii.gz" [pelvis]="/tmp/data/ts_pelvis_ct.nii.gz /tmp/data/ts_pelvis_spine.nii.gz" [chest]="/tmp/data/popi_ct.nii.gz /tmp/data/popi_spine.nii.gz" )
names=$1; seeds=$2
for seed in $seeds; do for name in $names; do read -r ct mask <<< "${CT[$name]}"; for c in 0 1 2 3 4 5 6 7 8 9; do
 /work/main/.venv/bin/sopi --progress none simulate "$ct" --mask "$mask" --protocol paper --realistic --seed $seed --case $c --cases 10 --out /tmp/s31/paper/s${seed}/${name}_$c >/dev/null || echo fail $name $c
done; done; done
