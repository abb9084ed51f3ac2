import sys, json, time, glob
sys.path.insert(0, '/work/main/SOPIRegistration'); sys.path.insert(0, '/work/main/benchmarks')
import torch
import sopi.xray_prep as xp
import sopi.registration.preparation as pp
from sopi.io import read_ct, read_xray
from sopi.geometry import load_pose, CArmGeometry
from sopi.render import working_volumes
from sopi.io_xray import working_xray
from sopi.xray_orientation import orient_xray

FLIP = "auto"
orig_prepare = xp.prepare_xray
def variant_gradient_scores(xray, drr, working, weight_as_given):
    def small_prepare(image, field_mask=None, **kw):
        old = xp._WORKING_PX; xp._WORKING_PX = 128
        try: return orig_prepare(image, field_mask, **kw)
        finally: xp._WORKING_PX = old
    xp.prepare_xray = small_prepare
    try: return orig_gs(xray, drr, working, weight_as_given)
    finally: xp.prepare_xray = orig_prepare
orig_gs = pp._gradient_scores

cts = {}
def judge(xray, ct_path, init, variant):
    if ct_path not in cts: cts[ct_path] = working_volumes(read_ct(ct_path), None)[0]
    pp._gradient_scores = variant_gradient_scores if variant else orig_gs
    fixed, _ = orient_xray(xray, init, FLIP)
    fixed, _ = working_xray(fixed)
    t = time.perf_counter()
    rec = pp.prepare_fixed(fixed, cts[ct_path], init, torch.device('cpu'))[2]
    return rec, time.perf_counter() - t

out = []
for folder in sys.argv[1:]:
    for case in sorted(glob.glob(folder + '/case_*')):
        gt = json.load(open(case + '/gt.json'))
        xray = read_xray(case + '/xray.mha', geometry=CArmGeometry.from_dict(json.load(open(case + '/geometry.json'))))
        init = load_pose(case + '/init.json')
        a, ta = judge(xray, gt['ct'], init, False)
        b, tb = judge(xray, gt['ct'], init, True)
        keys = ('polarity', 'polarity_alternatives', 'polarity_if_unexplained')
        same = all(a.get(k) == b.get(k) for k in keys)
        de = max(abs(a['polarity_scores_edges'][k] - b['polarity_scores_edges'][k]) for k in a['polarity_scores_edges'])
        line = {'case': case, 'same': same, 'reading': a.get('polarity'), 'alt': a.get('polarity_alternatives'), 'alt_v': b.get('polarity_alternatives'),
                'reading_v': b.get('polarity'), 'max_edge_diff': round(de, 4), 'edges': a['polarity_scores_edges'], 'edges_v': b['polarity_scores_edges'], 't': round(ta, 2), 't_v': round(tb, 2)}
        print(json.dumps(line), flush=True)
