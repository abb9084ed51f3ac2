#!/usr/bin/env python3
"""Whole ``sopi register`` wall time on a shared CPU: alone and next to a competing load.

Each run is a fresh ``sopi register`` process (reading the CT, preparing the X-ray,
registering, writing the JSON). By default on the sample case: the bundled sample CT, its reference
vertebra labels as the mask, the bundled sample X-ray, method ``opt``, seed 0. With ``--ct CT
--case FOLDER`` (a ``sopi simulate`` output: ``xray.mha``, ``init.json``) on that case instead, as
a new user runs it: the default method, the automatic spine mask, ``--seed``.

Settings compared (``--settings``):

* ``torch-first``: the behaviour before issue 13 item 6: torch (and its OpenMP runtime) is
  imported before ``sopi`` can set anything, so OpenMP keeps its default wait policy
  (threads spin about 3 ms at every barrier before sleeping) and torch uses one thread per core.
* ``sopi``: ``python -m sopi`` as shipped: importing ``sopi`` first sets short waits
  (``OMP_WAIT_POLICY=PASSIVE`` with ``GOMP_SPINCOUNT=1000``: spin about 10 us, then sleep;
  :func:`sopi.short_openmp_waits`); torch's default thread count.
* ``threads=N``: as ``sopi`` with ``OMP_NUM_THREADS=N``.
* ``env:NAME=VALUE,...``: as ``torch-first`` with these environment variables (for example
  ``env:OMP_WAIT_POLICY=PASSIVE``, read by OpenMP when torch loads it: sleeping at once, as shipped
  before the short spin).

Loads (``--loads``): ``none``; ``busy``: one process spinning in pure Python (one core
taken); ``torch``: a second torch process with default settings running small parallel
operations in a loop, as a second registration or Slicer would.

Runs are interleaved (setting by setting within each repeat) so that other work on the
machine hits every setting alike; the median wall time is reported.

Usage:
    .venv/bin/python benchmarks/cpu_contention.py --repeats 3 --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "SOPIRegistration" / "Resources" / "SampleData"
SECTION = "## Shared CPU: thread count and OpenMP wait policy (issue 13 item 6)"
BOOT = {
    "torch-first": "import torch, sys; from sopi.cli import main; sys.exit(main())",
    "sopi": "import runpy; runpy.run_module('sopi', run_name='__main__')",
}
LOADS = {
    "busy": "while True: pass",
    "torch": (
        "import torch\n"
        "a = torch.randn(64, 32, 96, 96)\n"
        "w = torch.randn(32, 32, 3, 3)\n"
        "while True:\n"
        "    torch.nn.functional.conv2d(a, w, padding=1).sum()\n"
    ),
}


def register_command(setting: str, out: Path, case: tuple[Path, Path, int] | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one ``sopi register`` run under ``setting``; ``case``: ``(CT, a
    simulated case's folder, seed)`` instead of the sample case."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(REPO / "SOPIRegistration")
    for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
        environment.pop(name, None)
    boot = BOOT["torch-first" if setting == "torch-first" else "sopi"]
    if setting.startswith("threads="):
        environment["OMP_NUM_THREADS"] = setting.split("=", 1)[1]
    if setting.startswith("env:"):  # env:NAME=VALUE,NAME=VALUE: torch-first with these variables
        boot = BOOT["torch-first"]
        environment.update(pair.split("=", 1) for pair in setting[4:].split(","))
    if case is None:
        arguments = [
            "register", "--ct", str(SAMPLE / "sample_ct.nii.gz"), "--xray", str(SAMPLE / "sample_xray.mha"),
            "--mask", str(SAMPLE / "sample_ct_vertebrae.nii.gz"), "--method", "opt", "--seed", "0",
            "--out", str(out), "--quiet",
        ]  # fmt: skip
    else:
        ct, folder, seed = case
        arguments = ["register", "--ct", str(ct), "--xray", str(folder / "xray.mha"), "--init", str(folder / "init.json"),
                     "--seed", str(seed), "--out", str(out), "--quiet"]
    return [sys.executable, "-c", f"import sys; sys.argv = ['sopi', *sys.argv[1:]]; {boot}", *arguments], environment


def timed_run(setting: str, folder: Path, case: tuple[Path, Path, int] | None = None) -> float:
    """Wall seconds of one ``sopi register`` process (raises if it fails)."""
    command, environment = register_command(setting, folder / "result.json", case)
    started = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{setting}: exit {completed.returncode}: {completed.stderr[-500:]}")
    return elapsed


def start_load(load: str) -> subprocess.Popen | None:
    """Start the competing process for ``load`` (None for ``none``)."""
    if load == "none":
        return None
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    process = subprocess.Popen([sys.executable, "-c", LOADS[load]], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2.0)  # let it import torch and reach its loop
    return process


def stop_load(process: subprocess.Popen | None) -> None:
    if process is not None:
        process.kill()
        process.wait()


def measure(settings: list[str], loads: list[str], repeats: int, case: tuple[Path, Path, int] | None = None) -> dict[tuple[str, str], list[float]]:
    """Wall times per (load, setting); settings interleaved within each repeat."""
    times: dict[tuple[str, str], list[float]] = {(load, setting): [] for load in loads for setting in settings}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(repeats):
            for load in loads:
                process = start_load(load)
                try:
                    order = settings if repeat % 2 == 0 else settings[::-1]
                    for setting in order:
                        seconds = timed_run(setting, Path(folder), case)
                        times[(load, setting)].append(seconds)
                        print(f"repeat {repeat + 1} load {load} {setting}: {seconds:.1f} s", file=sys.stderr, flush=True)
                finally:
                    stop_load(process)
    return times


def report(times: dict, settings: list[str], loads: list[str], load_average: tuple[float, float], argv: list[str], what: str = "the sample case") -> str:
    """The markdown section."""
    lines = [SECTION, ""]
    lines.append(
        f"Date: {datetime.date.today().isoformat()}. Machine: {os.cpu_count()} logical cores, Python {sys.version.split()[0]}; "
        f"load average (1 min) at start / end {load_average[0]:.2f} / {load_average[1]:.2f} (other work shares the machine, "
        "so read the numbers as upper bounds and compare within a row)."
    )
    lines += ["", f"Median wall time of a whole `sopi register` process on {what} (s; all runs in brackets):", ""]
    lines += ["| load | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for load in loads:
        cells = []
        for setting in settings:
            values = times[(load, setting)]
            cells.append(f"{statistics.median(values):.1f} ({', '.join(f'{v:.1f}' for v in values)})")
        lines.append(f"| {load} | " + " | ".join(cells) + " |")
    lines += ["", "Command:", "", "```", " ".join([".venv/bin/python", "benchmarks/cpu_contention.py", *argv]), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["torch-first", "sopi", "threads=1"])
    parser.add_argument("--loads", nargs="+", default=["none", "busy", "torch"], choices=["none", *LOADS])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ct", type=Path, default=None, help="with --case: register this CT's simulated case")
    parser.add_argument("--case", type=Path, default=None, help="a `sopi simulate` folder (xray.mha, init.json)")
    parser.add_argument("--seed", type=int, default=0, help="registration seed with --case")
    parser.add_argument("--out", type=Path, default=None, help="write/replace the section in this markdown file")
    args = parser.parse_args(argv)
    if (args.ct is None) != (args.case is None):
        parser.error("--ct and --case go together")
    if args.case is not None and args.out is not None:
        parser.error("--out replaces the sample case's section; print a --case run and copy what you need")
    case = None if args.case is None else (args.ct, args.case, args.seed)
    what = "the sample case" if case is None else f"the case `{args.case.name}` of `{args.ct.name}` (seed {args.seed})"
    start = os.getloadavg()[0]
    times = measure(args.settings, args.loads, args.repeats, case)
    section = report(times, args.settings, args.loads, (start, os.getloadavg()[0]), sys.argv[1:] if argv is None else argv, what)
    print(section)
    if args.out:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from drr_speed_report import write_section

        write_section(args.out, section)


if __name__ == "__main__":
    main()
