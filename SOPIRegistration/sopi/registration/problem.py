"""The render-and-compare objective that every registration method optimises.

Poses are searched as paper parameters ``theta`` (deg, mm) relative to the initial
pose, pivoting about an isocentre (:class:`sopi.geometry.NominalView`), so rotations
turn the CT about the spine rather than about the world origin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..drr import Projector
from ..errors import InputError
from ..filters import dilate, gaussian_blur
from ..geometry import CArmGeometry, NominalView, invert_rigid
from ..io_xray import XRay, resize_image
from ..preprocess import MU_WATER_PER_MM
from ..render import binned_volume, working_factors
from ..similarity import SIMILARITIES
from ..volume import Volume
from .projectors import SharedProjectors
from .scatter import read_out, scatter_field, with_scatter

__all__ = ["PoseProblem", "SharedProjectors", "default_pivot", "exposed_field", "with_scatter"]

#: scatter-to-primary ratios the read-out is fitted among (:meth:`PoseProblem.estimate_scatter`)
SCATTER_CANDIDATES = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)


def default_pivot(initial_pose: torch.Tensor, geometry: CArmGeometry) -> torch.Tensor:
    """The isocentre of the initial view: ``source_to_isocenter_mm`` along its principal ray (LPS mm)."""
    world_from_camera = invert_rigid(initial_pose.to(torch.float64))
    return world_from_camera[:3, :3] @ torch.tensor([0.0, 0.0, geometry.source_to_isocenter_mm], dtype=torch.float64) + world_from_camera[:3, 3]


#: Attenuation (1/mm) above which a voxel counts as tissue where the CT's extent cuts a ray
#: (:meth:`PoseProblem.hold_ct_edges`): a tenth of water's, so anything that ``hu_to_attenuation`` keeps.
CT_TISSUE_PER_MM = 0.1 * MU_WATER_PER_MM

#: Whether registration reads DRRs out with scatter from the exposed field only (:func:`exposed_field`).
#: Off: on 60 realistic cases of three CTs it helped one CT's paper row (TPTBox 4 -> 7 of 10) and cost
#: as much on the far rows (22 -> 19 of 30); see docs/benchmarks.md (2026-12-03).
SCATTER_FROM_EXPOSED_FIELD = False


def exposed_field(xray: XRay) -> torch.Tensor | None:
    """What :attr:`PoseProblem.exposed` registration gives for ``xray``: its field mask (True where the beam
    reached the detector) while :data:`SCATTER_FROM_EXPOSED_FIELD` is on, else None; None too where the beam
    reached the whole detector."""
    mask = xray.field_mask
    return None if not SCATTER_FROM_EXPOSED_FIELD or mask is None or bool(mask.all()) else mask


@dataclass
class _Level:
    projector: Projector  # the attenuation's DRRs; the mask's projection as a second channel where spine is None
    spine: Projector | None  # the spine mask's own projector, on the same planes (None: no mask, or one channel of projector)
    fixed: torch.Tensor  # (rows, cols)
    weight: torch.Tensor | None  # (rows, cols): the X-ray's weight on this level
    exposed: torch.Tensor | None = None  # (rows, cols): fraction of each pixel the beam reached
    scatter: torch.Tensor | None = None  # (1, rows, cols): a window's scatter, held (PoseProblem.hold_window)


@dataclass
class PoseProblem:
    """Similarity of the X-ray and the DRR at ``theta`` about the initial pose, per detector level.

    Args:
        volume: attenuation volume (1/mm); with ``mask`` the mask is projected too (on the DRR's own
            sample planes) and weights the similarity (pixels the spine projects onto).
        xray: the fixed image ``(rows, cols)`` on ``geometry``'s detector.
        initial_pose: ``camera_from_world`` the search starts from (theta = 0).
        pivot_world: isocentre the rotations turn about (LPS mm).
        step_mm: ray-marching step at full resolution; coarser levels use ``step_mm`` times the
            level's pixel size in units of a 256-pixel detector's (``factor`` up to 256 pixels; a
            512-pixel detector's factor 4 marches like a 256-pixel one's factor 2), capped at 3 mm.
        xray_weight: optional ``(rows, cols)`` weight in [0, 1] of the X-ray's pixels (0 where the
            CT cannot explain the image: outside the field, saturated, metal; see
            :func:`sopi.xray_prep.prepare_xray`); it multiplies every similarity's weights.
        scatter_to_primary: when positive, every DRR is read out as a real detector would
            see it with scatter: ``-log(P + SPR * <P> * G(P) / <G(P)>)`` with ``P = exp(-DRR)`` and
            ``G`` a Gaussian of ``scatter_sigma_mm`` on the detector (:meth:`estimate_scatter`
            picks SPR). Scatter compresses the contrast of thick regions more than thin ones,
            which shifts edges and biases depth if the DRR lacks it.
        exposed: optional bool ``(rows, cols)``, True where the beam reached the detector (inside the
            collimator and the image intensifier's field; :attr:`sopi.io_xray.XRay.field_mask` of the
            prepared X-ray). Scatter then comes from the exposed field only, as it does on the
            C-arm: it falls off towards the collimator's edges instead of spreading evenly.
        projectors: projectors shared with the other problems of one registration (:class:`SharedProjectors`); by
            default the problem holds its own.
    """

    volume: Volume
    xray: torch.Tensor
    geometry: CArmGeometry
    initial_pose: torch.Tensor
    pivot_world: torch.Tensor
    mask: Volume | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    step_mm: float = 1.0
    mask_dilation_px: int = 5
    xray_weight: torch.Tensor | None = None
    scatter_to_primary: float = 0.0
    scatter_sigma_mm: float = 40.0
    exposed: torch.Tensor | None = None
    projectors: SharedProjectors | None = None
    _levels: dict = field(default_factory=dict, init=False, repr=False)
    #: a pose scores 0 when the spine projects off the detector, or when the X-ray's weight keeps less than this
    #: fraction of the spine's projected region (or fewer pixels than MIN_SEEN_PIXELS): with a handful of pixels
    #: left, any similarity reaches 1, and with none the whole image would be compared, matching other anatomy
    MIN_SEEN_FRACTION: ClassVar[float] = 0.2  # at the true pose of 40 realistic cases per CT, 3 CTs: at least 0.39
    MIN_SEEN_PIXELS: ClassVar[int] = 32
    #: fit the bone contrast with the scatter level before a method's last stage (measured in docs/benchmarks.md)
    FIT_BONE_CONTRAST: ClassVar[bool] = False
    #: tissue up to this HU is soft; the attenuation above it is what :meth:`estimate_bone_contrast` scales
    BONE_ABOVE_HU: ClassVar[float] = 100.0
    #: pixels this close to a ray the CT's extent cuts are left out while :meth:`hold_ct_edges` holds a pose:
    #: the reach of the widest similarity (a 9-pixel patch of Sobel derivatives) and one pixel more
    CT_EDGE_MARGIN_PX: ClassVar[int] = 6
    #: the edges are not left out where that would leave less than this fraction of the spine's region
    CT_EDGE_MIN_KEPT: ClassVar[float] = 0.5
    #: whether the stages of :func:`sopi.registration.register` that ask for it (``Stage.hold_ct_edges``) hold the CT's edges out
    LEAVE_OUT_CT_EDGES: ClassVar[bool] = True
    _held_theta: torch.Tensor | None = field(default=None, init=False, repr=False)
    _held_masks: dict = field(default_factory=dict, init=False, repr=False)
    _edge_theta: torch.Tensor | None = field(default=None, init=False, repr=False)
    _edge_weights: dict = field(default_factory=dict, init=False, repr=False)
    _window: tuple[int, _Level] | None = field(default=None, init=False, repr=False)
    #: a window (:meth:`hold_window`) reaches this many pixels beyond the box of the pixels that count where it is
    #: held: a 9-pixel patch of Sobel derivatives reaches 5, and the spine's image moves a few pixels in a polish
    WINDOW_MARGIN_PX: ClassVar[int] = 12
    #: no window is held where its box would cover more than this fraction of the level's detector (little to gain)
    WINDOW_MAX_FRACTION: ClassVar[float] = 0.8

    def __post_init__(self) -> None:
        if tuple(self.xray.shape) != self.geometry.shape:
            raise InputError(f"X-ray shape {tuple(self.xray.shape)} does not match the geometry {self.geometry.shape}")
        self.reference = NominalView(self.initial_pose.to(torch.float64).cpu(), self.pivot_world.to(torch.float64).cpu(), "initial")
        if self.projectors is None:
            self.projectors = SharedProjectors()

    def pose(self, theta: torch.Tensor) -> torch.Tensor:
        """``camera_from_world`` for ``theta`` relative to the initial pose."""
        return self.reference.pose(theta)

    def depth_direction(self, theta: torch.Tensor) -> torch.Tensor:
        """``(6,)`` change of theta that moves the CT 1 mm away from the source along the ray through the pivot
        at ``theta``: depth alone, so the pivot's image stays put and the spine's image only scales.

        Theta's translation moves every point by the same amount in camera coordinates
        (:meth:`sopi.geometry.NominalView.pose`), so the change is the pivot's unit camera direction."""
        pivot = self.pose(theta.reshape(6).to(torch.float64)) @ torch.cat([self.pivot_world.to(torch.float64).cpu(), torch.ones(1, dtype=torch.float64)])
        direction = torch.zeros(6, dtype=torch.float64)
        direction[3:] = pivot[:3] / pivot[:3].norm()
        return direction

    def attenuation_projector(self, geometry: CArmGeometry, step_mm: float, voxel_mm: float | None = None) -> Projector:
        """A projector of the attenuation alone (no spine channel) on ``geometry``, shared like the levels'.
        ``voxel_mm``: render a copy of the volume block-averaged to voxels of at most this size (mm) along each axis
        (:func:`sopi.render.working_factors`), held apart from the levels' (a coarse search samples a fine CT's slices
        sparsely: the blocks' means are what its coarse pixels average anyway, and smaller slices blend and sample
        faster); None, or voxels already that coarse: the volume itself."""
        factors = (1, 1, 1) if voxel_mm is None else working_factors(self.volume, voxel_mm)
        if all(factor == 1 for factor in factors):
            return self.projectors.projector("attenuation", self.volume, (self.volume.data,), geometry, step_mm, self.device)
        return self.projectors.projector(f"attenuation binned {factors}", lambda: binned_volume(self.volume, factors), (self.volume.data,),
                                         geometry, step_mm, self.device)

    def level_detector(self, factor: int) -> CArmGeometry:
        """The detector of :meth:`level` ``factor`` (each side divided by ``factor``, rounded up), without building the level."""
        return self.geometry.resized(-(-self.geometry.rows // factor), -(-self.geometry.cols // factor))

    def level(self, factor: int) -> _Level:
        """Projector and fixed image on the detector downsampled by ``factor`` (its held window, :meth:`hold_window`)."""
        if self._window is not None and self._window[0] == factor:
            return self._window[1]
        if factor not in self._levels:
            detector = self.level_detector(factor)
            rows, cols = detector.rows, detector.cols
            coarser = max(1.0, factor * 256 / max(256, self.geometry.rows, self.geometry.cols))  # than a 256-pixel detector's pixels
            projector, spine = self._projectors_on(detector, min(3.0, self.step_mm * coarser))
            fixed = resize_image(self.xray.to(torch.float32), (rows, cols)).to(self.device)
            exposed = None if self.exposed is None else resize_image(self.exposed.to(torch.float32), (rows, cols)).to(self.device)
            self._levels[factor] = _Level(projector, spine, fixed, self._level_weight(rows, cols), exposed)
        return self._levels[factor]

    def _projectors_on(self, detector: CArmGeometry, step: float) -> tuple[Projector, Projector | None]:
        """A level's ``(projector, spine projector)`` on ``detector``. Every level (and every problem sharing the
        projectors) renders through one projector of these voxels: the same volume, support box and blended
        slices; a small mask through its own, on the same planes."""
        if self.mask is None:
            return self.attenuation_projector(detector, step), None
        if self.projectors.separate_mask(self.volume, self.mask):
            projector = self.attenuation_projector(detector, step)
            return projector, self.projectors.projector(
                "spine", self.mask, (self.volume.data, self.mask.data), detector, step, self.device, planes_like=projector)
        channels = self.volume.with_data(torch.stack([self.volume.data, self.mask.data.to(self.volume.data)]))
        return self.projectors.projector("channels", channels, (self.volume.data, self.mask.data), detector, step, self.device), None

    def hold_window(self, theta: torch.Tensor | None, factor: int = 1) -> None:
        """Render level ``factor``, until called with None, only within the box of the pixels that count at
        ``theta`` (the spine's dilated projection where the X-ray's weight is positive) grown by
        :attr:`WINDOW_MARGIN_PX`, the scatter of the whole detector at ``theta`` held.

        A polish moves the pose by a millimetre or two, so what it compares stays inside the box; outside it every
        weight is zero and every ray rendered there is wasted (half or more of a full-resolution detector on the
        paper's spine views). Nothing is held without a mask, or where the box covers most of the detector.
        """
        self._window = None
        if theta is None or self.mask is None:
            return
        level = self.level(factor)
        height, width = level.fixed.shape
        with torch.no_grad():
            rendered, projected = self._render(level, theta.detach().reshape(1, 6))
            counted = dilate(projected > 0, self.mask_dilation_px)[0]
            if level.weight is not None:
                counted = counted & (level.weight > 0)
            if not bool(counted.any()):
                return
            rows, cols = torch.nonzero(counted, as_tuple=True)
            margin = self.WINDOW_MARGIN_PX
            top, left = max(0, int(rows.min()) - margin), max(0, int(cols.min()) - margin)
            bottom, right = min(height, int(rows.max()) + margin + 1), min(width, int(cols.max()) + margin + 1)
            if (bottom - top) * (right - left) > self.WINDOW_MAX_FRACTION * height * width:
                return
            geometry = level.projector.geometry
            held = None
            if self.scatter_to_primary > 0:
                sigma_px = self.scatter_sigma_mm / geometry.pixel_spacing_mm[0]
                held = scatter_field(rendered, self.scatter_to_primary, sigma_px, level.exposed)[:, top:bottom, left:right]
        projector, spine = self._projectors_on(geometry.padded(-left, -top, right - width, bottom - height), level.projector.step_mm)

        def crop(image: torch.Tensor | None) -> torch.Tensor | None:
            return None if image is None else image[top:bottom, left:right]

        self._window = (factor, _Level(projector, spine, crop(level.fixed), crop(level.weight), crop(level.exposed), held))

    def _level_weight(self, rows: int, cols: int) -> torch.Tensor | None:
        if self.xray_weight is None:  # a coarse pixel counts only if all its fine pixels do
            return None
        return -F.adaptive_max_pool2d(-self.xray_weight.to(torch.float32)[None, None], (rows, cols))[0, 0].to(self.device)

    def restrict_weight(self, extra: torch.Tensor) -> None:
        """Multiply the X-ray's weight by ``extra`` (any ``(rows, cols)`` size, resampled nearest) on every level."""
        full = F.interpolate(extra.to(torch.float32)[None, None], size=self.geometry.shape, mode="nearest")[0, 0].cpu()
        self.xray_weight = full if self.xray_weight is None else self.xray_weight.to(torch.float32) * full
        for level in self._levels.values():
            level.weight = self._level_weight(*level.fixed.shape)

    def unexplained_edges(self, theta: torch.Tensor, factor: int, strength: float = 3.0, reach_px: float = 3.0) -> torch.Tensor:
        """``(rows, cols)`` bool at level ``factor``: strong X-ray edges with no DRR edge nearby at ``theta``.

        Gradient magnitudes are divided by their RMS over the weighted pixels; an X-ray edge
        above ``strength`` where the DRR's edge magnitude, spread by a Gaussian of
        ``reach_px``, stays below a sixth of it is something the CT cannot explain (an
        instrument, a blade edge) once the pose is roughly right.
        """
        from ..similarity import image_gradients

        level = self.level(factor)
        with torch.no_grad():
            rendered = self._read_out(level, self._render(level, theta)[0])
            weight = torch.ones_like(level.fixed) if level.weight is None else level.weight
            magnitudes = []
            for image in (level.fixed[None], rendered):
                gx, gy = image_gradients(image.to(torch.float32))
                magnitude = torch.sqrt(gx.square() + gy.square())[0]
                rms = torch.sqrt((weight * magnitude.square()).sum() / weight.sum().clamp(min=1e-6)).clamp(min=1e-12)
                magnitudes.append(magnitude / rms)
            spread = gaussian_blur(magnitudes[1], reach_px)
            return (magnitudes[0] > strength) & (spread < magnitudes[0] / 6.0) & (weight > 0)

    def adapt_to_xray(self, theta: torch.Tensor, factor: int, measure: str) -> dict:
        """Once ``theta`` is roughly right: fit the scatter level (:meth:`estimate_scatter`) and stop
        weighting the X-ray's edges no DRR explains (:meth:`unexplained_edges`, dilated by 2 pixels).
        Returns what was found, for the result's ``xray_preparation`` record. (The bone contrast is
        fitted later, closer to the answer: :meth:`estimate_bone_contrast`.)"""
        scatter = self.estimate_scatter(theta, factor, measure)
        unexplained = self.unexplained_edges(theta, factor)
        self.restrict_weight(~dilate(unexplained, 2))
        return {"scatter_to_primary_estimate": scatter, "unexplained_edge_fraction": round(float(unexplained.float().mean()), 4)}

    def estimate_bone_contrast(
        self, theta: torch.Tensor, factor: int, measure: str,
        candidates: tuple[float, ...] = (0.6, 0.75, 0.9, 1.0, 1.15, 1.3, 1.5, 1.75),
        scatter_candidates: tuple[float, ...] = SCATTER_CANDIDATES,
    ) -> float:
        """Fit how strongly bone stands out from soft tissue, with the scatter level, and render with both.

        The effective energy of a C-arm's beam is unknown: the higher it is, the less bone's
        attenuation exceeds water's, relative to the HU-based DRR. The attenuation above that of
        :data:`BONE_ABOVE_HU` tissue is scaled by each candidate (1: the CT as converted) and read out
        with each scatter level; the pair whose DRR at ``theta`` matches best is kept (two renders).
        Sets :attr:`volume` (and every level) and :attr:`scatter_to_primary`; returns the contrast.
        """
        base = self.volume.data
        soft_ceiling = MU_WATER_PER_MM * (1.0 + self.BONE_ABOVE_HU / 1000.0)
        excess = (base - soft_ceiling).clamp_min(0.0)
        level = self.level(factor)
        theta = theta.reshape(1, 6).to(torch.float64)
        with torch.no_grad():
            rendered, projected_mask = self._render(level, theta)
            geometry = level.projector.geometry
            extra = Projector(self.volume.with_data(excess), geometry, step_mm=level.projector.step_mm).to(self.device)
            excess_drr = extra(self.pose(theta).to(self.device))
            best = {contrast: self._best_scatter(level, rendered + (contrast - 1.0) * excess_drr, projected_mask, measure, scatter_candidates)
                    for contrast in candidates}
        contrast = max(best, key=lambda candidate: best[candidate][1])  # the first of equals
        self.scatter_to_primary = best[contrast][0]
        if contrast != 1.0:
            self.volume = self.volume.with_data(base + (contrast - 1.0) * excess)
            self._levels, self._held_masks = {}, {}  # every level's projector held the old voxels
        return contrast

    def spine_coverage(self, theta: torch.Tensor, factor: int) -> torch.Tensor:
        """``(B,)`` fraction of the detector's pixels on ``level(factor)`` that the spine's projected region (the
        mask's projection, dilated as for weighting) covers at each of ``(B, 6)`` theta; NaN without a mask.
        Rendered at theta itself, never at a held pose."""
        theta = theta.reshape(-1, 6).to(torch.float64)
        if self.mask is None:
            return torch.full((len(theta),), float("nan"), dtype=torch.float64)
        level = self.level(factor)
        with torch.no_grad():
            projected = self._spine_projection(level, self.pose(theta).to(self.device))
        region = dilate(projected > 0, self.mask_dilation_px)
        return region.to(torch.float64).mean(dim=(-2, -1)).cpu()

    def similarity(self, theta: torch.Tensor, factor: int, measure: str) -> torch.Tensor:
        """``(B,)`` similarities (larger is better) for ``(B, 6)`` theta; differentiable in theta."""
        level = self.level(factor)
        return self._compare(level, *self._render(level, theta), measure)

    def estimate_scatter(self, theta: torch.Tensor, factor: int, measure: str, candidates: tuple[float, ...] = SCATTER_CANDIDATES) -> float:
        """Set and return the scatter-to-primary ratio whose scatter-aware DRR at ``theta`` matches best
        (one render, read out at every candidate)."""
        level = self.level(factor)
        with torch.no_grad():
            rendered, projected_mask = self._render(level, theta.reshape(1, 6))
            return self._best_scatter(level, rendered, projected_mask, measure, candidates)[0]

    def _best_scatter(
        self, level: _Level, rendered: torch.Tensor, projected_mask: torch.Tensor | None, measure: str, candidates: tuple[float, ...]
    ) -> tuple[float, float]:
        """``(scatter level, similarity)`` of the candidate whose read-out of the ``(1, rows, cols)`` DRR
        ``rendered`` matches best (the first of equals); :attr:`scatter_to_primary` is left set to it."""
        scores = []
        for candidate in candidates:
            self.scatter_to_primary = candidate
            scores.append(float(self._compare(level, rendered, projected_mask, measure)[0]))
        best = max(range(len(candidates)), key=scores.__getitem__)
        self.scatter_to_primary = candidates[best]
        return candidates[best], scores[best]

    def hold_region(self, theta: torch.Tensor | None) -> None:
        """Weight every similarity by the spine's projection at ``theta`` rather than at each candidate's
        own pose, until called with None.

        The spine region (the projected mask, dilated) is binary, so where it is recomputed for every
        candidate, pixels enter and leave it as the pose moves: along depth the similarity then
        jumps by more than depth changes it (0.01-0.06 between poses 1 mm apart on realistic
        X-rays, against a depth curvature of 0.0002-0.0007 per mm^2). Held at one pose, the similarity
        is smooth in the pose and every value of a stage is computed on the same pixels.
        """
        self._held_theta = None if theta is None else theta.detach().reshape(1, 6).to(torch.float64).cpu().clone()
        self._held_masks = {}

    def hold_ct_edges(self, theta: torch.Tensor | None) -> None:
        """Leave out of every similarity, until called with None, the pixels within :attr:`CT_EDGE_MARGIN_PX` of
        a ray that the CT's own extent cuts at ``theta`` (:meth:`sopi.drr.Projector.truncated_rays`).

        The body goes on beyond the first and last slices of every CT, and beyond every face of a crop:
        the DRR steps or ramps there where the X-ray shows more anatomy (or, once prepared, a smooth
        fill of what lies outside the field). Patch similarities of the gradients see that edge in every
        window that reaches it, and as the pose moves along depth the edge scales with it: about the true
        poses of a lumbar crop's clean DRRs (median of 10) the patch NCC of gradients peaked 0.61 mm too
        deep with the edge and 0.25 mm with the cut rays left out, gradient correlation 0.38 and 0.04 mm
        (docs/benchmarks.md, "The CT's own edges, left out"). Held at one pose, like :meth:`hold_region`, so that pixels do not enter
        and leave the comparison as the pose moves. Where the cut rays and their margin would keep less
        than :attr:`CT_EDGE_MIN_KEPT` of the spine's region (a crop barely larger than the spine), the
        edges stay in.
        """
        self._edge_theta = None if theta is None else theta.detach().reshape(1, 6).to(torch.float64).cpu().clone()
        self._edge_weights = {}

    def _ct_edge_weight(self, level: _Level) -> torch.Tensor | None:
        """``(rows, cols)`` weight of the held pose's uncut pixels on ``level`` (None: keep every pixel)."""
        key = id(level)
        if key not in self._edge_weights:
            pose = self.pose(self._edge_theta).to(self.device)
            with torch.no_grad():
                cut = level.projector.truncated_rays(pose, CT_TISSUE_PER_MM)[0]
                kept = ~dilate(cut, self.CT_EDGE_MARGIN_PX)
                weight = kept.to(level.fixed.dtype)
                if self.mask is not None:
                    region = dilate(self._spine_projection(level, pose)[0] > 0, self.mask_dilation_px)
                    if float((region & kept).sum()) < self.CT_EDGE_MIN_KEPT * float(region.sum()):
                        weight = None
                elif float(weight.mean()) < self.CT_EDGE_MIN_KEPT:
                    weight = None
            self._edge_weights[key] = weight
        return self._edge_weights[key]

    def _render(self, level: _Level, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, rows, cols)`` DRRs of ``(B, 6)`` theta on ``level``, and the projected mask (None without one;
        at the held pose while :meth:`hold_region` holds one)."""
        poses = self.pose(theta.reshape(-1, 6).to(torch.float64)).to(self.device)
        return self.split_rendered(level, level.projector(poses), poses)

    def split_rendered(self, level: _Level, rendered: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(attenuation DRRs, projected masks)``, each ``(B, rows, cols)``, of ``level.projector``'s output at
        ``camera_from_world`` ``poses``: the mask's projection from its second channel or its own projector (no
        gradient: only where it is positive counts), the held pose's while :meth:`hold_region` holds one (nothing
        rendered for it then); None without a mask."""
        if self.mask is None:
            return rendered, None
        drr, projected = (rendered, None) if level.spine is not None else (rendered[:, 0], rendered[:, 1])
        if self._held_theta is not None:
            key = id(level)
            if key not in self._held_masks:
                with torch.no_grad():
                    self._held_masks[key] = self._spine_projection(level, self.pose(self._held_theta).to(self.device))[0]
            projected = self._held_masks[key].expand(len(poses), -1, -1)
        elif projected is None:
            with torch.no_grad():
                projected = self._spine_projection(level, poses)
        return drr, projected

    def _spine_projection(self, level: _Level, poses: torch.Tensor) -> torch.Tensor:
        """``(B, rows, cols)``: the mask's projection on ``level`` (a problem with a mask)."""
        return level.spine(poses) if level.spine is not None else level.projector(poses)[:, 1]

    def _read_out(self, level: _Level, rendered: torch.Tensor) -> torch.Tensor:
        """The DRRs as the detector reads them: with scatter when :attr:`scatter_to_primary` is positive (a window's
        held scatter while :meth:`hold_window` holds one)."""
        if level.scatter is not None:
            return read_out(rendered, level.scatter)
        if self.scatter_to_primary <= 0:
            return rendered
        return with_scatter(rendered, self.scatter_to_primary, self.scatter_sigma_mm / level.projector.geometry.pixel_spacing_mm[0], level.exposed)

    def _compare(self, level: _Level, rendered: torch.Tensor, projected_mask: torch.Tensor | None, measure: str) -> torch.Tensor:
        """Similarities of the level's X-ray and the read-out DRRs, weighted by the spine and the X-ray's weight."""
        rendered = self._read_out(level, rendered)
        weights, seen = None, None
        if projected_mask is not None:
            weights = dilate(projected_mask > 0, self.mask_dilation_px).to(rendered.dtype)
            region = weights.sum(dim=(-2, -1))
            seen = region > 0  # a spine projected off the detector explains nothing of a spine X-ray
            weights = torch.where(seen[:, None, None], weights, torch.ones_like(weights))  # finite scores, zeroed below
            if level.weight is not None:  # how much of the spine's region the X-ray shows
                overlap = (weights * (level.weight > 0)).sum(dim=(-2, -1))
                seen = seen & (overlap >= self.MIN_SEEN_FRACTION * region) & (overlap >= self.MIN_SEEN_PIXELS)
        if level.weight is not None:
            weights = level.weight.expand_as(rendered) if weights is None else weights * level.weight
        edges = None if self._edge_theta is None else self._ct_edge_weight(level)
        if edges is not None:
            weights = edges.expand_as(rendered) if weights is None else weights * edges
        fixed = level.fixed.expand_as(rendered)
        scores = SIMILARITIES[measure](fixed, rendered, weights)
        if seen is not None:  # a pose that moves the spine out of what the X-ray shows is no evidence, however well the rest matches
            scores = torch.where(seen, scores, torch.zeros_like(scores))
        return scores.to(torch.float64).cpu()
