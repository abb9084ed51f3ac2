"""Where the spine shows on a detector, for the global search: the mask's voxels projected (no ray marched), the
fraction of the spine each X-ray-sized window of a search detector shows, and whether a hypothesis keeps the spine in
view (:mod:`sopi.registration.global_search`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..filters import dilate
from ..geometry import CArmGeometry, project_points
from .confidence import MIN_SPINE_IN_VIEW, MIN_START_COVERAGE, assessment_factor, shows_spine
from .problem import PoseProblem

__all__ = ["SpineFootprint", "SpineInView", "SpineMaps"]


class SpineFootprint:
    """The pixels the spine projects onto, without marching a ray: the mask's voxels (at most :attr:`SPACING_MM`
    apart) projected onto a detector and dilated as :meth:`PoseProblem.spine_coverage` dilates the rendered
    projection (which closes the gaps between them). ``points`` is None without a mask."""

    SPACING_MM = 3.0

    def __init__(self, problem: PoseProblem):
        self.dilation_px, self.points = problem.mask_dilation_px, None
        if problem.mask is not None:
            mask = problem.mask
            strides = [max(1, math.floor(self.SPACING_MM / float(spacing))) for spacing in mask.spacing.flip(-1)]  # (k, j, i)
            index = torch.nonzero(mask.data[:: strides[0], :: strides[1], :: strides[2]] != 0) * torch.tensor(strides)
            self.points = index.flip(-1).to(torch.float64) @ mask.world_from_index[:3, :3].T + mask.world_from_index[:3, 3]

    def region(self, poses: torch.Tensor, detector: CArmGeometry) -> torch.Tensor:
        """Bool ``(B, rows, cols)``: the spine's dilated footprint on ``detector`` at each ``camera_from_world``."""
        rows, cols = detector.rows, detector.cols
        footprint = torch.zeros(len(poses), rows * cols, dtype=torch.bool)
        for index, pose in enumerate(poses.cpu().to(torch.float64)):
            pixels = project_points(pose, detector, self.points).round().long()
            inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < cols) & (pixels[:, 1] >= 0) & (pixels[:, 1] < rows)
            footprint[index, pixels[inside, 1] * cols + pixels[inside, 0]] = True
        return dilate(footprint.reshape(-1, rows, cols), self.dilation_px)


class SpineMaps:
    """Where on the search detector a match would show the spine: the FFT search keeps only matches whose window
    holds at least :data:`MIN_SPINE_IN_VIEW` of the spine region the start's window holds (the spine's footprint,
    :class:`SpineFootprint`, averaged over an X-ray's window). Nothing is left out without a mask or where the
    start's window shows too little of the spine to compare with."""

    def __init__(self, problem: PoseProblem, search: CArmGeometry, small: CArmGeometry):
        self.search, self.threshold = search, None
        self.footprint = SpineFootprint(problem)
        if self.footprint.points is None:
            return
        self.window = (small.rows, small.cols)
        left = round(search.principal_point_px[0] - small.principal_point_px[0])
        top = round(search.principal_point_px[1] - small.principal_point_px[1])
        start = float(self._coverage(problem.pose(torch.zeros(1, 6, dtype=torch.float64)))[0, top, left])
        if start >= MIN_START_COVERAGE:
            self.threshold = MIN_SPINE_IN_VIEW * start

    def _coverage(self, poses: torch.Tensor) -> torch.Tensor:
        """``(B, H - h + 1, W - w + 1)``: the fraction of each X-ray-sized window the spine region covers."""
        region = self.footprint.region(poses, self.search).to(torch.float64)
        height, width = self.window  # window sums from the summed-area table: O(pixels), whatever the window
        table = F.pad(region.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
        sums = table[:, height:, width:] - table[:, :-height, width:] - table[:, height:, :-width] + table[:, :-height, :-width]
        return (sums / (height * width)).to(torch.float32)

    def in_view_only(self, maps: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """``maps`` ``(B, K, ., .)`` (the B poses' match scores) with -inf where the window's spine is out of view."""
        if self.threshold is None:
            return maps
        shown = (self._coverage(poses) >= self.threshold).to(maps.device)
        return maps.masked_fill(~shown[:, None, : maps.shape[-2], : maps.shape[-1]], -torch.inf)


class SpineInView:
    """``in_view(theta)``: whether the spine's footprint (:class:`SpineFootprint`) at ``theta`` covers at least
    :data:`MIN_SPINE_IN_VIEW` of what it covers at the start, on the detector level of the result's own check
    (:func:`sopi.registration.confidence.spine_in_view`).

    Every X-ray this tool registers is aimed at the spine; a match that leaves it out of view has matched other
    anatomy (the hip, a table's edge). At the true poses of 1,920 benchmark cases the ratio was at least 0.5
    (:mod:`sopi.registration.confidence`). Always True without a mask or where the start shows too little of the
    spine to compare with."""

    def __init__(self, problem: PoseProblem, footprint: SpineFootprint):
        self.problem, self.footprint, self.start = problem, footprint, None
        self.detector = problem.level_detector(assessment_factor(problem))
        if footprint.points is not None:
            start = self._coverage(torch.zeros(6, dtype=torch.float64))
            self.start = start if start >= MIN_START_COVERAGE else None

    def _coverage(self, theta: torch.Tensor) -> float:
        return float(self.footprint.region(self.problem.pose(theta.reshape(1, 6)), self.detector).to(torch.float64).mean())

    def __call__(self, theta: torch.Tensor) -> bool:
        return self.start is None or shows_spine(self._coverage(theta) / self.start)
