#!/bin/bash
# usage: grid.sh NAME  (env passes BLUR/PATCH/F)
cd /tmp/s27; mkdir -p g/$1
S=/work/main/SOPIRegistration/Resources/SampleData; T=/work/shared/data/tptbox_lumbar_crop
for s in 0 1; do
VARIANTS=asis /work/main/.venv/bin/python noise_probe.py $T/sub-ct_label-22_ct.nii.gz $T/sub-ct_seg-vert_label-22_msk.nii.gz $s > g/$1/tpt_$s.txt 2>&1
VARIANTS=asis /work/main/.venv/bin/python noise_probe.py /tmp/data/ts_pelvis_ct.nii.gz /tmp/data/ts_pelvis_spine.nii.gz $s > g/$1/pelvis_$s.txt 2>&1
VARIANTS=asis /work/main/.venv/bin/python noise_probe.py $S/sample_ct.nii.gz $S/sample_ct_vertebrae.nii.gz $s > g/$1/sample_$s.txt 2>&1
done
python3 - $1 <<'PY'
import sys,glob,re,statistics as st
vals=[]
for f in sorted(glob.glob(f'/tmp/s27/g/{sys.argv[1]}/*.txt')):
    v=[float(m) for m in re.findall(r'asis ([+-][0-9.]+)', open(f).read())]
    vals+=v
a=[abs(x) for x in vals]
print(sys.argv[1], 'n',len(a),'median|peak| %.2f'%st.median(a),'rms %.2f'%(sum(x*x for x in vals)/len(vals))**.5,'>2: %d'%sum(x>2 for x in a),'>1.5: %d'%sum(x>1.5 for x in a))
PY
