"""Image similarity measures for 2D/3D registration: differentiable, batched, maskable.

Every measure takes a fixed image and a moving image ``(B, H, W)`` (or ``(H, W)``)
and an optional non-negative weight mask of the same shape (for example the
projected spine mask ``M'``), and returns ``(B,)`` similarities where **larger is
better**. Losses are their negatives. Weighted statistics use
``<x>_w = sum(w x) / sum(w)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .filters import gaussian_blur

__all__ = [
    "SIMILARITIES",
    "gradient_correlation",
    "gradient_difference",
    "gradient_ncc",
    "image_gradients",
    "laplacian_of_gaussian",
    "local_gradient_correlation",
    "multiscale_ncc",
    "ncc",
    "nccl",
    "ngi",
    "patch_ncc",
    "unit_gradients",
]

_EPS = 1e-12  # guards sums of weights
_TINY = 1e-20  # guards square roots of variance products (0 only for flat images)


def _batched(*images: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if image is None else (image[None] if image.ndim == 2 else image) for image in images]


def _weights(fixed: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(fixed) if mask is None else mask.to(fixed).expand_as(fixed)


def _weighted_ncc(fixed: torch.Tensor, moving: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted Pearson correlation over the last two dims."""
    total = weights.sum(dim=(-2, -1)).clamp(min=_EPS)
    mean_f = (weights * fixed).sum(dim=(-2, -1)) / total
    mean_m = (weights * moving).sum(dim=(-2, -1)) / total
    centred_f = fixed - mean_f[..., None, None]
    centred_m = moving - mean_m[..., None, None]
    covariance = (weights * centred_f * centred_m).sum(dim=(-2, -1))
    variance_f = (weights * centred_f.square()).sum(dim=(-2, -1))
    variance_m = (weights * centred_m.square()).sum(dim=(-2, -1))
    return covariance / torch.sqrt(variance_f * variance_m + _TINY)


def ncc(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised cross-correlation ``<(f - <f>)(m - <m>)> / (sd_f sd_m)``, in ``[-1, 1]``.

    Invariant to affine intensity changes of either image; 1 when they are equal.
    """
    fixed, moving, mask = _batched(fixed, moving, mask)
    return _weighted_ncc(fixed, moving, _weights(fixed, mask))


def image_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives ``(d/dcol, d/drow)`` of ``(B, H, W)`` images (replicate padding), per pixel."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=image.dtype, device=image.device) / 8
    kernels = torch.stack([kernel, kernel.T])[:, None]  # (2, 1, 3, 3)
    padded = F.pad(image[:, None], (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(padded, kernels)
    return gradients[:, 0], gradients[:, 1]


def unit_gradients(gradient_x: torch.Tensor, gradient_y: torch.Tensor, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Derivatives ``(B, H, W)`` scaled towards unit length: ``g / sqrt(|g|^2 + (floor * m)^2)``, ``m`` each image's
    median length of its non-zero derivatives. An edge then counts by its direction, hardly by its contrast (the
    orientation correlation of Fitch et al. 2002, softened where the image is flat): a metal instrument's edge or a
    collimator blade's weighs no more than a vertebra's, and scatter's or vendor processing's changes of contrast
    change little. Images with no non-zero derivative are returned as they are."""
    length = torch.sqrt(gradient_x.square() + gradient_y.square())
    typical = torch.where(length > 0, length, torch.full_like(length, torch.nan)).flatten(1).nanmedian(dim=1).values
    typical = torch.nan_to_num(typical, nan=1.0)[:, None, None] * floor
    scale = torch.rsqrt(length.square() + typical.square() + _TINY)
    return gradient_x * scale, gradient_y * scale


def gradient_correlation(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient correlation (Penney et al. 1998): ``(NCC(f_x, m_x) + NCC(f_y, m_y)) / 2``."""
    fixed, moving, mask = _batched(fixed, moving, mask)
    weights = _weights(fixed, mask)
    fixed_x, fixed_y = image_gradients(fixed)
    moving_x, moving_y = image_gradients(moving)
    return 0.5 * (_weighted_ncc(fixed_x, moving_x, weights) + _weighted_ncc(fixed_y, moving_y, weights))


def ngi(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised gradient information (after Pluim et al. 2000, as used by Otake et al. 2013).

    With gradient magnitudes normalised by their weighted means, ``g = |grad I| / <|grad I|>``,
    and ``a`` the angle between the two gradients,
    ``NGI = < (cos(2a) + 1) / 2 * min(g_f, g_m) >_w``: large where strong edges of both
    images are parallel or anti-parallel. Invariant to positive intensity scaling and offsets.
    """
    fixed, moving, mask = _batched(fixed, moving, mask)
    weights = _weights(fixed, mask)
    total = weights.sum(dim=(-2, -1)).clamp(min=_EPS)
    fixed_x, fixed_y = image_gradients(fixed)
    moving_x, moving_y = image_gradients(moving)
    magnitude_f = torch.sqrt(fixed_x.square() + fixed_y.square() + _EPS)
    magnitude_m = torch.sqrt(moving_x.square() + moving_y.square() + _EPS)
    cos_angle = (fixed_x * moving_x + fixed_y * moving_y) / (magnitude_f * magnitude_m)
    angle_weight = cos_angle.square()  # (cos 2a + 1) / 2 = cos^2 a
    scale_f = (weights * magnitude_f).sum(dim=(-2, -1)) / total
    scale_m = (weights * magnitude_m).sum(dim=(-2, -1)) / total
    smaller = torch.minimum(magnitude_f / scale_f[..., None, None], magnitude_m / scale_m[..., None, None])
    return (weights * angle_weight * smaller).sum(dim=(-2, -1)) / total


def gradient_difference(fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient difference (Penney et al. 1998), normalised to ``(0, 1]`` per pixel and direction.

    ``GD = < A_x / (A_x + (f_x - s m_x)^2) + A_y / (A_y + (f_y - s m_y)^2) >_w / 2`` with
    ``A`` the weighted variance of the fixed image's gradient and ``s`` the least-squares
    scale of the moving gradients onto the fixed ones (so the measure ignores contrast).
    1 when the gradients agree up to scale.
    """
    fixed, moving, mask = _batched(fixed, moving, mask)
    weights = _weights(fixed, mask)
    total = weights.sum(dim=(-2, -1)).clamp(min=_EPS)
    score = 0.0
    for fixed_d, moving_d in zip(image_gradients(fixed), image_gradients(moving)):
        mean_f = (weights * fixed_d).sum(dim=(-2, -1)) / total
        variance = (weights * (fixed_d - mean_f[..., None, None]).square()).sum(dim=(-2, -1)) / total
        scale = (weights * fixed_d * moving_d).sum(dim=(-2, -1)) / (weights * moving_d.square()).sum(dim=(-2, -1)).clamp(min=_EPS)
        residual = fixed_d - scale[..., None, None] * moving_d
        terms = variance[..., None, None] / (variance[..., None, None] + residual.square() + _EPS)
        score = score + (weights * terms).sum(dim=(-2, -1)) / total
    return score / 2


def laplacian_of_gaussian(image: torch.Tensor, sigma_px: float = 1.5) -> torch.Tensor:
    """Laplacian of a Gaussian-smoothed ``(B, H, W)`` image (separable Gaussian, 3x3 Laplacian)."""
    radius = max(1, math.ceil(3 * sigma_px))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    gauss = torch.exp(-offsets.square() / (2 * sigma_px**2))
    gauss = gauss / gauss.sum()
    smoothed = F.pad(image[:, None], (radius, radius, radius, radius), mode="replicate")
    smoothed = F.conv2d(F.conv2d(smoothed, gauss.view(1, 1, 1, -1)), gauss.view(1, 1, -1, 1))
    laplace = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=image.dtype, device=image.device)
    return F.conv2d(F.pad(smoothed, (1, 1, 1, 1), mode="replicate"), laplace.view(1, 1, 3, 3))[:, 0]


def nccl(
    fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, sigma_px: float = 1.5
) -> torch.Tensor:
    """NCC plus the NCC of the Laplacian-of-Gaussian images, halved: ``(NCC + NCC_LoG) / 2``.

    The LoG term weighs edges and ridges (the paper's "Opt-NCCL" similarity), the NCC
    term the overall intensity pattern.
    """
    fixed, moving, mask = _batched(fixed, moving, mask)
    weights = _weights(fixed, mask)
    edges = _weighted_ncc(laplacian_of_gaussian(fixed, sigma_px), laplacian_of_gaussian(moving, sigma_px), weights)
    return 0.5 * (_weighted_ncc(fixed, moving, weights) + edges)


def box_mean(image: torch.Tensor, size: int) -> torch.Tensor:
    """Mean of ``(B, H, W)`` images over ``size`` square windows centred on every pixel, over the
    pixels inside the image (running sums along rows then columns: cost independent of ``size``)."""
    pad = size // 2

    def running(values: torch.Tensor, dim: int) -> torch.Tensor:
        padding = (pad + 1, size - pad - 1)
        padded = F.pad(values, padding if dim == -1 else (0, 0, *padding))
        sums = padded.cumsum(dim)
        length = sums.shape[dim]
        return sums.narrow(dim, size, length - size) - sums.narrow(dim, 0, length - size)

    wide = image.to(torch.float64)  # running sums in float64: differences of long float32 sums lose the window's digits
    counts = running(running(torch.ones_like(wide[:1]), -1), -2)
    return (running(running(wide, -1), -2) / counts).to(image.dtype)


def _one_if_shared(image: torch.Tensor | None) -> torch.Tensor | None:
    """``(1, H, W)`` where every image of the ``(B, H, W)`` batch is the same one expanded (a zero batch
    stride, as :meth:`torch.Tensor.expand` gives): what is computed of it is then computed once."""
    return image[:1] if image is not None and image.shape[0] > 1 and image.stride(0) == 0 else image


def patch_ncc(
    fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, patch_px: int = 9
) -> torch.Tensor:
    """Mean local NCC over ``patch_px`` square windows centred on every pixel (local statistics).

    Windows are weighted by the mask's mean inside them; robust to smooth intensity
    changes across the image (non-uniform exposure, soft tissue).
    """
    fixed, moving, mask = _batched(fixed, moving, mask)
    fixed, mask = _one_if_shared(fixed), _one_if_shared(mask)
    pool = lambda image: box_mean(image, patch_px)  # noqa: E731
    mean_f, mean_m = pool(fixed), pool(moving)
    covariance = pool(fixed * moving) - mean_f * mean_m
    variance_f = (pool(fixed.square()) - mean_f.square()).clamp(min=0)
    variance_m = (pool(moving.square()) - mean_m.square()).clamp(min=0)
    local = covariance / torch.sqrt(variance_f * variance_m + _TINY)
    if mask is None:  # every window weighs 1
        return local.mean(dim=(-2, -1))
    window_weight = pool(mask.to(local))
    return (window_weight * local).sum(dim=(-2, -1)) / window_weight.sum(dim=(-2, -1)).clamp(min=_EPS)


def multiscale_ncc(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    mask: torch.Tensor | None = None,
    patch_sizes: tuple[int, ...] = (0, 13),
) -> torch.Tensor:
    """Mean of global NCC (patch size 0) and patch NCC at the given window sizes."""
    scores = [ncc(fixed, moving, mask) if size == 0 else patch_ncc(fixed, moving, mask, size) for size in patch_sizes]
    return torch.stack(scores).mean(0)


def gradient_ncc(
    fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, patch_px: int = 9
) -> torch.Tensor:
    """Patch NCC of the Sobel derivatives, averaged over the two directions."""
    fixed, moving, mask = _batched(fixed, moving, mask)
    pairs = zip(image_gradients(_one_if_shared(fixed)), image_gradients(moving))
    return torch.stack([patch_ncc(f, m, mask, patch_px) for f, m in pairs]).mean(0)


def local_gradient_correlation(
    fixed: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor | None = None, window_px: float = 4.0
) -> torch.Tensor:
    """Gradient correlation of contrast-normalised images: each image's Sobel gradients divided
    by their local RMS magnitude (Gaussian window of ``window_px``) before the weighted NCC.

    A smooth, spatially varying contrast gain of either image (scatter, beam hardening,
    heel effect, vendor look-up tables) cancels, where plain gradient correlation lets the
    high-contrast regions dominate.
    """
    fixed, moving, mask = _batched(fixed, moving, mask)
    weights = _weights(fixed, mask)
    score = 0.0
    normalised = [_contrast_normalised_gradients(image, window_px) for image in (fixed, moving)]
    for fixed_d, moving_d in zip(*normalised):
        score = score + _weighted_ncc(fixed_d, moving_d, weights)
    return score / 2


def _contrast_normalised_gradients(image: torch.Tensor, window_px: float) -> tuple[torch.Tensor, torch.Tensor]:
    gradient_x, gradient_y = image_gradients(image)
    energy = gaussian_blur(gradient_x.square() + gradient_y.square(), window_px)
    scale = torch.sqrt(energy + 1e-6 * energy.mean(dim=(-2, -1), keepdim=True) + _TINY)
    return gradient_x / scale, gradient_y / scale


#: Similarities by name (larger is better).
SIMILARITIES = {
    "ncc": ncc,
    "nccl": nccl,
    "gc": gradient_correlation,
    "ngi": ngi,
    "gd": gradient_difference,
    "patch-ncc": patch_ncc,
    "multiscale-ncc": multiscale_ncc,
    "gradient-ncc": gradient_ncc,
    "local-gc": local_gradient_correlation,
}
