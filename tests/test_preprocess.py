"""Tests of sopi.preprocess: HU -> attenuation, crops/resampling in world coordinates, ROI boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sopi.errors import InputError
from sopi.preprocess import MU_WATER_PER_MM, SOPI_MIN_HU, crop_and_resample, hu_to_attenuation, spine_roi
from sopi.volume import Volume, world_from_index_affine


def _rotation(deg_z: float = 25.0, deg_x: float = -10.0) -> np.ndarray:
    cz, sz = math.cos(math.radians(deg_z)), math.sin(math.radians(deg_z))
    cx, sx = math.cos(math.radians(deg_x)), math.sin(math.radians(deg_x))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return rz @ rx


def _oblique_volume(data: torch.Tensor, spacing=(0.8, 1.1, 1.7), origin=(-30.0, 12.0, -250.0)) -> Volume:
    return Volume(data, world_from_index_affine(origin, spacing, tuple(_rotation().reshape(-1))))


def _world_of_voxels(volume: Volume) -> torch.Tensor:
    """(K, J, I, 3) world positions of all voxel centres, computed from the affine alone."""
    k, j, i = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in volume.data.shape), indexing="ij")
    index = torch.stack([i, j, k], dim=-1)
    return index @ volume.world_from_index[:3, :3].T + volume.world_from_index[:3, 3]


# --------------------------------------------------------------------------- attenuation


def test_hu_to_attenuation_values() -> None:
    hu = torch.tensor([-1000.0, -901.0, -850.0, -500.0, -131.0, -100.0, 0.0, 1000.0, 2000.0])
    mu = hu_to_attenuation(hu)
    water = MU_WATER_PER_MM
    # air is dropped; lung and fat attenuate as their density says
    expected = torch.tensor([0.0, 0.0, 0.15 * water, 0.5 * water, 0.869 * water, 0.9 * water, water, 2 * water, 3 * water])
    torch.testing.assert_close(mu, expected)
    # the SOPI authors' threshold drops lung and fat below -130 HU
    sopi = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.9 * water, water, 2 * water, 3 * water])
    torch.testing.assert_close(hu_to_attenuation(hu, min_hu=SOPI_MIN_HU), sopi)
    assert MU_WATER_PER_MM == 0.02683
    assert hu_to_attenuation(torch.tensor([-100], dtype=torch.int16)).dtype == torch.float32
    assert hu_to_attenuation(hu.double()).dtype == torch.float64
    # With the threshold off, values below -1000 HU clamp to 0 instead of going negative.
    torch.testing.assert_close(hu_to_attenuation(torch.tensor([-1500.0, -500.0]), min_hu=-5000.0), torch.tensor([0.0, 0.5 * water]))
    torch.testing.assert_close(hu_to_attenuation(torch.tensor([0.0]), mu_water_per_mm=0.02), torch.tensor([0.02]))
    for given in (hu, hu.double(), torch.tensor([-1500, -100, 300], dtype=torch.int16)):  # the caller's HU are left as they were
        kept = given.clone()
        hu_to_attenuation(given)
        assert torch.equal(given, kept)


# --------------------------------------------------------------------------- crop and resample


@pytest.mark.parametrize("interpolation", ["linear", "nearest"])
def test_identity_grid_returns_the_same_voxels(interpolation: str) -> None:
    data = torch.randn(9, 10, 11, generator=torch.Generator().manual_seed(1)) * 100
    if interpolation == "nearest":
        data = data.round().to(torch.int16)
    volume = _oblique_volume(data)
    size = tuple((volume.spacing * torch.tensor(volume.grid_shape, dtype=torch.float64)).tolist())
    out = crop_and_resample(volume, volume.center_world, size, volume.grid_shape, interpolation)
    torch.testing.assert_close(out.world_from_index, volume.world_from_index, atol=1e-9, rtol=0)
    if interpolation == "nearest":
        assert out.data.dtype == torch.int16 and torch.equal(out.data, data)
    else:
        assert out.data.dtype == torch.float32
        torch.testing.assert_close(out.data, data, atol=1e-3, rtol=0)


def test_output_grid_geometry() -> None:
    volume = _oblique_volume(torch.zeros(20, 20, 20))
    center = torch.tensor([-20.0, 15.0, -240.0], dtype=torch.float64)
    out = crop_and_resample(volume, center, (30.0, 24.0, 18.0), (15, 12, 6))
    assert out.grid_shape == (15, 12, 6) and out.data.shape == (6, 12, 15)
    torch.testing.assert_close(out.spacing, torch.tensor([2.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(out.direction, volume.direction)
    torch.testing.assert_close(out.center_world, center)
    # The box spans exactly size_mm along each axis (voxel edges).
    corners = out.corners_world() - center
    extents = (corners @ out.direction).abs().max(dim=0).values * 2
    torch.testing.assert_close(extents, torch.tensor([30.0, 24.0, 18.0], dtype=torch.float64))


def test_bead_keeps_its_world_position() -> None:
    volume = _oblique_volume(torch.zeros(40, 44, 48))
    world = _world_of_voxels(volume)
    bead = volume.center_world + torch.tensor([4.3, -6.1, 5.2], dtype=torch.float64)
    distance2 = ((world - bead) ** 2).sum(-1)
    volume = volume.with_data((1000.0 * torch.exp(-distance2 / (2 * 2.0**2))).to(torch.float32))

    center = volume.center_world + torch.tensor([1.7, 2.9, -3.3], dtype=torch.float64)
    out = crop_and_resample(volume, center, 40.0, (32, 32, 32), "linear", default_value=0.0)
    weights = out.data.double().clamp_min(0)
    weights = torch.where(weights > 100.0, weights, torch.zeros_like(weights))
    found = (weights[..., None] * _world_of_voxels(out)).sum((0, 1, 2)) / weights.sum()
    half_voxel = float(out.spacing.max()) / 2
    assert float((found - bead).norm()) < half_voxel / 2
    peak = torch.nonzero(out.data == out.data.max())[0].flip(0).double()
    peak_world = out.world_from_index[:3, :3] @ peak + out.world_from_index[:3, 3]
    assert float((peak_world - bead).abs().max()) <= half_voxel + 1e-9


def test_outside_gets_default_value_and_nearest_keeps_labels() -> None:
    labels = torch.zeros(10, 10, 10, dtype=torch.uint8)
    labels[3:7, 3:7, 3:7] = 7
    volume = Volume(labels, torch.eye(4, dtype=torch.float64))
    far = crop_and_resample(volume, (500.0, 0.0, 0.0), 10.0, (4, 4, 4), "linear", default_value=-1024.0)
    assert torch.all(far.data == -1024.0)
    out = crop_and_resample(volume, (4.5, 4.5, 4.5), 20.0, (40, 40, 40), "nearest", default_value=0)
    assert out.data.dtype == torch.uint8 and set(torch.unique(out.data).tolist()) == {0, 7}
    # Label 7 covers voxel centres 3..6, i.e. world [2.5, 6.5]; fine voxels inside it carry it.
    world = _world_of_voxels(out)
    inside = ((world > 2.6) & (world < 6.4)).all(-1)
    outside = ((world < 2.4) | (world > 6.6)).any(-1)
    assert torch.all(out.data[inside] == 7) and torch.all(out.data[outside] == 0)


def test_crop_rejects_bad_arguments() -> None:
    volume = Volume(torch.zeros(4, 4, 4), torch.eye(4, dtype=torch.float64))
    with pytest.raises(InputError, match="interpolation"):
        crop_and_resample(volume, (0, 0, 0), 4.0, interpolation="cubic")
    with pytest.raises(InputError):
        crop_and_resample(volume, (0, 0), 4.0)
    with pytest.raises(InputError):
        crop_and_resample(volume, (0, 0, 0), -4.0)


# --------------------------------------------------------------------------- ROI


def test_spine_roi_box() -> None:
    mask = torch.zeros(30, 40, 50, dtype=torch.uint8)
    mask[5:15, 10:30, 20:26] = 1  # k 5..14, j 10..29, i 20..25
    volume = _oblique_volume(mask, spacing=(0.5, 1.0, 2.0))
    center, size = spine_roi(volume, margin_mm=10.0)
    center_index = torch.tensor([(20 + 25) / 2, (10 + 29) / 2, (5 + 14) / 2], dtype=torch.float64)
    expected = volume.world_from_index[:3, :3] @ center_index + volume.world_from_index[:3, 3]
    torch.testing.assert_close(center, expected)
    extents = [6 * 0.5, 20 * 1.0, 10 * 2.0]
    assert size == pytest.approx(max(extents) + 20.0)
    crop = crop_and_resample(volume, center, size, (32, 32, 32), "nearest", 0)
    assert int(crop.data.sum()) > 0 and int(crop.data[0].sum()) == 0 and int(crop.data[-1].sum()) == 0
    with pytest.raises(InputError, match="empty"):
        spine_roi(volume.with_data(torch.zeros_like(mask)))
