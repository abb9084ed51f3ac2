import json, sys, glob
from pathlib import Path
sys.path.insert(0, '/work/main/SOPIRegistration')
import torch
from sopi.benchmark import target_points
from sopi.distances import mtre_mm
from sopi.geometry import load_pose
from sopi.io import read_ct, read_mask
S = '/work/main/SOPIRegistration/Resources/SampleData'
MASKS = {'sample_ct.nii.gz': f'{S}/sample_ct_vertebrae.nii.gz', 'ts_pelvis_ct.nii.gz': '/tmp/data/ts_pelvis_spine.nii.gz', 'popi_ct.nii.gz': '/tmp/data/popi_spine.nii.gz'}
points = {}
for case in sys.argv[1:]:
    d = Path(case); gt = json.loads((d / 'gt.json').read_text())
    mask = gt.get('mask') or MASKS[Path(gt['ct']).name]
    if mask not in points:
        points[mask] = target_points(read_mask(mask, read_ct(gt['ct'])))
    row = [case]
    for px in (256, 128):
        f = d / f'result_{px}.json'
        if not f.exists():
            row.append(None); continue
        r = json.loads(f.read_text())
        error = float(mtre_mm(torch.tensor(r['matrix'], dtype=torch.float64), load_pose(d / 'gt.json'), points[mask]))
        tried = list((r['xray_preparation'].get('polarity_first_passes') or {}).keys())
        row.append({'mtre': round(error, 2), 'conf': r['confidence'], 'flag': r['likely_failed'], 'time': r['time_s'], 'tried': tried})
    print(json.dumps(row))
