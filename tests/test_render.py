"""A fine CT binned for registration (sopi.render.working_factors, binned_volume)."""

from __future__ import annotations

import itertools

import pytest
import torch

from sopi.errors import InputError
from sopi.render import binned_volume, working_factors
from sopi.volume import Volume, world_from_index_affine

from test_drr import GEOMETRY, oblique_affine, smooth_volume


def _on_spacing(spacing: tuple[float, float, float]) -> Volume:
    return Volume(torch.zeros(4, 4, 4), world_from_index_affine((0.0, 0.0, 0.0), spacing, (1, 0, 0, 0, 1, 0, 0, 0, 1)))


def test_working_factors_are_the_largest_that_keep_every_axis_within_the_spacing():
    assert working_factors(_on_spacing((0.7, 0.98, 2.0))) == (2, 1, 1)
    assert working_factors(_on_spacing((0.5, 0.375, 1.5))) == (3, 4, 1)
    assert working_factors(_on_spacing((3.0, 3.0, 3.0))) == (1, 1, 1)
    assert working_factors(_on_spacing((0.75, 0.75, 0.75))) == (2, 2, 2)  # exactly 1.5 mm binned
    assert working_factors(_on_spacing((0.7, 0.7, 0.7)), finest_mm=3.0) == (4, 4, 4)


def test_binned_voxels_are_their_blocks_means_or_maxima_at_the_blocks_centres():
    """Against a loop over the blocks: each binned voxel holds its block's mean (maximum for a mask), partial blocks at
    the far ends included, and sits at the mean world position of its block's voxel centres (full blocks)."""
    generator = torch.Generator().manual_seed(3)
    data = torch.rand(7, 6, 5, generator=generator, dtype=torch.float64)  # (k, j, i)
    volume = Volume(data, oblique_affine((7, 6, 5), (0.6, 0.7, 0.5), (-3.0, 2.0, 5.0)))
    factors = (2, 3, 2)  # (i, j, k)
    means, maxima = binned_volume(volume, factors), binned_volume(volume, factors, "max")
    assert means.data.shape == (4, 2, 3) and means.data.dtype == data.dtype
    for k, j, i in itertools.product(range(4), range(2), range(3)):
        block = data[2 * k:2 * k + 2, 3 * j:3 * j + 3, 2 * i:2 * i + 2]
        assert float(means.data[k, j, i]) == pytest.approx(float(block.mean()), rel=1e-12)
        assert float(maxima.data[k, j, i]) == float(block.max())
        if block.numel() == 12:  # a full block
            index = torch.tensor([[a, b, c, 1.0] for c in range(2 * k, 2 * k + 2) for b in range(3 * j, 3 * j + 3)
                                  for a in range(2 * i, 2 * i + 2)], dtype=torch.float64)
            expected = (volume.world_from_index @ index.T).T[:, :3].mean(dim=0)
            centre = means.world_from_index @ torch.tensor([i, j, k, 1.0], dtype=torch.float64)
            assert torch.allclose(centre[:3], expected, atol=1e-9)
    assert binned_volume(volume, (1, 1, 1)) is volume
    with pytest.raises(InputError, match="reduce"):
        binned_volume(volume, factors, "median")


def test_a_binned_smooth_volume_renders_nearly_the_same_drr():
    """Line integrals are kept: a smooth volume binned 2 x 2 x 2 renders the same DRR up to the blur of the larger
    voxels (under a tenth of its range here), and the binned grid sits where its blocks do: placed without the
    half-block offset (at the blocks' first voxels), the DRR is off by more than twice as much."""
    from sopi.geometry import nominal_view
    from sopi.render import render_drr

    volume = smooth_volume(5).to(torch.float32)
    pose = nominal_view("ap", volume.center_world, 650.0).camera_from_world
    full = render_drr(volume, GEOMETRY, pose, step_mm=0.5)
    binned = binned_volume(volume, (2, 2, 2))
    error = float((render_drr(binned, GEOMETRY, pose, step_mm=0.5) - full).abs().max())
    uncentred = Volume(binned.data, binned.world_from_index @ torch.tensor(
        [[1, 0, 0, -0.25], [0, 1, 0, -0.25], [0, 0, 1, -0.25], [0, 0, 0, 1.0]], dtype=torch.float64))  # half a full voxel
    assert torch.allclose(binned.data.sum() * 8, volume.data.sum(), rtol=1e-5)  # whole blocks: the mass is kept
    assert error < 0.1 * float(full.max() - full.min())
    assert float((render_drr(uncentred, GEOMETRY, pose, step_mm=0.5) - full).abs().max()) > 2 * error
