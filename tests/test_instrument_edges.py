"""Straight metal instruments (sopi.instrument_edges): a retractor plate and a K-wire under noise are
found with their true extent; a soft straight ridge, a sharp curved band and a short bright bar are not."""

from __future__ import annotations

import math

import torch

import sopi.xray_prep as xray_prep
from sopi.instrument_edges import straight_instruments
from sopi.xray_prep import prepare_xray

SIZE = 256


def _grid() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")


def _body(seed: int, noise: float) -> torch.Tensor:
    """A smooth body: thickness falling off to the sides, soft blobs, and white noise of ``noise``."""
    generator = torch.Generator().manual_seed(seed)
    row, col = _grid()
    image = 2.0 * torch.exp(-((col - 128) / 110).square()) + 0.5 * row / SIZE
    for y, x in torch.randint(20, SIZE - 20, (15, 2), generator=generator).tolist():
        image += 0.4 * torch.exp(-((row - y).square() + (col - x).square()) / 300.0)
    return image + noise * torch.randn(SIZE, SIZE, generator=generator)


def _band(centre: tuple[float, float], angle: float, length: float, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inside, across)``: the pixels of a straight band and their signed distance across it."""
    row, col = _grid()
    along = (col - centre[0]) * math.cos(angle) + (row - centre[1]) * math.sin(angle)
    across = -(col - centre[0]) * math.sin(angle) + (row - centre[1]) * math.cos(angle)
    return (along.abs() <= length / 2) & (across.abs() <= width / 2), across


def _near(mask: torch.Tensor, radius: int) -> torch.Tensor:
    return torch.nn.functional.max_pool2d(mask[None, None].float(), 2 * radius + 1, 1, radius)[0, 0] > 0.5


def test_a_plate_and_a_wire_under_noise_are_found_with_their_extent(monkeypatch):
    plate, plate_across = _band((90, 150), 0.5, 140, 34)  # a retractor blade, +0.5 over its width
    wire, _ = _band((170, 110), 2.0, 180, 3)  # a K-wire, +0.6 over 3 px: the pixel noise is half of it
    noise = 0.3
    image = _body(0, noise) + 0.5 * plate + 0.6 * wire
    invalid = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    found = straight_instruments(image, invalid)
    assert float(found[plate].float().mean()) > 0.9
    assert float(found[wire].float().mean()) > 0.9
    assert float(found[~_near(plate | wire, 4)].float().mean()) < 0.005  # the body is left alone
    # across the plate's middle, the band found spans its width and a margin of a pixel and a half either side
    row, col = _grid()
    along = (col - 90) * math.cos(0.5) + (row - 150) * math.sin(0.5)
    across = plate_across[found & (along.abs() <= 20) & (plate_across.abs() <= 30)]
    assert 34 <= float(across.max() - across.min()) <= 34 + 6
    # only the sides: the plate's interior, where the anatomy shows through, is left out of the band
    sides = straight_instruments(image, invalid, interiors=False)
    assert not bool(sides[plate & (plate_across.abs() <= 17 - 3) & ~_near(wire, 5)].any())  # the wire crosses the plate
    assert float(sides[plate & (plate_across.abs() >= 17 - 1)].float().mean()) > 0.85
    assert float(sides[wire].float().mean()) > 0.9  # a band narrower than two sides is whole
    # the same image prepared for registration with the bands on: the wire and the plate's sides carry no weight,
    # its middle does
    monkeypatch.setattr(xray_prep, "STRAIGHT_INSTRUMENTS", True)
    prepared = prepare_xray(image, detect_field=False)
    assert float(prepared.weight[wire].mean()) < 0.05
    assert float(prepared.weight[plate & (plate_across.abs() >= 17 - 1)].mean()) < 0.1
    assert float(prepared.weight[plate & (plate_across.abs() <= 17 - 10) & ~_near(wire, 8)].mean()) > 0.8
    assert float(prepared.weight[~_near(plate | wire, 8)].mean()) > 0.95


def test_pixels_known_to_be_unusable_are_neither_read_nor_returned():
    plate, _ = _band((128, 128), 1.2, 160, 30)
    image = _body(1, 0.05) + 0.5 * plate
    _, col = _grid()
    invalid = col >= 200
    found = straight_instruments(image, invalid)
    assert not bool(found[invalid].any())
    assert float(found[plate & ~invalid].float().mean()) > 0.9


def test_a_soft_ridge_a_curved_band_and_a_short_bar_are_not_instruments():
    row, col = _grid()
    ridge = 0.8 * torch.exp(-((col - 70) / 8.0).square())  # a straight column with soft sides (a spine, a vessel)
    radius = torch.sqrt((col - 250).square() + (row - 128).square())
    arc = ((radius - 90).abs() <= 10) & (col < 250)  # a rib-like band with sharp sides, bending on a 90 px radius
    bar, _ = _band((110, 200), 0.3, 24, 12)  # straight and sharp, but too short to reach over four pieces
    image = _body(2, 0.05) + ridge + 0.6 * arc + 0.6 * bar
    found = straight_instruments(image, torch.zeros(SIZE, SIZE, dtype=torch.bool))
    assert float(found.float().mean()) < 0.002


def test_the_bands_join_the_metal_mask_only_when_switched_on(monkeypatch):
    plate, across = _band((128, 128), 0.9, 150, 30)
    image = _body(3, 0.1) + 0.5 * plate
    sides = plate & (across.abs() >= 15 - 1)
    assert float(prepare_xray(image, detect_field=False).metal[sides].float().mean()) < 0.2  # the top-hat misses a plate this wide
    monkeypatch.setattr(xray_prep, "STRAIGHT_INSTRUMENTS", True)
    assert float(prepare_xray(image, detect_field=False).metal[sides].float().mean()) > 0.85


def test_a_second_look_drops_the_bands_sides_from_a_prepared_weight_and_nothing_else():
    """``without_straight_instruments`` on what ``prepare_xray`` returns (switch off): the plate's sides lose
    their weight, its middle and the body keep theirs, the inputs are untouched; an X-ray with no band gives None."""
    plate, across = _band((128, 128), 0.9, 150, 30)
    prepared = prepare_xray(_body(3, 0.1) + 0.5 * plate, detect_field=False)
    image, weight = prepared.image.clone(), prepared.weight.clone()
    masked = xray_prep.without_straight_instruments(prepared.image, prepared.weight)
    assert torch.equal(prepared.image, image) and torch.equal(prepared.weight, weight)
    assert masked is not None and masked.shape == weight.shape
    assert float(weight[plate & (across.abs() >= 15 - 1)].mean()) > 0.8  # the first look used the sides
    assert float(masked[plate & (across.abs() >= 15 - 1)].mean()) < 0.1
    assert float(masked[plate & (across.abs() <= 15 - 8)].mean()) > 0.8
    assert bool((masked <= weight).all())  # only ever removes weight
    assert float((masked == weight)[~_near(plate, 8)].float().mean()) > 0.99
    clean = prepare_xray(_body(2, 0.05), detect_field=False)
    assert xray_prep.without_straight_instruments(clean.image, clean.weight) is None
