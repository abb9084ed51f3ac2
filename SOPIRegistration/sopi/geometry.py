"""C-arm geometry and pose conventions (see ``docs/conventions.md``).

Frames
------
* **World**: the CT's physical frame, LPS millimetres (as SimpleITK reads files).
* **Camera**: origin at the X-ray source, ``+z`` along the principal ray towards
  the detector, detector plane at ``z = sdd_mm``, ``+x`` along increasing detector
  column, ``+y`` along increasing detector row.

A pose is a 4x4 ``camera_from_world`` matrix ``[[R, t], [0, 1]]``; a world point
``X`` lands on pixel ``(col, row) = dehomogenise(K (R X + t))``.

Paper parameters ``theta = (rx, ry, rz, tx, ty, tz)`` (degrees, mm) describe a pose
relative to a :class:`NominalView`: the CT is moved by ``A = Mt Mrx Mry Mrz``
(paper eq. 2-3) in the *isocentric frame* (origin at the isocentre, axes parallel
to the nominal camera's axes)::

    camera_from_world(theta) = camera_from_iso @ A(theta) @ iso_from_world
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .atomic import write_json
from .errors import InputError

__all__ = [
    "PARAM_NAMES",
    "CArmGeometry",
    "NominalView",
    "PRESETS",
    "RAS_FROM_LPS",
    "euler_from_rotation",
    "invert_rigid",
    "load_pose",
    "nominal_view",
    "paper_matrix",
    "paper_params",
    "params_to_dict",
    "project_points",
    "rigid",
    "rotation_from_euler",
    "save_pose",
    "transform_points",
]

#: ``ras = RAS_FROM_LPS @ lps`` (and its own inverse).
RAS_FROM_LPS = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64))


#: Largest accepted source-to-detector distance (mm); C-arms and radiography rooms are 0.9-1.8 m.
MAX_SDD_MM = 10_000.0
#: Largest accepted detector edge (pixels); flat panels have up to about 4k.
MAX_DETECTOR_PIXELS = 16_384
#: Largest accepted pixel spacing (mm), room for strongly binned working detectors.
MAX_PIXEL_SPACING_MM = 1_000.0


@dataclass(frozen=True)
class CArmGeometry:
    """Intrinsic C-arm geometry.

    Args:
        sdd_mm: source-to-detector distance (mm).
        rows, cols: detector size in pixels.
        pixel_spacing_mm: ``(du, dv)``, column and row pixel spacing (mm).
        principal_point_px: ``(cu, cv)`` in pixels; default the image centre
            ``((cols - 1) / 2, (rows - 1) / 2)``.
        source_to_isocenter_mm: distance from the source to the C-arm's isocentre
            (mm), used to place nominal views; default ``2/3 * sdd_mm``.
        view_from_reference: for one view of several, the 4x4 rigid map (row by row, mm) from
            the reference view's camera frame (view 0's) to this view's camera frame: the
            C-arm's motion between the shots (the patient stays still). ``None`` for a
            single view (the identity). See :mod:`sopi.views`.
    """

    sdd_mm: float
    rows: int
    cols: int
    pixel_spacing_mm: tuple[float, float]
    principal_point_px: tuple[float, float] | None = None
    source_to_isocenter_mm: float | None = None
    view_from_reference: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not 0 < _as_float(self.sdd_mm) <= MAX_SDD_MM:
            raise InputError(f"geometry: sdd_mm must be a number in (0, {MAX_SDD_MM:g}] mm, got {self.sdd_mm!r}")
        size = (_as_float(self.rows), _as_float(self.cols))
        if not all(math.isfinite(n) and int(n) == n and n >= 1 for n in size):
            raise InputError(f"geometry: rows/cols must be positive integers, got {self.rows!r}, {self.cols!r}")
        if max(self.rows, self.cols) > MAX_DETECTOR_PIXELS:
            raise InputError(
                f"geometry: rows/cols must be at most {MAX_DETECTOR_PIXELS} pixels, got {self.rows!r} x {self.cols!r}"
            )
        spacing = tuple(_as_float(s) for s in self.pixel_spacing_mm)
        if len(spacing) != 2 or not all(0 < s <= MAX_PIXEL_SPACING_MM for s in spacing):
            raise InputError(
                f"geometry: pixel_spacing_mm must be two numbers in (0, {MAX_PIXEL_SPACING_MM:g}] mm, got {self.pixel_spacing_mm!r}"
            )
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "cols", int(self.cols))
        object.__setattr__(self, "sdd_mm", float(self.sdd_mm))
        object.__setattr__(self, "pixel_spacing_mm", spacing)
        if self.principal_point_px is None:
            object.__setattr__(self, "principal_point_px", ((self.cols - 1) / 2.0, (self.rows - 1) / 2.0))
        else:
            point = tuple(_as_float(p) for p in self.principal_point_px)
            reach = 10.0 * max(self.rows, self.cols)  # beyond this the principal ray misses the detector by far
            if len(point) != 2 or not all(abs(p) <= reach for p in point):
                raise InputError(
                    f"geometry: principal_point_px must be two numbers within +-{reach:g} px, got {self.principal_point_px!r}"
                )
            object.__setattr__(self, "principal_point_px", point)
        if self.source_to_isocenter_mm is None:
            object.__setattr__(self, "source_to_isocenter_mm", 2.0 * self.sdd_mm / 3.0)
        elif not 0 < _as_float(self.source_to_isocenter_mm) < self.sdd_mm:
            raise InputError(
                f"geometry: source_to_isocenter_mm must lie in (0, sdd_mm={self.sdd_mm}), got {self.source_to_isocenter_mm!r}"
            )
        else:
            object.__setattr__(self, "source_to_isocenter_mm", float(self.source_to_isocenter_mm))
        if self.view_from_reference is not None:
            from .validate import check_rigid_pose

            matrix = check_rigid_pose(self.view_from_reference, "geometry: view_from_reference")
            object.__setattr__(self, "view_from_reference", tuple(tuple(row) for row in matrix.tolist()))

    def reference_transform(self) -> torch.Tensor:
        """``view_from_reference`` as a (4, 4) float64 tensor; the identity when absent."""
        if self.view_from_reference is None:
            return torch.eye(4, dtype=torch.float64)
        return torch.tensor(self.view_from_reference, dtype=torch.float64)

    def with_view_from_reference(self, matrix: torch.Tensor | None) -> CArmGeometry:
        """The same detector with another ``view_from_reference`` (``None`` removes it)."""
        return replace(self, view_from_reference=None if matrix is None else tuple(tuple(row) for row in torch.as_tensor(matrix, dtype=torch.float64).tolist()))

    @property
    def shape(self) -> tuple[int, int]:
        """Detector image shape ``(rows, cols)``."""
        return (self.rows, self.cols)

    def intrinsics(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """The 3x3 matrix ``K = [[sdd/du, 0, cu], [0, sdd/dv, cv], [0, 0, 1]]``."""
        du, dv = self.pixel_spacing_mm
        cu, cv = self.principal_point_px
        return torch.tensor(
            [[self.sdd_mm / du, 0.0, cu], [0.0, self.sdd_mm / dv, cv], [0.0, 0.0, 1.0]], dtype=dtype, device=device
        )

    def resized(self, rows: int, cols: int) -> CArmGeometry:
        """The same physical detector sampled on ``rows x cols`` pixels.

        Pixel spacing scales so the detector's extent is unchanged; the principal
        point moves with the pixel grid (pixel centres, continuous coordinates).
        """
        scale_col, scale_row = self.cols / cols, self.rows / rows
        cu, cv = self.principal_point_px
        return replace(
            self,
            rows=rows,
            cols=cols,
            pixel_spacing_mm=(self.pixel_spacing_mm[0] * scale_col, self.pixel_spacing_mm[1] * scale_row),
            principal_point_px=((cu + 0.5) / scale_col - 0.5, (cv + 0.5) / scale_row - 0.5),
        )

    def padded(self, left: int, top: int, right: int, bottom: int) -> CArmGeometry:
        """The detector grown by whole pixels on each side (same spacing and principal ray):
        a pixel ``(col, row)`` of this detector is ``(col + left, row + top)`` on the result."""
        cu, cv = self.principal_point_px
        return replace(
            self, rows=self.rows + top + bottom, cols=self.cols + left + right, principal_point_px=(cu + left, cv + top)
        )

    def binned(self, factor: int) -> CArmGeometry:
        """Detector binned by an integer ``factor`` in both directions."""
        if factor < 1 or self.rows % factor or self.cols % factor:
            raise InputError(f"geometry: cannot bin {self.rows}x{self.cols} pixels by {factor}")
        return self.resized(self.rows // factor, self.cols // factor)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (the geometry file format)."""
        data = asdict(self)
        data["pixel_spacing_mm"] = list(self.pixel_spacing_mm)
        data["principal_point_px"] = list(self.principal_point_px)
        if self.view_from_reference is None:
            del data["view_from_reference"]
        else:
            data["view_from_reference"] = [list(row) for row in self.view_from_reference]
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str = "geometry") -> CArmGeometry:
        """Build from the geometry JSON dictionary; ``source`` names it in errors."""
        required = ("sdd_mm", "rows", "cols", "pixel_spacing_mm")
        missing = [key for key in required if key not in data]
        if missing:
            raise InputError(
                f"{source}: missing key(s) {missing}; expected {list(required)} "
                "(+ optional principal_point_px, source_to_isocenter_mm, view_from_reference)"
            )
        try:
            return cls(
                sdd_mm=float(data["sdd_mm"]),
                rows=data["rows"],
                cols=data["cols"],
                pixel_spacing_mm=tuple(data["pixel_spacing_mm"]),
                principal_point_px=None if data.get("principal_point_px") is None else tuple(data["principal_point_px"]),
                source_to_isocenter_mm=data.get("source_to_isocenter_mm"),
                view_from_reference=data.get("view_from_reference"),
            )
        except (TypeError, ValueError) as error:
            raise InputError(f"{source}: invalid geometry values ({error})") from error
        except InputError as error:
            raise InputError(f"{source}: {error}") from error

    @classmethod
    def load(cls, path: str | Path) -> CArmGeometry:
        """Read a geometry JSON file."""
        return cls.from_dict(_read_json(path), source=str(path))

    def save(self, path: str | Path) -> None:
        """Write the geometry JSON file (atomically)."""
        write_json(path, self.to_dict())

    @classmethod
    def preset(cls, name: str) -> CArmGeometry:
        """A named geometry from :data:`PRESETS`."""
        try:
            return PRESETS[name]
        except KeyError:
            raise InputError(f"unknown geometry preset {name!r}; expected one of {sorted(PRESETS)}") from None


def _as_float(value: object) -> float:
    """``float(value)``, or NaN for what is not a number (so range checks fail and name the field)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


#: Named geometries. ``perlove-plx118f`` is the paper's C-arm (1024^2 detector at
#: 0.19959 mm binned 4x); its source-to-isocentre distance 675 mm is the middle
#: of the paper's depth range (600-750 mm).
PRESETS: dict[str, CArmGeometry] = {
    "perlove-plx118f": CArmGeometry(1011.7, 256, 256, (0.79836, 0.79836), source_to_isocenter_mm=675.0),
    "perlove-plx118f-full": CArmGeometry(1011.7, 1024, 1024, (0.19959, 0.19959), source_to_isocenter_mm=675.0),
    "generic": CArmGeometry(1000.0, 256, 256, (0.8, 0.8), source_to_isocenter_mm=650.0),
}


# --------------------------------------------------------------------------- rigid helpers


def rigid(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Stack ``(..., 3, 3)`` rotations and ``(..., 3)`` translations into ``(..., 4, 4)``."""
    # numpy's rule (torch.broadcast_shapes imports torch.fx's symbolic shapes and sympy: 0.3 s per process)
    batch = np.broadcast_shapes(tuple(rotation.shape[:-2]), tuple(translation.shape[:-1]))
    matrix = torch.zeros(*batch, 4, 4, dtype=rotation.dtype, device=rotation.device)
    matrix[..., :3, :3] = rotation
    matrix[..., :3, 3] = translation
    matrix[..., 3, 3] = 1.0
    return matrix


def invert_rigid(matrix: torch.Tensor) -> torch.Tensor:
    """Closed-form inverse of rigid ``(..., 4, 4)`` matrices."""
    rotation_t = matrix[..., :3, :3].transpose(-1, -2)
    return rigid(rotation_t, -(rotation_t @ matrix[..., :3, 3:4])[..., 0])


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``(..., 4, 4)`` affine matrices to ``(..., N, 3)`` points."""
    return points @ matrix[..., :3, :3].transpose(-1, -2) + matrix[..., None, :3, 3]


def project_points(
    camera_from_world: torch.Tensor, geometry: CArmGeometry, points_world: torch.Tensor
) -> torch.Tensor:
    """Pixel coordinates ``(..., N, 2)`` as ``(col, row)`` of world points ``(..., N, 3)``."""
    intrinsics = geometry.intrinsics(dtype=points_world.dtype, device=points_world.device)
    camera = transform_points(camera_from_world.to(points_world.dtype), points_world)
    homogeneous = camera @ intrinsics.T
    return homogeneous[..., :2] / homogeneous[..., 2:3]


def _axis_rotation(angle: torch.Tensor, axis: int) -> torch.Tensor:
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 0:
        rows = [[one, zero, zero], [zero, cos, -sin], [zero, sin, cos]]
    elif axis == 1:
        rows = [[cos, zero, sin], [zero, one, zero], [-sin, zero, cos]]
    else:
        rows = [[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def rotation_from_euler(angles_rad: torch.Tensor) -> torch.Tensor:
    """``Mrx @ Mry @ Mrz`` (paper eq. 3) from ``(..., 3)`` angles ``(rx, ry, rz)`` in radians."""
    return (
        _axis_rotation(angles_rad[..., 0], 0)
        @ _axis_rotation(angles_rad[..., 1], 1)
        @ _axis_rotation(angles_rad[..., 2], 2)
    )


def euler_from_rotation(rotation: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rotation_from_euler`: ``(..., 3)`` radians with ``ry`` in ``[-pi/2, pi/2]``."""
    ry = torch.asin(rotation[..., 0, 2].clamp(-1.0, 1.0))
    rx = torch.atan2(-rotation[..., 1, 2], rotation[..., 2, 2])
    rz = torch.atan2(-rotation[..., 0, 1], rotation[..., 0, 0])
    return torch.stack([rx, ry, rz], dim=-1)


def paper_matrix(theta: torch.Tensor) -> torch.Tensor:
    """``A = Mt Mrx Mry Mrz`` (paper eq. 2) from ``(..., 6)`` theta in degrees and mm."""
    return rigid(rotation_from_euler(torch.deg2rad(theta[..., :3])), theta[..., 3:])


#: Names of the six paper parameters with their units, in ``theta`` order.
PARAM_NAMES = ("rx_deg", "ry_deg", "rz_deg", "tx_mm", "ty_mm", "tz_mm")


def params_to_dict(theta: torch.Tensor) -> dict[str, float]:
    """``{"rx_deg": ..., "tz_mm": ...}`` from a ``(6,)`` theta."""
    return {name: float(value) for name, value in zip(PARAM_NAMES, theta.reshape(6).tolist())}


def paper_params(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`paper_matrix`: ``(..., 6)`` theta in degrees and mm."""
    angles = torch.rad2deg(euler_from_rotation(matrix[..., :3, :3]))
    return torch.cat([angles, matrix[..., :3, 3]], dim=-1)


# --------------------------------------------------------------------------- nominal views


@dataclass(frozen=True)
class NominalView:
    """A reference pose and the isocentre that the paper's parameters pivot about.

    Attributes:
        camera_from_world: (4, 4) float64 reference pose (theta = 0).
        isocenter_world: (3,) float64 isocentre, LPS mm.
    """

    camera_from_world: torch.Tensor
    isocenter_world: torch.Tensor
    name: str = field(default="custom")

    @property
    def camera_from_iso(self) -> torch.Tensor:
        """Translation to the isocentre's camera coordinates (axes parallel to the camera's)."""
        isocenter_camera = transform_points(self.camera_from_world, self.isocenter_world[None].to(torch.float64))[0]
        return rigid(torch.eye(3, dtype=torch.float64), isocenter_camera)

    def pose(self, theta: torch.Tensor) -> torch.Tensor:
        """``camera_from_world`` (..., 4, 4) for paper parameters ``theta`` (..., 6) (deg, mm)."""
        camera_from_iso = self.camera_from_iso.to(theta)
        iso_from_world = invert_rigid(camera_from_iso) @ self.camera_from_world.to(theta)
        return camera_from_iso @ paper_matrix(theta) @ iso_from_world

    def params(self, camera_from_world: torch.Tensor) -> torch.Tensor:
        """Paper parameters (..., 6) of a ``camera_from_world`` (..., 4, 4); inverse of :meth:`pose`."""
        camera_from_iso = self.camera_from_iso.to(camera_from_world)
        world_from_iso = invert_rigid(self.camera_from_world.to(camera_from_world)) @ camera_from_iso
        return paper_params(invert_rigid(camera_from_iso) @ camera_from_world @ world_from_iso)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "matrix": self.camera_from_world.tolist(),
            "isocenter_world_mm": self.isocenter_world.tolist(),
        }


#: Camera axes (rows: +x column direction, +y row direction, +z principal ray) in LPS
#: for a supine patient. AP: beam anterior -> posterior, patient's left towards
#: increasing column, head at row 0. Lateral: beam right -> left, anterior towards
#: increasing column, head at row 0. PA: beam posterior -> anterior (a supine patient with
#: the source under the table), seen from the source: the patient's right towards increasing
#: column, head at row 0.
_VIEW_AXES = {
    "ap": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0)),
    "lateral": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
    "pa": ((-1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, -1.0, 0.0)),
}
#: The nominal views :func:`nominal_view` knows.
NOMINAL_VIEWS = tuple(_VIEW_AXES)


def nominal_view(
    view: str, isocenter_world: torch.Tensor | tuple[float, float, float], source_to_isocenter_mm: float
) -> NominalView:
    """The nominal ``ap``, ``lateral`` or ``pa`` view (:data:`NOMINAL_VIEWS`) with the isocentre on the principal ray.

    The source sits ``source_to_isocenter_mm`` before the isocentre along the principal ray.
    """
    if view not in _VIEW_AXES:
        raise InputError(f"unknown view {view!r}; expected one of {sorted(_VIEW_AXES)}")
    isocenter = torch.as_tensor(isocenter_world, dtype=torch.float64).reshape(3)
    rotation = torch.tensor(_VIEW_AXES[view], dtype=torch.float64)
    translation = torch.tensor([0.0, 0.0, float(source_to_isocenter_mm)], dtype=torch.float64) - rotation @ isocenter
    return NominalView(rigid(rotation, translation), isocenter, name=view)


# --------------------------------------------------------------------------- pose files


def load_pose(path: str | Path) -> torch.Tensor:
    """Read ``{"matrix": 4x4 camera_from_world}`` (float64); other keys are ignored."""
    data = _read_json(path)
    if "matrix" not in data:
        raise InputError(f"{path}: pose JSON needs a 'matrix' key holding a 4x4 camera_from_world")
    from .validate import check_rigid_pose

    return check_rigid_pose(data["matrix"], f"{path}: 'matrix'")


def save_pose(path: str | Path, camera_from_world: torch.Tensor, **extra) -> None:
    """Write ``{"matrix": ..., **extra}`` atomically."""
    write_json(path, {"matrix": camera_from_world.detach().to(torch.float64).cpu().tolist(), **extra})


def _read_json(path: str | Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a readable JSON file ({error})") from error
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data
