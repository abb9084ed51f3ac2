"""Similarity measures against direct numpy/scipy implementations, invariances and analytic values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from sopi.similarity import (
    SIMILARITIES,
    gradient_correlation,
    gradient_difference,
    image_gradients,
    laplacian_of_gaussian,
    ncc,
    nccl,
    ngi,
    patch_ncc,
    unit_gradients,
)


def smooth_random(seed: int, shape=(2, 24, 28)) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    images = np.stack([ndi.gaussian_filter(rng.normal(size=shape[1:]), 2.0) for _ in range(shape[0])])
    return torch.from_numpy(images)


def np_ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def np_sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ndi.sobel(image, axis=1, mode="nearest") / 8, ndi.sobel(image, axis=0, mode="nearest") / 8


def test_ncc_matches_numpy_masked_and_is_affine_invariant():
    fixed, moving = smooth_random(0), smooth_random(1)
    for index in range(2):
        assert float(ncc(fixed, moving)[index]) == pytest.approx(np_ncc(fixed[index].numpy(), moving[index].numpy()), rel=1e-6)
    mask = torch.zeros_like(fixed)
    mask[:, 5:20, 3:15] = 1
    inside = mask[0].bool().numpy()
    assert float(ncc(fixed, moving, mask)[0]) == pytest.approx(np_ncc(fixed[0].numpy()[inside], moving[0].numpy()[inside]), rel=1e-6)
    assert torch.allclose(ncc(fixed, 3.0 * moving - 7.0), ncc(fixed, moving), atol=1e-10)
    assert torch.allclose(ncc(fixed, fixed), torch.ones(2, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(ncc(fixed, -fixed), -torch.ones(2, dtype=torch.float64), atol=1e-8)


def test_gradient_correlation_matches_scipy_sobel():
    fixed, moving = smooth_random(2), smooth_random(3)
    for index in range(2):
        (fx, fy), (mx, my) = np_sobel(fixed[index].numpy()), np_sobel(moving[index].numpy())
        expected = 0.5 * (np_ncc(fx, mx) + np_ncc(fy, my))
        assert float(gradient_correlation(fixed, moving)[index]) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(gradient_correlation(fixed, 2 * fixed + 1), torch.ones(2, dtype=torch.float64), atol=1e-8)


def test_ngi_matches_direct_formula_and_is_one_at_identity():
    fixed, moving = smooth_random(4), smooth_random(5)
    (fx, fy), (mx, my) = np_sobel(fixed[0].numpy()), np_sobel(moving[0].numpy())
    gf, gm = np.hypot(fx, fy), np.hypot(mx, my)
    cos_angle = (fx * mx + fy * my) / (gf * gm)
    expected = np.mean((np.cos(2 * np.arccos(np.clip(cos_angle, -1, 1))) + 1) / 2 * np.minimum(gf / gf.mean(), gm / gm.mean()))
    assert float(ngi(fixed, moving)[0]) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(ngi(fixed, fixed), torch.ones(2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(ngi(fixed, 5 * moving + 2), ngi(fixed, moving), atol=1e-8)
    assert float(ngi(fixed, moving)[0]) < 0.9


def test_gradient_difference_matches_direct_formula_and_ignores_contrast():
    fixed, moving = smooth_random(6), smooth_random(7)
    terms = []
    for f, m in zip(np_sobel(fixed[0].numpy()), np_sobel(moving[0].numpy())):
        scale = (f * m).sum() / (m * m).sum()
        variance = f.var()
        terms.append(np.mean(variance / (variance + (f - scale * m) ** 2)))
    assert float(gradient_difference(fixed, moving)[0]) == pytest.approx(np.mean(terms), rel=1e-6)
    assert torch.allclose(gradient_difference(fixed, 4 * fixed + 3), torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_laplacian_of_gaussian_and_nccl_match_scipy():
    image = smooth_random(8)[0]
    sigma = 1.5
    expected = ndi.laplace(ndi.gaussian_filter(image.numpy(), sigma, mode="nearest", truncate=5 / sigma), mode="nearest")
    assert np.allclose(laplacian_of_gaussian(image[None], sigma)[0].numpy(), expected, atol=1e-12)
    fixed, moving = smooth_random(9), smooth_random(10)
    log_f = ndi.laplace(ndi.gaussian_filter(fixed[1].numpy(), sigma, mode="nearest", truncate=5 / sigma), mode="nearest")
    log_m = ndi.laplace(ndi.gaussian_filter(moving[1].numpy(), sigma, mode="nearest", truncate=5 / sigma), mode="nearest")
    expected_nccl = 0.5 * (np_ncc(fixed[1].numpy(), moving[1].numpy()) + np_ncc(log_f, log_m))
    assert float(nccl(fixed, moving)[1]) == pytest.approx(expected_nccl, rel=1e-6)


def test_patch_ncc_matches_explicit_windows():
    fixed, moving = smooth_random(11, (1, 10, 12)), smooth_random(12, (1, 10, 12))
    f, m, half = fixed[0].numpy(), moving[0].numpy(), 2
    local = np.zeros_like(f)
    for row in range(f.shape[0]):
        for col in range(f.shape[1]):
            window = (slice(max(0, row - half), row + half + 1), slice(max(0, col - half), col + half + 1))
            a, b = f[window].ravel(), m[window].ravel()
            local[row, col] = ((a - a.mean()) * (b - b.mean())).mean() / np.sqrt(a.var() * b.var())
    assert float(patch_ncc(fixed, moving, patch_px=5)[0]) == pytest.approx(local.mean(), rel=1e-6)
    assert float(patch_ncc(fixed, 2 * fixed - 1, patch_px=5)[0]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["patch-ncc", "gradient-ncc"])
def test_patch_measures_give_the_same_scores_and_gradients_with_one_x_ray_expanded_over_the_batch(name):
    # a registration compares one X-ray with a batch of DRRs (expanded, so its statistics are computed once)
    measure = SIMILARITIES[name]
    fixed, moving = smooth_random(15, (1, 16, 18))[0], smooth_random(16, (4, 16, 18))
    masks = (smooth_random(17, (4, 16, 18)) > 0.4).to(torch.float64)
    for mask in (None, masks, masks[:1].expand(4, -1, -1)):
        scores = []
        for fixed_batch, mask_batch in ((fixed.expand(4, -1, -1), mask), (fixed.repeat(4, 1, 1), None if mask is None else mask.clone())):
            leaf = moving.clone().requires_grad_(True)
            score = measure(fixed_batch, leaf, mask_batch)
            scores.append((score.detach(), torch.autograd.grad(score.sum(), leaf)[0]))
        (expanded, gradient), (copied, expected) = scores
        assert expanded.shape == (4,)
        assert torch.allclose(expanded, copied, atol=1e-12) and torch.allclose(gradient, expected, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_every_measure_is_batched_differentiable_and_best_at_identity(name):
    measure = SIMILARITIES[name]
    fixed, moving = smooth_random(13, (3, 16, 18)), smooth_random(14, (3, 16, 18))
    batched = measure(fixed, moving)
    assert batched.shape == (3,)
    single = torch.stack([measure(fixed[i], moving[i])[0] for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-10)
    assert (measure(fixed, fixed) > batched).all()
    small_fixed = fixed[:1, :8, :8].clone()
    small_moving = moving[:1, :8, :8].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: measure(small_fixed, m), (small_moving,), eps=1e-6, atol=1e-5)


def test_box_mean_equals_average_pooling_that_ignores_the_outside():
    import torch.nn.functional as F

    from sopi.similarity import box_mean

    images = torch.rand(3, 37, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for size in (3, 9, 13):
        expected = F.avg_pool2d(images[:, None], size, stride=1, padding=size // 2, count_include_pad=False)[:, 0]
        assert torch.allclose(box_mean(images, size), expected, atol=1e-12)


def test_unit_gradients_keep_each_direction_have_the_analytic_length_and_ignore_contrast():
    """On a ramp every derivative has the median length m: scaled by 1 / sqrt(m^2 + (f m)^2) it has length
    1 / sqrt(1 + f^2). Elsewhere the direction is kept, the length grows with the derivative's own, and the
    result is the same for the image at any contrast (the median scales with it); a flat image stays zero."""
    rows, cols = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    ramp = (3.0 * cols + 4.0 * rows)[None]
    gx, gy = image_gradients(ramp)
    for floor in (0.5, 2.0):
        ux, uy = unit_gradients(gx, gy, floor)
        length = torch.sqrt(ux.square() + uy.square())[:, 1:-1, 1:-1]  # inside: replicate padding halves the edges
        assert torch.allclose(length, torch.full_like(length, 1.0 / (1.0 + floor**2) ** 0.5), atol=1e-6)
        assert torch.allclose(ux[:, 1:-1, 1:-1] / uy[:, 1:-1, 1:-1], torch.full_like(length, 3.0 / 4.0), atol=1e-6)
    images = smooth_random(3)
    gx, gy = image_gradients(images)
    ux, uy = unit_gradients(gx, gy, 1.0)
    cross = ux * gy - uy * gx  # parallel: no cross product; same sense: positive dot product
    assert float(cross.abs().max()) < 1e-6 and bool(((ux * gx + uy * gy) >= 0).all())
    for index in range(len(images)):  # each image has its own median
        length, unit = torch.sqrt(gx[index].square() + gy[index].square()).flatten(), torch.sqrt(ux[index].square() + uy[index].square()).flatten()
        assert bool((unit[torch.argsort(length)].diff() >= -1e-6).all()) and float(unit.max()) < 1.0
    scaled = unit_gradients(*image_gradients(25.0 * images + 7.0), 1.0)
    assert torch.allclose(scaled[0], ux, atol=1e-5) and torch.allclose(scaled[1], uy, atol=1e-5)
    flat = unit_gradients(torch.zeros(1, 5, 5), torch.zeros(1, 5, 5), 2.0)
    assert all(bool((part == 0).all()) for part in flat)
