"""Why SOPIRegistrationLib runs all torch work on one persistent engine thread.

The same registration (sample CT and X-ray, ``rtpi+opt``, CPU) timed in three phases of one
fresh process: only on a worker thread; then on the main thread; then on the worker thread
again. Once two threads have run torch, each pays for the other's OpenMP workers, which
keep spinning after their parallel regions.

Usage::

    .venv/bin/python benchmarks/engine_thread.py [--repeats 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    worker = ThreadPoolExecutor(max_workers=1)

    def setup():
        import torch

        from sopi.io_xray import read_xray
        from sopi.sample_data import load_sample, sample_data_dir, sample_rtpi_model_path

        ct, labels = load_sample()
        spine = labels.with_data((labels.data != 0).to(torch.uint8))
        return ct, spine, read_xray(sample_data_dir() / "sample_xray.mha"), sample_rtpi_model_path()

    ct, spine, xray, model = worker.submit(setup).result()  # torch is first used on the worker thread

    def run() -> float:
        from sopi.registration import register

        started = time.perf_counter()
        register(ct, xray, mask=spine, method="rtpi+opt", model=model, device="cpu")
        return time.perf_counter() - started

    worker.submit(run).result()  # warm-up
    phases = {
        "worker thread only": [worker.submit(run).result() for _ in range(args.repeats)],
        "main thread, after the worker": [run() for _ in range(args.repeats)],
        "worker thread, after the main": [worker.submit(run).result() for _ in range(args.repeats)],
    }
    print("| phase | median s | min s | max s |\n|---|---|---|---|")
    for name, times in phases.items():
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")


if __name__ == "__main__":
    main()
