"""Masked normalised cross-correlation of templates at every shift, by FFT.

For an image ``D`` and a template ``T`` with weights ``M`` (0 or 1), the score at the
shift ``(row, col)`` is the NCC of ``T`` and the window ``D[row:row + h, col:col + w]``
over the pixels where ``M`` is 1 (Padfield, "Masked FFT registration", CVPR 2010):

    num(u)  = sum_p A(p) D(u + p),            A = M (T - <T>_M)
    var(u)  = sum_p M D(u + p)^2 - (sum_p M D(u + p))^2 / n,     n = sum_p M
    ncc(u)  = num(u) / sqrt(var(u) * sum_p A(p)^2)

Only shifts that keep the template inside the image are returned ("valid" shifts), so
the circular FFT correlation never wraps into them. :func:`gradient_ncc_maps` is a cheaper
variant for derivative images (the channels scored together, the window left uncentred) that
the global search can use instead (``GlobalStage.fft_score``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .torch_workers import side_by_side

__all__ = ["fast_fft_length", "gradient_ncc_maps", "map_medians", "masked_ncc_maps", "top_peaks"]

_TINY = 1e-12
#: Working set of one block of templates' spectra (bytes), and the fewest templates in a block.
_BLOCK_BYTES, _MIN_BLOCK = 4 * 2**20, 4


def masked_ncc_maps(images: torch.Tensor, templates: torch.Tensor, masks: torch.Tensor, min_fraction: float = 0.3) -> torch.Tensor:
    """NCC maps ``(N, K, H - h + 1, W - w + 1)`` of ``(N, C, H, W)`` images and ``(K, C, h, w)`` templates.

    ``masks`` ``(K, h, w)`` (one per template, shared by its channels). The scores of the
    ``C`` channels are averaged (two channels of Sobel derivatives give gradient
    correlation). Windows whose masked variance is below ``min_fraction`` of the median
    window's score 0 there instead of a noisy value (flat regions of the image).
    """
    channels = images.shape[1]
    size, valid, masks, weight, centred = _centred_templates(images, templates, masks)
    energy = centred.square().sum(dim=(-2, -1))  # (K, C)
    image_f = _spectra(torch.cat([images, images.square()], dim=1), size)  # (N, 2C, ., .)

    def block(part: slice) -> torch.Tensor:
        centred_f = _spectra(centred[part], size).conj()  # (k, C, ., .)
        mask_f = _spectra(masks[part], size).conj()  # (k, ., .)
        total = 0.0
        for channel in range(channels):
            plain, squared = image_f[:, channel], image_f[:, channels + channel]
            numerator = _valid_inverse(plain[:, None] * centred_f[None, :, channel], size, valid)
            first = _valid_inverse(plain[:, None] * mask_f[None], size, valid)
            second = _valid_inverse(squared[:, None] * mask_f[None], size, valid)
            variance = (second - first.square() / weight[None, part, None, None]).clamp(min=0.0)
            total = total + _floored_scores(numerator, variance, energy[None, part, channel, None, None], min_fraction)
        return total / channels

    return torch.cat(side_by_side(block, _template_blocks(images, len(templates)), images.device), dim=1)


def gradient_ncc_maps(images: torch.Tensor, templates: torch.Tensor, masks: torch.Tensor, min_fraction: float = 0.3) -> torch.Tensor:
    """Scores ``(N, K, H - h + 1, W - w + 1)`` of ``(N, C, H, W)`` derivative images and ``(K, C, h, w)``
    derivative templates, the ``C`` channels taken together as one vector field.

    The score at a shift is the cosine between the masked template, centred over its mask, and
    the window under it, both as vectors over the masked pixels of every channel:

        score(u) = sum_c sum_p A_c(p) D_c(u + p) / sqrt(sum_c sum_p M(p) D_c(u + p)^2 * sum_c sum_p A_c(p)^2)

    The window is *not* centred: image derivatives average to about zero over a window, and a
    window that does not (a smooth ramp across it) is one whose edges say little, so it may
    score lower. That leaves two inverse FFTs per image and template (the numerator, summed over
    channels in the frequency domain, and the window energy) where :func:`masked_ncc_maps`
    needs three per channel. Windows whose energy is below ``min_fraction`` of the median
    window's score 0 (flat regions).
    """
    channels = images.shape[1]
    size, valid, masks, _, centred = _centred_templates(images, templates, masks)
    energy = centred.square().sum(dim=(-3, -2, -1))  # (K,)
    image_f = _spectra(images, size)  # (N, C, ., .)
    power_f = _spectra(images.square().sum(dim=1), size)  # (N, ., .)

    def block(part: slice) -> torch.Tensor:
        centred_f = _spectra(centred[part], size).conj()  # (k, C, ., .)
        mask_f = _spectra(masks[part], size).conj()  # (k, ., .)
        product = image_f[:, None, 0] * centred_f[None, :, 0]
        for channel in range(1, channels):
            product += image_f[:, None, channel] * centred_f[None, :, channel]
        numerator = _valid_inverse(product, size, valid)
        del product
        window = _valid_inverse(power_f[:, None] * mask_f[None], size, valid).clamp(min=0.0)
        return _floored_scores(numerator, window, energy[None, part, None, None], min_fraction)

    return torch.cat(side_by_side(block, _template_blocks(images, len(templates)), images.device), dim=1)


def _template_blocks(images: torch.Tensor, count: int) -> list[slice]:
    """Slices of the ``count`` templates, a block at a time: the spectra of one block against all ``(N, C, H, W)``
    images stay within :data:`_BLOCK_BYTES`. Every map is computed alone, so blocking changes no score; the
    smaller working set keeps the FFTs' memory traffic in cache (the LIDC search's 8 x 77 maps of 171 x 104:
    0.58 s at once, 0.26 s in blocks of 11; docs/benchmarks.md). The blocks are computed side by side, each on one
    thread (:func:`sopi.torch_workers.side_by_side`)."""
    height, width = images.shape[-2:]
    per_template = images.shape[0] * height * (width // 2 + 1) * 8  # one complex64 spectrum per image
    size = max(_MIN_BLOCK, _BLOCK_BYTES // per_template)
    return [slice(start, start + size) for start in range(0, count, size)]


def _centred_templates(images: torch.Tensor, templates: torch.Tensor, masks: torch.Tensor):
    """What both scores need of ``(N, C, H, W)`` images and ``(K, C, h, w)`` templates with ``(K, h, w)``
    masks: the FFT size ``(H, W)``, the valid shifts (rows, cols), the masks in the images' dtype, their
    pixel counts ``(K,)`` and the templates centred over their masks (and zero outside)."""
    height, width = images.shape[-2:]
    rows, cols = templates.shape[-2:]
    if rows > height or cols > width:
        raise ValueError(f"template {rows}x{cols} is larger than the image {height}x{width}")
    masks = masks.to(images.dtype)
    weight = masks.sum(dim=(-2, -1)).clamp(min=1.0)  # (K,)
    means = (templates * masks[:, None]).sum(dim=(-2, -1)) / weight[:, None]
    centred = (templates - means[..., None, None]) * masks[:, None]  # (K, C, h, w)
    valid = (height - rows + 1, width - cols + 1)
    return (fast_fft_length(height), fast_fft_length(width)), valid, masks, weight, centred


def _spectra(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``rfft2(values, s=size)`` laid out as ``(..., size[1] // 2 + 1, size[0])``, the rows' frequencies innermost
    (contiguous): :func:`_valid_inverse` then inverts along the rows without first copying every product to that
    layout, which took as long as the transform itself on the search's maps (docs/benchmarks.md)."""
    return torch.fft.rfft2(values, s=size).transpose(-1, -2).contiguous()


def _valid_inverse(spectrum: torch.Tensor, size: tuple[int, int], valid: tuple[int, int]) -> torch.Tensor:
    """``irfft2(s, s=size)[..., :valid[0], :valid[1]]`` of the spectrum ``s`` that :func:`_spectra` lays out
    (``spectrum`` is ``s`` transposed): the inverse along the rows first, then only the valid rows' inverse along the
    columns (the same values; 1.8x faster than inverting every row on the search's maps)."""
    rows = torch.fft.ifft(spectrum, n=size[0], dim=-1)[..., : valid[0]]
    return torch.fft.irfft(rows.transpose(-1, -2), n=size[1], dim=-1)[..., : valid[1]]


def fast_fft_length(length: int) -> int:
    """The smallest ``n >= length`` with no prime factor above 5. The correlations are zero-padded to it: a valid shift
    never reaches past the image, so the padding changes no score, and an FFT of a length with a large prime factor is
    slow (the chest CT's search maps of 172 x 104 = 4 * 43 x 8 * 13: 0.28 s per batch, 0.21 s padded to 180 x 108)."""
    best = None
    power2 = 1
    while best is None or power2 < best:
        power3 = power2
        while best is None or power3 < best:
            power5 = power3
            while power5 < length:
                power5 *= 5
            best = power5 if best is None else min(best, power5)
            power3 *= 3
        power2 *= 2
    return best


def _floored_scores(numerator: torch.Tensor, spread: torch.Tensor, energy: torch.Tensor, min_fraction: float) -> torch.Tensor:
    """``numerator / sqrt(spread * energy)``, 0 where the window's ``spread`` (variance or energy) is at
    most ``min_fraction`` of its map's median: a flat window's score is noise."""
    floor = min_fraction * map_medians(spread)[..., None, None]
    denominator = spread * energy
    score = numerator / denominator.add_(_TINY).sqrt_()
    return score.masked_fill_(~(spread > floor), 0.0)


def map_medians(maps: torch.Tensor) -> torch.Tensor:
    """``maps.flatten(-2).median(dim=-1).values`` (the lower median of each ``(..., H, W)`` map): on the CPU by a
    partial sort (numpy's introselect), the same values in 40 % of torch's time on the search's maps."""
    flat = maps.flatten(-2)
    if flat.device.type != "cpu" or flat.requires_grad or flat.shape[-1] == 0:
        return flat.median(dim=-1).values
    array = flat.numpy()
    middle = (array.shape[-1] - 1) // 2
    return torch.from_numpy(np.partition(array, middle, axis=-1)[..., middle].copy())


def top_peaks(maps: torch.Tensor, per_map: int, separation_px: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``per_map`` highest local maxima of each map (``(..., H, W)``).

    A local maximum is the largest value within ``separation_px`` pixels. Returns
    ``(values, rows, cols)``, each ``(..., per_map)``, best first.
    """
    flat_shape = maps.shape[:-2]
    stacked = maps.reshape(-1, *maps.shape[-2:])
    window = 2 * separation_px + 1  # the square window's maximum, one axis at a time (the same, a third of the work)
    pooled = _running_max(stacked, window, separation_px)
    pooled = _running_max(pooled.transpose(-1, -2), window, separation_px).transpose(-1, -2)
    maxima = torch.where(stacked == pooled, stacked, torch.full_like(stacked, -torch.inf)).flatten(1)
    values, index = maxima.topk(min(per_map, maxima.shape[1]), dim=1)
    width = maps.shape[-1]
    shape = (*flat_shape, values.shape[-1])
    return values.reshape(shape), (index // width).reshape(shape), (index % width).reshape(shape)


def _running_max(values: torch.Tensor, window: int, reach: int) -> torch.Tensor:
    """The maximum over ``window`` neighbours along the last axis (``reach`` each side, -inf beyond the
    edges): ``max_pool2d``'s result, in half its time on the global search's maps."""
    return F.pad(values, (reach, reach), value=-torch.inf).unfold(-1, window, 1).amax(dim=-1)
