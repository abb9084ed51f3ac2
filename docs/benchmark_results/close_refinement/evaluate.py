"""evaluate.py RESNAME [PATTERN]: per case folder in /tmp/s29/cases: mTRE (mm), rotation error (deg), confidence, flag, time, passes."""
import sys, json, glob, os
sys.path.insert(0, '/work/main/SOPIRegistration')
import torch
from sopi.io import read_ct, read_mask
from sopi.geometry import load_pose
from sopi.distances import mtre_mm, rotation_angle_deg
from sopi.benchmark import target_points
S = '/work/main/SOPIRegistration/Resources/SampleData'; T = '/work/shared/data/tptbox_lumbar_crop'
CTS = {'chest': ('/tmp/data/popi_ct.nii.gz', '/tmp/data/popi_spine.nii.gz'), 'pelvis': ('/tmp/data/ts_pelvis_ct.nii.gz', '/tmp/data/ts_pelvis_spine.nii.gz'),
       'sample': (f'{S}/sample_ct.nii.gz', f'{S}/sample_ct_vertebrae.nii.gz'), 'tptbox': (f'{T}/sub-ct_label-22_ct.nii.gz', f'{T}/sub-ct_seg-vert_label-22_msk.nii.gz')}
points = {}
name = sys.argv[1]; pattern = sys.argv[2] if len(sys.argv) > 2 else '*'
for folder in sorted(glob.glob(f'/tmp/s29/cases/{pattern}')):
    path = f'{folder}/res_{name}.json'
    if not os.path.exists(path): continue
    ct = os.path.basename(folder).split('_')[0]
    if ct not in points:
        c, m = CTS[ct]; points[ct] = target_points(read_mask(m, read_ct(c)))
    r = json.load(open(path)); truth = load_pose(f'{folder}/gt.json'); est = torch.tensor(r['matrix'], dtype=torch.float64)
    notes = sorted({s['stage'].split(':')[0] for s in r['stages'] if ':' in s['stage']})
    print(f"{os.path.basename(folder):18s} mtre {float(mtre_mm(est, truth, points[ct])):7.2f} rot {float(rotation_angle_deg(est, truth)):6.2f} conf {r['confidence']:.3f} {'FLAG' if r['likely_failed'] else 'ok  '} t {r['time_s']:6.1f} {notes}")
