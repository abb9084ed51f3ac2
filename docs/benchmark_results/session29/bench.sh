#!/bin/bash
# usage: bench.sh OPTION VALUE PROTOCOL SEED OUT CTS(sample,tpt,pelvis,chest)
# OPTION: --gradient-floor or --orientation-hypotheses of benchmarks/objective_variants.py; the code: a copy in CODE
S=/work/main/SOPIRegistration/Resources/SampleData; T=/work/shared/data/tptbox_lumbar_crop; D=/tmp/data; CODE=${CODE:-/tmp/s29/snap2}
args=""
for c in ${6//,/ }; do
  case $c in
    sample) args="$args --ct $S/sample_ct.nii.gz --mask $S/sample_ct_vertebrae.nii.gz";;
    tpt) args="$args --ct $T/sub-ct_label-22_ct.nii.gz --mask $T/sub-ct_seg-vert_label-22_msk.nii.gz";;
    pelvis) args="$args --ct $D/ts_pelvis_ct.nii.gz --mask $D/ts_pelvis_spine.nii.gz";;
    chest) args="$args --ct $D/popi_ct.nii.gz --mask $D/popi_spine.nii.gz";;
  esac
done
cd $CODE && PYTHONPATH=$CODE/SOPIRegistration OMP_NUM_THREADS=1 /work/main/.venv/bin/python benchmarks/objective_variants.py --variant default $1 $2 -- --progress none benchmark \
  $args --protocol $3 --realistic --methods global+opt --cases 10 --seed $4 --device cpu --out $5
