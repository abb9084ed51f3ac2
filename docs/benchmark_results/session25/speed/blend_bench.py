import time, torch, sopi
from sopi.drr import _blended_slices
torch.manual_seed(0)
data = torch.rand(2, 141, 512, 512)
for dim in (1, 2, 3):
    size = data.shape[dim]
    positions = torch.linspace(-0.99, 0.99, 170, dtype=torch.float64)
    t = time.perf_counter(); a = _blended_slices(data, dim, positions); t1 = time.perf_counter() - t
    moved = data.movedim(dim, 1).contiguous()  # (C, n, ...)
    t = time.perf_counter(); moved2 = data.movedim(dim, 1).contiguous(); tc = time.perf_counter() - t
    t = time.perf_counter(); b = _blended_slices(moved, 1, positions); t2 = time.perf_counter() - t
    print(dim, a.shape, f"strided {t1:.3f} s, contiguous copy once {tc:.3f} s, then blend {t2:.3f} s", torch.equal(a, b))
