"""The polarity judgement's decisions with the other readings' masks found at 256 px (before) and 128 px (after)."""
import sys, json, time, glob
sys.path.insert(0, '/work/main/SOPIRegistration')
import torch
import sopi.registration.preparation as pp
from sopi.io import read_ct, read_xray
from sopi.geometry import load_pose, CArmGeometry
from sopi.render import working_volumes
from sopi.io_xray import working_xray
from sopi.xray_orientation import orient_xray

cts = {}
def judge(xray, ct_path, init, px):
    if ct_path not in cts:
        cts.clear(); cts[ct_path] = working_volumes(read_ct(ct_path), None)[0]
    pp._OTHER_READINGS_PX = px
    fixed, _ = orient_xray(xray, init, "auto")
    fixed, _ = working_xray(fixed)
    t = time.perf_counter()
    rec = pp.prepare_fixed(fixed, cts[ct_path], init, torch.device('cpu'))[2]
    return rec, time.perf_counter() - t

keys = ('polarity', 'polarity_alternatives', 'polarity_if_unexplained')
for pattern in sys.argv[1:]:
    for case in sorted(glob.glob(pattern)):
        gt = json.load(open(case + '/gt.json'))
        xray = read_xray(case + '/xray.mha', geometry=CArmGeometry.from_dict(json.load(open(case + '/geometry.json'))))
        init = load_pose(case + '/init.json')
        a, ta = judge(xray, gt['ct'], init, 256)
        b, tb = judge(xray, gt['ct'], init, 128)
        line = {'case': case, 'same': all(a.get(k) == b.get(k) for k in keys), **{k: a.get(k) for k in keys},
                **{k + '_128': b.get(k) for k in keys if a.get(k) != b.get(k)},
                'edges': a.get('polarity_scores_edges'), 'edges_128': b.get('polarity_scores_edges'), 't': round(ta, 2), 't_128': round(tb, 2)}
        print(json.dumps(line), flush=True)
