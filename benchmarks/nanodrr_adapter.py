"""nanodrr 0.1.7 on sopi's scene, for ``benchmarks/drr_speed.py`` (benchmark-only, ``.bench-venv``).

nanodrr's camera is a Hartley-Zisserman pinhole with the source at the origin and the detector
at ``z = sdd``; pixel ``(col, row)``'s centre sits at ``K^-1 (col + 0.5, row + 0.5, 1) sdd`` with
the principal point ``x0 / du + W / 2`` (mm offset ``x0`` from the detector centre). That is
sopi's camera frame (``+x`` columns, ``+y`` rows, ``+z`` the principal ray) with
``x0 = (cu - (W - 1) / 2) du``. Its world is the subject's ``voxel_to_world``, here sopi's
``world_from_index`` (LPS), so the extrinsic it takes (``rt_inv``, camera to world) is sopi's
``invert_rigid(camera_from_world)``: no axis flips. Voxels are sopi's attenuation (``convert_to_mu``
off), rendered with the pure-torch backend (``backend="torch"``; the Triton and Metal kernels
need CUDA or Apple GPUs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

try:
    import nanodrr
    from nanodrr.data import Subject
    from nanodrr.drr import DRR as NanoDRR

    NANODRR_ERROR = None
except ImportError as error:  # not in this venv
    nanodrr = None
    NANODRR_ERROR = f"{type(error).__name__}: {error}"

__all__ = ["NANODRR_ERROR", "nanodrr", "nanodrr_renderer"]


def nanodrr_renderer(volume, geometry, pose: Callable[[torch.Tensor], torch.Tensor], n_samples: int, device: torch.device):
    """``theta (B, 6) -> (B, rows, cols)`` line integrals by nanodrr of sopi's ``volume`` (attenuation,
    ``(K, J, I)``) on ``geometry``; ``pose(theta)`` gives sopi's ``camera_from_world``."""
    from sopi.geometry import invert_rigid

    data = volume.data.to(torch.float32)[None, None].contiguous()  # (1, 1, D, H, W) = (1, 1, K, J, I)
    voxel_to_world = volume.world_from_index.to(torch.float32)
    subject = Subject(
        data, torch.zeros_like(data), voxel_to_world, volume.world_from_index.inverse().to(torch.float32),
        Subject._make_voxel_to_grid(data.shape), volume.center_world.to(torch.float32), convert_to_mu=False,
    ).to(device)  # fmt: skip
    du, dv = geometry.pixel_spacing_mm
    cu, cv = geometry.principal_point_px
    drr = NanoDRR.from_carm_intrinsics(
        geometry.sdd_mm, du, dv, (cu - (geometry.cols - 1) / 2) * du, (cv - (geometry.rows - 1) / 2) * dv,
        geometry.rows, geometry.cols, dtype=torch.float32, device=device,
    )  # fmt: skip

    def render(theta: torch.Tensor) -> torch.Tensor:
        world_from_camera = invert_rigid(pose(theta)).to(torch.float32)
        return drr(subject, world_from_camera, n_samples=n_samples, backend="torch")[:, 0]

    return render
