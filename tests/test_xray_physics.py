"""Physics-based X-ray simulation: determinism, and each effect against its analytic expectation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sopi.drr import Projector
from sopi.geometry import CArmGeometry, nominal_view
from sopi.volume import Volume
from sopi.xray_physics import (
    Instrument,
    RealismDraw,
    draw_realism,
    exposure_reference,
    field_masks,
    instrument_line_integrals,
    material_volume,
    simulate_xray,
)

GEOMETRY = CArmGeometry(1000.0, 24, 24, (4.0, 4.0), source_to_isocenter_mm=650.0)  # 62 mm at the slab: all of it inside


def _slab_ct(hu: float = 0.0) -> Volume:
    """A 100 mm water slab (HU 0) with a bone block in it, on a 2 mm grid."""
    data = torch.full((50, 50, 50), -1000.0)
    data[:, :, :] = hu
    data[20:30, 20:30, 20:30] = 1000.0
    return Volume(data, torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64)))


def _pose(ct: Volume) -> torch.Tensor:
    return nominal_view("ap", ct.center_world, GEOMETRY.source_to_isocenter_mm).camera_from_world


def test_a_seed_gives_the_same_case():
    ct = _slab_ct()
    images = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(11)
        draw = draw_realism(generator, GEOMETRY)
        images.append((json.dumps(draw.to_dict(), sort_keys=True), simulate_xray(ct, GEOMETRY, _pose(ct), draw, generator)))
    assert images[0][0] == images[1][0] and torch.equal(images[0][1], images[1][1])
    other = torch.Generator().manual_seed(12)
    assert not torch.equal(simulate_xray(ct, GEOMETRY, _pose(ct), draw_realism(other, GEOMETRY), other), images[0][1])


def test_without_effects_it_is_the_two_material_drr():
    ct = _slab_ct()
    plain = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(), torch.Generator())
    materials = Projector(material_volume(ct), GEOMETRY)(_pose(ct))
    assert torch.allclose(plain, materials.sum(0), atol=1e-4)
    weighted = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(bone_weight=1.5, soft_weight=0.9), torch.Generator())
    assert torch.allclose(weighted, 0.9 * materials[0] + 1.5 * materials[1], atol=1e-4)
    hard = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(hardening=0.05), torch.Generator())
    assert torch.allclose(hard, plain / (1 + 0.05 * plain), atol=1e-4)


def test_quantum_noise_follows_poisson_statistics():
    ct = _slab_ct()
    clean = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(), torch.Generator())
    photons = 2000.0
    water = (clean - clean.median()).abs() < 0.01  # pixels seeing only the slab (most of them)
    assert int(water.sum()) > 200
    line = float(clean[water].mean())
    # photons per pixel of unattenuated beam (the first version): exp(line) times the variance behind the slab
    unattenuated = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(photons=photons, exposure_control=False), torch.Generator().manual_seed(0))
    expected_sd = math.sqrt(math.exp(line) / photons)  # var(-log N/N0) = 1 / E[N] for Poisson N
    assert float((unattenuated - clean)[water].std()) == pytest.approx(expected_sd, rel=0.15)
    # exposure control (the default): the photons reach the detector behind the slab, whatever its thickness
    for hu in (0.0, 500.0):  # 100 mm of water, or of a denser tissue: 1.5x the line integral
        slab = _slab_ct(hu)
        plain = simulate_xray(slab, GEOMETRY, _pose(slab), RealismDraw(), torch.Generator())
        noisy = simulate_xray(slab, GEOMETRY, _pose(slab), RealismDraw(photons=photons), torch.Generator().manual_seed(0))
        behind = (plain - plain.median()).abs() < 0.01
        assert float((noisy - plain)[behind].std()) == pytest.approx(math.sqrt(1.0 / photons), rel=0.15)


def test_exposure_reference_is_the_median_of_the_central_exposed_field():
    fluence = (torch.arange(64.0).reshape(8, 8) + 1) / 64  # distinct, positive values
    exposed = torch.ones(8, 8, dtype=torch.bool)
    assert exposure_reference(fluence, exposed) == pytest.approx(float(fluence[2:6, 2:6].median()))
    exposed[:, :5] = False  # the centre partly collimated: only its exposed part counts
    assert exposure_reference(fluence, exposed) == pytest.approx(float(fluence[2:6, 5:6].median()))
    corner = torch.zeros(8, 8, dtype=torch.bool)
    corner[0, 0] = True  # nothing exposed in the centre: every exposed pixel
    assert exposure_reference(fluence, corner) == pytest.approx(float(fluence[0, 0]))


def test_scatter_lowers_contrast_and_keeps_the_mean_ratio():
    ct = _slab_ct()
    clean = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(), torch.Generator())
    scattered = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(scatter_to_primary=1.0, scatter_sigma_mm=40.0), torch.Generator())
    contrast = lambda image: float(image[10:14, 10:14].mean() - image[1:4, 1:4].mean())  # bone block - slab  # noqa: E731
    assert 0 < contrast(scattered) < 0.7 * contrast(clean)
    primary, total = torch.exp(-clean), torch.exp(-scattered)
    assert float((total - primary).mean() / primary.mean()) == pytest.approx(1.0, rel=1e-3)  # SPR over the field


def test_field_of_view_and_blades():
    ct = _slab_ct()
    draw = RealismDraw(blades=(0.25, 0.0, 0.0, 0.0), blade_transmission=0.01, fov_radius=0.45, outside_value="high")
    image = simulate_xray(ct, GEOMETRY, _pose(ct), draw, torch.Generator())
    plain = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(), torch.Generator())
    open_field, inside = field_masks(draw, GEOMETRY.shape)
    assert int((~open_field).sum()) == 6 * 24  # a quarter of 24 columns
    blade = ~open_field & inside
    assert torch.allclose(image[blade], plain[blade] - math.log(0.01), atol=1e-4)  # leakage 1 %
    assert torch.equal(image[~inside], torch.full_like(image[~inside], float(image[inside].max())))


def test_instrument_chords():
    wire = Instrument("k-wire", (5.0, 20.0), (45.0, 20.0), width_px=4.0, mu_per_px=0.5)
    plate = Instrument("retractor", (10.0, 5.0), (10.0, 40.0), width_px=6.0, mu_per_px=0.25, plate_thickness_px=2.0)
    lines = instrument_line_integrals([wire, plate], (48, 48))  # any detector size: drawn in pixels
    assert float(lines[20, 30]) == pytest.approx(2 * 2.0 * 0.5)  # through the axis: the diameter
    assert float(lines[21, 30]) == pytest.approx(2 * math.sqrt(3.0) * 0.5)  # 1 px off: 2 sqrt(r^2 - 1)
    assert float(lines[30, 9]) == pytest.approx(0.5)  # the plate: constant thickness
    assert float(lines[45, 30]) == 0.0


def test_raw_output_is_the_exponential_of_the_log_image():
    ct = _slab_ct()
    log_image = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(photons=5000.0), torch.Generator().manual_seed(3))
    raw = simulate_xray(ct, GEOMETRY, _pose(ct), RealismDraw(photons=5000.0, raw_output=True), torch.Generator().manual_seed(3))
    assert torch.allclose(-torch.log(raw), log_image, atol=1e-4)
    assert float(raw[12, 12]) < float(raw[1, 1])  # bone dark in raw counts
