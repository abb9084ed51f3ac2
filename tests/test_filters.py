"""Image filters shared by the engine."""

from __future__ import annotations

import torch

from sopi.filters import dilate


def test_dilate_grows_by_a_square_as_a_direct_neighbourhood_test_does():
    torch.manual_seed(0)
    mask = torch.rand(3, 23, 31) > 0.97
    for radius in (1, 2, 5):
        expected = torch.zeros_like(mask)
        for b, r, c in torch.nonzero(mask).tolist():  # every pixel within the square around a set one
            expected[b, max(0, r - radius):r + radius + 1, max(0, c - radius):c + radius + 1] = True
        assert torch.equal(dilate(mask, radius), expected)
        assert torch.equal(dilate(mask[1], radius), expected[1])
    assert torch.equal(dilate(mask, 0), mask)
