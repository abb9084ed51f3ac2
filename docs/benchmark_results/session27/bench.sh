#!/bin/bash
# usage: bench.sh STAGGERED(none|30) PROTOCOL SEED OUT
S=/work/main/SOPIRegistration/Resources/SampleData; T=/work/shared/data/tptbox_lumbar_crop; D=/tmp/data
cd /work/main && OMP_NUM_THREADS=1 .venv/bin/python benchmarks/objective_variants.py --variant default --staggered-deg $1 -- --progress none benchmark \
  --ct $S/sample_ct.nii.gz --mask $S/sample_ct_vertebrae.nii.gz --ct $T/sub-ct_label-22_ct.nii.gz --mask $T/sub-ct_seg-vert_label-22_msk.nii.gz \
  --ct $D/ts_pelvis_ct.nii.gz --mask $D/ts_pelvis_spine.nii.gz --ct $D/popi_ct.nii.gz --mask $D/popi_spine.nii.gz \
  --protocol $2 --realistic --methods global+opt --cases 10 --seed $3 --device cpu --out $4
