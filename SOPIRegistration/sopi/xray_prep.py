"""Preparing an intra-operative X-ray for registration: what the CT cannot explain is masked.

:func:`prepare_xray` takes a bone-bright image (``(rows, cols)``, larger = more attenuation)
and finds the pixels that no DRR of the pre-operative CT can reproduce:

* **outside the field**: pixels outside an image intensifier's circular field or under the
  collimator blades. Rays are cast from the image centre. Along each ray, the field ends
  where the image steps up onto a plateau that stays brighter than almost all anatomy
  (95th percentile of the central disc plus a margin) out to the border. Such a plateau is
  a blade, which passes 0.5-5 % of the beam. Anatomy edges are much weaker steps, and the
  body's edge towards air steps down. The same test finds blades and circular fields at
  any angle, as well as a constant fill outside the field. Straight blade edges whose plateau
  scatter has dimmed are found as lines (:mod:`sopi.field_edges`).
* **saturated**: pixels at the image's minimum or maximum value when many share it
  (clipped detector values, a constant fill);
* **metal**: instruments absent from the CT. These are thin bright structures that stand out
  of a grey-level opening (top-hat) far beyond the image's own texture; with
  ``STRAIGHT_INSTRUMENTS`` (off by default), straight bright bands whose two sides step up and
  back down by the same height along a good length (K-wires, screws and retractor blades under
  scatter and noise, :mod:`sopi.instrument_edges`): of a band wider than 4 pixels, only its
  sides, since the anatomy shows through a plate of constant thickness; and very
  bright pixels far above the anatomy's range. The registration masks those bands' sides
  only for a second look at a flagged result (:func:`without_straight_instruments`);
* a DICOM shutter's ``field_mask`` (from the reader) is honoured as it is.

The result is a weight image (1 = use, 0 = ignore), eroded by two pixels so that
gradient filters never straddle a masked edge. It also holds the image with the masked
pixels filled from their neighbours (normalised convolution), for the networks' inputs.
:func:`detect_polarity` decides whether an image shows bone bright or dark by comparing
its coarse intensity pattern with a DRR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .field_edges import _CENTRAL_RADIUS, hough_blade_edges, step_blade_edges
from .filters import dilate, gaussian_blur
from .instrument_edges import straight_instruments

__all__ = ["PreparedXRay", "apply_reading", "coarse_correlation", "detect_polarity", "fill_masked", "prepare_xray", "readings"]

_PLATEAU_FRACTION = 0.9  # share of samples beyond a field edge that must stay on the plateau
#: the field edge is looked for only where at least this share of the central disc is not already known (saturated,
#: outside a shutter): blades are told from anatomy by being brighter than the centre's, which needs anatomy there.
#: A small CT crop seen from the side at a wide start fills 10 % of it, with air around (a clean DRR of the TPTBox
#: crop, 2 of 40 lateral views); 360 simulated AP X-rays of three CTs, clean and realistic, and the other 78 lateral
#: views kept at least 43 % (docs/benchmarks.md, 2026-12-03).
_MIN_CENTRAL_ANATOMY = 0.25
_RAYS = 360
_WORKING_PX = 256  # larger images are analysed binned to about this size, their masks upsampled
#: straight bright bands (K-wires, screws, retractor blades: :mod:`sopi.instrument_edges`) join the metal mask
#: (their sides only, for bands wider than 4 px). Off by default: it finds most instruments the top-hat misses, but
#: on 270 realistic registrations of three CTs (docs/benchmarks.md, 2026-12-04, "Straight instruments") wide
#: starts ended under 10 mm in 52 of 60 cases against 55 without it, paper starts equal (114 of 120). The
#: registration uses them instead for a second look at flagged results (:func:`without_straight_instruments`)
STRAIGHT_INSTRUMENTS = False
_TOPHAT_RADIUS = 0.035  # of the image width: wider than K-wires and screws, narrower than vertebrae
_METAL_ROBUST_Z = 8.0  # top-hat outliers, in robust standard deviations of the top-hat
_METAL_RANGE_FRACTION = 0.15  # ... and at least this share of the anatomy's 2-98 % range


@dataclass
class PreparedXRay:
    """The outcome of :func:`prepare_xray` (all ``(rows, cols)``)."""

    image: torch.Tensor  # bone bright, masked pixels filled from their neighbours
    weight: torch.Tensor  # float32 in {0, 1}: 1 where the similarity may look
    outside_field: torch.Tensor  # bool
    saturated: torch.Tensor  # bool
    metal: torch.Tensor  # bool

    def summary(self) -> dict:
        """Fractions of the detector in each mask (for the result JSON)."""
        total = self.weight.numel()
        return {
            "used_fraction": round(float(self.weight.sum()) / total, 4),
            "outside_field_fraction": round(float(self.outside_field.sum()) / total, 4),
            "saturated_fraction": round(float(self.saturated.sum()) / total, 4),
            "metal_fraction": round(float(self.metal.sum()) / total, 4),
        }


def prepare_xray(
    image: torch.Tensor,
    field_mask: torch.Tensor | None = None,
    *,
    detect_field: bool = True,
    detect_metal: bool = True,
    erode_px: int = 2,
) -> PreparedXRay:
    """Masks and weight of a bone-bright ``(rows, cols)`` X-ray (see the module docstring).

    Args:
        image: the X-ray, bone bright (as :func:`sopi.io.read_xray` returns it).
        field_mask: optional bool ``(rows, cols)``, True where the detector was exposed
            (a DICOM shutter); combined with the detected field.
        detect_field, detect_metal: switch the detections off (for ablations).
        erode_px: the weight is eroded by this many pixels of the image binned to about 256 pixels
            (the analysis' size): ``erode_px`` times the binning factor of larger images, so the
            same width of the detector is dropped at any size.
    """
    values, small, scale = _analysis_images(image)
    rows, cols = values.shape
    saturated = _saturated(values)
    outside = torch.zeros_like(saturated)
    if field_mask is not None:
        outside |= ~field_mask.to(torch.bool).cpu()
    known = outside | saturated
    if detect_field:
        known_small = _any_in_block(known, scale)
        found = _outside_field(small, known_small)
        found |= hough_blade_edges(small, found)
        found |= step_blade_edges(small, found)
        outside |= _full_size(found, (rows, cols))
    invalid = outside | saturated
    metal = torch.zeros_like(invalid)
    if detect_metal:
        metal = _full_size(_metal(small, _any_in_block(invalid, scale)), (rows, cols)) & ~invalid
    usable = ~(invalid | metal)
    if float(usable.sum()) < 0.05 * usable.numel():  # nothing sensible left: keep every pixel
        usable = torch.ones_like(usable)
    weight = _erode(usable.to(torch.float32), erode_px * scale)
    filled = fill_masked(values, usable).to(torch.float32)
    return PreparedXRay(filled, weight, outside, saturated, metal)


def fill_masked(image: torch.Tensor, usable: torch.Tensor) -> torch.Tensor:
    """``image`` with pixels where ``usable`` is False replaced by a smooth fill from usable neighbours.

    Normalised convolution on a pyramid: a hole near usable pixels takes their local
    weighted mean; a larger hole takes the (recursively filled) coarser level's value.
    """
    values = image.to(torch.float32)
    keep = usable.to(torch.bool)
    if bool(keep.all()) or not bool(keep.any()):
        return values.clone()
    return torch.where(keep, values, _fill_level(values, keep.to(torch.float32)))


def _fill_level(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A smooth estimate everywhere, from the ``keep``-weighted ``values`` (coarse-to-fine)."""
    numerator, denominator = gaussian_blur(values * keep, 1.5), gaussian_blur(keep, 1.5)
    local = numerator / denominator.clamp(min=1e-12)
    if min(values.shape) <= 4:
        fallback = (values * keep).sum() / keep.sum().clamp(min=1e-12)
        return torch.where(denominator > 0.05, local, fallback)
    pooled_keep = F.avg_pool2d(keep[None, None], 2, ceil_mode=True)[0, 0]
    pooled = F.avg_pool2d((values * keep)[None, None], 2, ceil_mode=True)[0, 0] / pooled_keep.clamp(min=1e-12)
    coarse = _fill_level(pooled, (pooled_keep > 0).to(torch.float32))
    upsampled = F.interpolate(coarse[None, None], size=values.shape, mode="bilinear", align_corners=False)[0, 0]
    blend = (denominator / 0.3).clamp(0, 1)  # local estimate where enough usable pixels are near
    return blend * local + (1 - blend) * upsampled


def coarse_correlation(image: torch.Tensor, reference: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """Weighted correlation of two images low-passed at 1/12 of ``image``'s width (their coarse pattern).

    A ``reference`` larger than ``image`` (a DRR on an extended detector) is searched: the
    result is the best correlation over every placement of ``image`` inside it, so the
    judgement does not depend on knowing where the X-ray was taken.
    """
    from .template_matching import masked_ncc_maps

    values = image.detach().to(torch.float32).cpu()
    weights = torch.ones_like(values) if weight is None else weight.to(torch.float32).cpu()
    sigma = max(values.shape) / 12
    smooth, smooth_reference = gaussian_blur(values, sigma), gaussian_blur(reference.detach().to(torch.float32).cpu(), sigma)
    if smooth_reference.shape == smooth.shape:
        return _weighted_correlation(smooth, smooth_reference, weights)
    # windows where the DRR is nearly flat (beyond the CT) would divide round-off by round-off: scores
    # above 1 that made clean DRRs of a cropped CT read as bone-dark
    maps = masked_ncc_maps(smooth_reference[None, None], smooth[None, None], (weights > 0.5)[None], min_fraction=0.05)
    return min(1.0, float(maps.max()))


def detect_polarity(image: torch.Tensor, drr: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[str, dict[str, float]]:
    """Which reading of ``image`` matches a DRR: ``(best, {reading: correlation})``.

    Readings: ``"bone-bright"`` (as it is), ``"bone-dark"`` (``max - image``) and, for a
    positive image, ``"intensity"`` (``-log(image / max)``). Each is compared with ``drr``
    by :func:`coarse_correlation`: at that scale the body's thickness dominates, so small
    misalignments do not matter; a ``drr`` on a larger detector than ``image`` is searched
    over every placement (far starts).
    """
    scores = {name: coarse_correlation(candidate, drr, weight) for name, candidate in readings(image).items()}
    return max(scores, key=scores.get), scores


#: An image with zero pixels (outside an image intensifier's field, black in a display image) is read as intensities
#: too when at least this fraction of it is positive; its zeros take its smallest positive value.
INTENSITY_POSITIVE_FRACTION = 0.5


def readings(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """``image`` as each polarity would have it shown bone bright: ``"bone-bright"`` (as it is), ``"bone-dark"``
    (``max - image``) and, for a positive image (or one positive but for some zeros, :func:`_zeros_filled_intensities`),
    ``"intensity"`` (``-log(image / max)``), each as :func:`apply_reading` gives it (the logarithm clamped at a millionth of
    the maximum)."""
    values = image.detach().to(torch.float32).cpu()
    names = ["bone-bright", "bone-dark"]
    if float(values.min()) > 0 or _zeros_filled_intensities(values) is not None:
        names.append("intensity")
    return {name: apply_reading(values, name) for name in names}  # each exactly as the registration would read it


def apply_reading(image: torch.Tensor, reading: str) -> torch.Tensor:
    """``image`` re-read as :func:`detect_polarity` names it (bone bright afterwards)."""
    values = image.to(torch.float32)
    if reading == "bone-dark":
        return values.max() - values
    if reading == "intensity":
        filled = _zeros_filled_intensities(values) if float(values.min()) <= 0 else None
        return filled if filled is not None else -torch.log(values.clamp(min=1e-6 * float(values.max())) / values.max())
    return values


def _zeros_filled_intensities(values: torch.Tensor) -> torch.Tensor | None:
    """``-log(values / max)`` of a non-negative image whose positive pixels make up at least
    :data:`INTENSITY_POSITIVE_FRACTION` of it, its zeros at its smallest positive value (a constant the field and
    saturation masks take out, instead of an edge far beyond any attenuation); None for any other image. A display
    image is transmitted counts to a gamma: its logarithm is the line integral times the gamma."""
    top = float(values.max())
    positive = values > 0
    if top <= 0 or float(values.min()) < 0 or float(positive.float().mean()) < INTENSITY_POSITIVE_FRACTION:
        return None
    return -torch.log(values.clamp(min=float(values[positive].min())) / top)


# --------------------------------------------------------------------------- detections


def _saturated(values: torch.Tensor) -> torch.Tensor:
    """Pixels at the image's extreme values when at least 0.2 % of the image shares them."""
    result = torch.zeros_like(values, dtype=torch.bool)
    span = float(values.max() - values.min())
    if span <= 0:
        return result
    for extreme in (float(values.min()), float(values.max())):
        at = (values - extreme).abs() <= 1e-6 * span
        if float(at.sum()) >= 0.002 * values.numel():
            result |= at
    return dilate(result, 1)


def _outside_field(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Pixels beyond a field edge found along rays from the image centre (module docstring)."""
    rows, cols = values.shape
    smooth = gaussian_blur(values, 1.0)
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32), indexing="ij")
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    radius = torch.sqrt((row - cy).square() + (col - cx).square())
    disc = radius <= _CENTRAL_RADIUS * min(rows, cols)
    central = disc & ~known
    if int(central.sum()) < max(20.0, _MIN_CENTRAL_ANATOMY * float(disc.sum())):  # no anatomy in the centre to compare with
        return known.clone()
    anatomy = smooth[central]
    low, high = (float(v) for v in torch.quantile(anatomy, torch.tensor([0.05, 0.95], dtype=torch.float32)))
    level = high + 0.25 * (high - low)  # blades sit above almost all anatomy
    # Sample every ray from the centre to the border at one-pixel steps.
    reach = int(math.ceil(math.hypot(rows, cols) / 2)) + 1
    angles = torch.arange(_RAYS, dtype=torch.float32) * (2 * math.pi / _RAYS)
    steps = torch.arange(reach, dtype=torch.float32)
    xs = cx + steps[None] * torch.cos(angles)[:, None]
    ys = cy + steps[None] * torch.sin(angles)[:, None]
    on_image = ((xs >= -0.5) & (xs <= cols - 0.5) & (ys >= -0.5) & (ys <= rows - 0.5)).cumprod(dim=1).to(torch.bool)
    grid = torch.stack([(2 * xs + 1) / cols - 1, (2 * ys + 1) / rows - 1], dim=-1)[None]
    profile = F.grid_sample(smooth[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
    flagged = F.grid_sample(known[None, None].to(torch.float32), grid, mode="nearest", padding_mode="border", align_corners=False)[0, 0] > 0.5
    high_or_known = (profile > level) | flagged
    high_or_known &= on_image
    counted = on_image.to(torch.float32)
    # from each sample to the border: how many samples, and how many of them are on the plateau
    remaining = counted.flip(1).cumsum(1).flip(1)
    remaining_high = high_or_known.to(torch.float32).flip(1).cumsum(1).flip(1)
    plateau = high_or_known & (remaining >= 3) & (remaining_high >= _PLATEAU_FRACTION * remaining)
    first = torch.where(plateau.any(dim=1), plateau.to(torch.int64).argmax(dim=1), torch.full((_RAYS,), reach))
    edges = first.to(torch.float32)
    edges = _median_filter_circular(edges, 5)
    pixel_angle = torch.atan2(row - cy, col - cx) % (2 * math.pi)
    position = pixel_angle / (2 * math.pi / _RAYS)
    lower = position.floor().long() % _RAYS
    upper = (lower + 1) % _RAYS
    fraction = position - position.floor()
    edge_at_pixel = edges[lower] * (1 - fraction) + edges[upper] * fraction
    outside = radius >= edge_at_pixel - 1.0
    return (outside & (edge_at_pixel < reach - 1)) | known


def without_straight_instruments(image: torch.Tensor, weight: torch.Tensor, erode_px: int = 2) -> torch.Tensor | None:
    """``weight`` with the sides of straight bright bands dropped too (wires, screws and retractor blades:
    :func:`sopi.instrument_edges.straight_instruments` with ``interiors=False``), or None when it finds none.

    ``image`` is a prepared X-ray (bone bright, its masked pixels filled) and ``weight`` its weight, both
    ``(rows, cols)``, as :func:`prepare_xray` returns them; neither is modified. The registration uses it
    for a second look at an X-ray whose first result was flagged (``sopi.registration.passes.run_passes``).
    """
    values, small, scale = _analysis_images(image)
    rows, cols = values.shape
    unusable = _any_in_block(weight.detach().cpu() <= 0, scale)
    if int((~unusable).sum()) < 100:
        return None
    bands = dilate(straight_instruments(small, unusable, interiors=False), 2) & ~unusable
    if not bands.any():
        return None
    kept = _erode((~_full_size(bands, (rows, cols))).to(torch.float32), erode_px * scale)
    return weight * kept.to(device=weight.device, dtype=weight.dtype)


def _metal(values: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
    """Thin bright structures far above the image's texture (top-hat outliers), straight bright bands
    (:func:`sopi.instrument_edges.straight_instruments`, with ``STRAIGHT_INSTRUMENTS``) and extreme brights."""
    rows, cols = values.shape
    valid = ~invalid
    if int(valid.sum()) < 100:
        return torch.zeros_like(invalid)
    filled = fill_masked(values, valid)
    radius = max(2, round(_TOPHAT_RADIUS * max(rows, cols)))
    opened = _max_pool(-_max_pool(-filled, radius), radius)  # grey opening with a (2r+1)^2 square
    tophat = (filled - opened) * valid
    sample = tophat[valid]
    median = float(sample.median())
    spread = 1.4826 * float((sample - median).abs().median()) + 1e-12
    anatomy = values[valid]
    low, high = (float(v) for v in torch.quantile(anatomy[:: max(1, anatomy.numel() // 200000)], torch.tensor([0.02, 0.98], dtype=torch.float32)))
    # Far above the texture (noise) and a clear part of the anatomy's range (thin bone stays).
    threshold = max(_METAL_ROBUST_Z * spread, _METAL_RANGE_FRACTION * (high - low))
    metal = (tophat - median > threshold) & valid
    metal |= (values > high + 0.5 * (high - low)) & valid
    metal = _remove_small(metal, 4)
    if STRAIGHT_INSTRUMENTS:
        metal |= straight_instruments(filled, invalid, interiors=False)
    return dilate(metal, 2) & valid


# --------------------------------------------------------------------------- small helpers


def _analysis_images(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(values, small, scale)``: the image as float32 on the CPU, and binned by ``scale`` (block means)
    to about ``_WORKING_PX`` on its longest side for the analyses (itself when already that small)."""
    values = image.detach().to(torch.float32).cpu()
    scale = max(1, math.ceil(max(values.shape) / _WORKING_PX))
    small = values if scale == 1 else F.avg_pool2d(values[None, None], scale, ceil_mode=True)[0, 0]
    return values, small, scale


def _any_in_block(mask: torch.Tensor, scale: int) -> torch.Tensor:
    if scale == 1:
        return mask
    return F.max_pool2d(mask[None, None].to(torch.float32), scale, ceil_mode=True)[0, 0] > 0.5


def _full_size(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == tuple(shape):
        return mask
    return F.interpolate(mask[None, None].to(torch.float32), size=shape, mode="nearest")[0, 0] > 0.5


def _max_pool(image: torch.Tensor, radius: int) -> torch.Tensor:
    padded = F.pad(image[None, None], (radius,) * 4, mode="replicate")
    return F.max_pool2d(padded, 2 * radius + 1, stride=1)[0, 0]


def _erode(weight: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return weight
    padded = F.pad(weight[None, None], (radius,) * 4, mode="replicate")
    return -F.max_pool2d(-padded, 2 * radius + 1, stride=1)[0, 0]


def _median_filter_circular(values: torch.Tensor, width: int) -> torch.Tensor:
    half = width // 2
    padded = torch.cat([values[-half:], values, values[:half]])
    return padded.unfold(0, width, 1).median(dim=1).values


def _remove_small(mask: torch.Tensor, min_pixels: int) -> torch.Tensor:
    """Drop connected components (8-neighbourhood) smaller than ``min_pixels``."""
    if not bool(mask.any()):
        return mask
    from scipy import ndimage

    labels, count = ndimage.label(mask.numpy(), structure=[[1, 1, 1], [1, 1, 1], [1, 1, 1]])
    sizes = torch.bincount(torch.from_numpy(labels).flatten(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[torch.from_numpy(labels).long()]


def _weighted_correlation(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> float:
    total = float(weights.sum()) + 1e-12
    mean_a, mean_b = float((weights * a).sum()) / total, float((weights * b).sum()) / total
    centred_a, centred_b = a - mean_a, b - mean_b
    covariance = float((weights * centred_a * centred_b).sum())
    variance = float((weights * centred_a.square()).sum()) * float((weights * centred_b.square()).sum())
    return covariance / math.sqrt(variance + 1e-30)
