"""masked_ncc_maps on a captured chunk (capture.py) with the code at PATH: seconds per call for the first ranking's
derivatives and the second's (unit gradients, floor 2), the maps saved to OUT. Run with the environment sopi sets
(OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=1000): torch is imported first here. Usage: exact.py CAPTURE.pt PATH OUT.pt"""
import sys, time, torch
sys.path.insert(0, sys.argv[2])
import sopi
from sopi import template_matching as tm
images, templates, masks = torch.load(sys.argv[1])[0]
from sopi.similarity import unit_gradients
out = []
for f in (None, 2.0):
    i = images if f is None else torch.stack(unit_gradients(images[:, 0], images[:, 1], f), 1)
    tt = templates if f is None else torch.stack(unit_gradients(templates[:, 0], templates[:, 1], f), 1)
    m = tm.masked_ncc_maps(i, tt, masks); t = time.perf_counter()
    for _ in range(5): m = tm.masked_ncc_maps(i, tt, masks)
    print((time.perf_counter() - t) / 5); out.append(m)
torch.save(out, sys.argv[3])
