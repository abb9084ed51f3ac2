import os, subprocess, sys, time, statistics, json
case, seed, ct = sys.argv[1], sys.argv[2], sys.argv[3]
settings = sys.argv[4].split(';')
loads = sys.argv[5].split(',')
repeats = int(sys.argv[6])
res = {}
for rep in range(repeats):
    for load in loads:
        lp = subprocess.Popen([sys.executable, '-c', 'while True: pass']) if load == 'busy' else None
        time.sleep(0.5)
        for s in settings:
            env = dict(os.environ)
            for kv in filter(None, s.split(',')):
                k, v = kv.split('='); env[k] = v
            t = time.perf_counter()
            subprocess.run([sys.executable, '-m', 'sopi', '--progress', 'none', 'register', '--ct', ct, '--xray', f'{case}/xray.mha', '--init', f'{case}/init.json', '--seed', seed, '--out', f'/tmp/s29/spin_out.json'], env=env, check=True, capture_output=True)
            dt = time.perf_counter() - t
            res.setdefault((s, load), []).append(dt)
            print(rep, load, s or 'PASSIVE', f'{dt:.2f}', flush=True)
        if lp: lp.kill()
for (s, load), v in res.items():
    print(f'{load:5s} {s or "PASSIVE":40s} median {statistics.median(v):.2f} {["%.1f" % x for x in v]}')
