import sys, time, collections
import sopi
import sopi.drr as D
orig = D._blended_slices
LOG = collections.Counter(); T = collections.Counter()
def logged(data, dim, positions, major=None):
    t = time.perf_counter(); r = orig(data, dim, positions, major); dt = time.perf_counter() - t
    key = (dim, tuple(data.shape), len(positions)); LOG[key] += 1; T[key] += dt
    return r
D._blended_slices = logged
from sopi.cli import main
t0 = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("total", round(time.perf_counter() - t0, 1), "blend time", round(sum(T.values()), 2), "calls", sum(LOG.values()))
for k in sorted(LOG, key=lambda k: -T[k])[:15]:
    print(k, LOG[k], round(T[k], 2))
