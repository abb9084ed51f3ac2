"""masked_ncc_maps on the chest's captured chunk under an OpenMP wait policy (argv[1]: default, PASSIVE, ACTIVE; set
before torch loads) and whatever GOMP_SPINCOUNT / OMP_NUM_THREADS the environment gives."""
import os, sys, time
if sys.argv[1] != "default": os.environ["OMP_WAIT_POLICY"] = sys.argv[1]
import torch
sys.path.insert(0, "/work/main/SOPIRegistration")
from sopi import template_matching as tm
images, templates, masks = torch.load("/tmp/s30/chest_maps.pt")[0]
tm.masked_ncc_maps(images, templates, masks)
t = time.perf_counter()
for _ in range(5): tm.masked_ncc_maps(images, templates, masks)
print(sys.argv[1], os.environ.get("OMP_WAIT_POLICY"), (time.perf_counter() - t) / 5)
