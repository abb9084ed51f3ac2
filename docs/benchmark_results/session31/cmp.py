"""masked_ncc_maps / gradient_ncc_maps of the base copy and the working tree on captured chunks: differences, times."""
import sys, time, importlib.util, torch
import sopi
from sopi import template_matching as new
spec = importlib.util.spec_from_file_location("base_tm", "/tmp/s31/base/SOPIRegistration/sopi/template_matching.py", submodule_search_locations=None)
sys.path.insert(0, "/tmp/s31/base/SOPIRegistration")
import importlib
base = importlib.import_module("sopi.template_matching") if False else None
src = open("/tmp/s31/base/SOPIRegistration/sopi/template_matching.py").read().replace("from .torch_workers", "from sopi.torch_workers")
base = type(sys)("base_tm"); exec(compile(src, "base_tm", "exec"), base.__dict__)
for path in sys.argv[1:]:
    images, templates, masks = torch.load(path)[0]
    for name in ("masked_ncc_maps", "gradient_ncc_maps"):
        a = getattr(base, name)(images, templates, masks); b = getattr(new, name)(images, templates, masks)
        same_top = torch.equal(a.flatten(1).argmax(1), b.flatten(1).argmax(1))
        print(path.split("/")[-1], name, "max |diff|", (a - b).abs().max().item(), "equal", torch.equal(a, b), "same argmax per image", same_top)
        for label, mod in (("base", base), ("new", new)):
            f = getattr(mod, name)
            f(images, templates, masks)
            t = time.perf_counter()
            for _ in range(5): f(images, templates, masks)
            print("  ", label, round((time.perf_counter() - t) / 5, 4), "s")
