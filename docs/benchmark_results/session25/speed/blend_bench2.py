import time, torch, sopi
torch.manual_seed(0)
data = torch.rand(1, 141, 512, 512)
n = 512
idx = torch.randint(0, 511, (n,)).sort().values
frac = torch.rand(n)
def a():
    s = data.movedim(3, 0)
    low, high = s.index_select(0, idx), s.index_select(0, idx + 1)
    return torch.lerp(low, high, frac[:, None, None, None], out=low)
def b():
    low, high = data.index_select(3, idx), data.index_select(3, idx + 1)
    r = torch.lerp(low, high, frac, out=low)
    return r.movedim(3, 0).contiguous()
major = data.movedim(3, 0).contiguous()
def c():
    low, high = major.index_select(0, idx), major.index_select(0, idx + 1)
    return torch.lerp(low, high, frac[:, None, None, None], out=low)
for f in (a, b, c, a, b, c):
    t = time.perf_counter(); r = f(); print(f.__name__, round(time.perf_counter() - t, 3))
print(torch.equal(a(), b()), torch.equal(a(), c()))
