"""X-ray preparation: field, saturation and metal masks on synthetic images with known answers;
polarity both ways; the fill; the weight in the registration objective."""

from __future__ import annotations

import math

import pytest
import torch

from sopi.geometry import CArmGeometry, nominal_view
from sopi.registration.problem import PoseProblem
from sopi.volume import Volume
from sopi.xray_prep import apply_reading, detect_polarity, fill_masked, prepare_xray

SIZE = 128


def _anatomy(seed: int = 0) -> torch.Tensor:
    """A body-like bone-bright image: a thick centre, a bright column, soft blobs and mild noise."""
    generator = torch.Generator().manual_seed(seed)
    row, col = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    centre = (SIZE - 1) / 2
    body = 2.0 * torch.exp(-((col - centre) / (0.45 * SIZE)).square())
    column = 0.6 * torch.exp(-((col - centre) / 7.0).square()) * (1 + 0.3 * torch.sin(row / 6.0))
    blobs = sum(
        0.3 * torch.exp(-((row - float(y)).square() + (col - float(x)).square()) / 60.0)
        for y, x in torch.randint(10, SIZE - 10, (12, 2), generator=generator)
    )
    return body + column + blobs + 0.02 * torch.randn(SIZE, SIZE, generator=generator)


def _blades_and_circle() -> tuple[torch.Tensor, torch.Tensor]:
    """The anatomy with a left blade (+3, leakage) and a constant fill outside a circle; the truth mask."""
    image = _anatomy()
    row, col = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    blade = col < 22
    image = torch.where(blade, image + 3.0, image)
    inside = (row - 63.5).square() + (col - 63.5).square() <= 58.0**2
    image = torch.where(inside, image, torch.full_like(image, float(image.min())))
    return image, blade | ~inside


def test_field_of_view_blade_and_circle_are_found():
    image, outside_truth = _blades_and_circle()
    prepared = prepare_xray(image, detect_metal=False)
    masked = prepared.outside_field | prepared.saturated
    assert float((outside_truth & ~masked).sum()) / float(outside_truth.sum()) < 0.01  # almost none leaks
    kept = float((~outside_truth & ~masked).sum()) / float((~outside_truth).sum())
    assert kept > 0.93  # and the field is kept (one to two pixels of margin at its edge)
    assert float(prepared.weight[outside_truth].max()) == 0.0


def test_the_prepared_xray_carries_the_field_it_was_found_to_have():
    from sopi.io_xray import XRay
    from sopi.registration.preparation import prepare_fixed

    image, outside_truth = _blades_and_circle()
    geometry = CArmGeometry(1000.0, SIZE, SIZE, (1.0, 1.0))
    xray = XRay(image, geometry, metadata={"polarity_settled": True})
    volume = Volume(torch.zeros(4, 4, 4), torch.eye(4, dtype=torch.float64))  # not read: the polarity is settled
    fixed, _, _ = prepare_fixed(xray, volume, torch.eye(4, dtype=torch.float64), torch.device("cpu"))
    assert torch.equal(fixed.field_mask, ~prepare_xray(image).outside_field)
    assert float((fixed.field_mask & outside_truth).sum()) / float(outside_truth.sum()) < 0.01
    assert xray.field_mask is None  # the input is not modified


def test_a_judged_bone_bright_xray_is_prepared_as_a_settled_one_is():
    """The polarity judgement finds the field once; the preparation reuses it and gets what finding it again gives."""
    from sopi.io_xray import XRay
    from sopi.registration.preparation import prepare_fixed

    volume, geometry, pose, _ = _box_scene()
    image, _ = _blades_and_circle()
    image = torch.nn.functional.interpolate(image[None, None], size=geometry.shape, mode="area")[0, 0]
    judged = prepare_fixed(XRay(image, geometry), volume, pose, torch.device("cpu"))
    settled = prepare_fixed(XRay(image, geometry, metadata={"polarity_settled": True}), volume, pose, torch.device("cpu"))
    assert judged[2]["polarity"] == "bone-bright" and float((~judged[0].field_mask).float().mean()) > 0.1
    assert torch.equal(judged[0].field_mask, settled[0].field_mask) and torch.equal(judged[1], settled[1])
    assert torch.equal(judged[0].image, settled[0].image)


def test_no_field_edge_means_no_field_mask():
    prepared = prepare_xray(_anatomy(1))
    assert float(prepared.outside_field.sum()) == 0.0
    assert float(prepared.weight.mean()) > 0.95


def _straight_structures() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (image, true outside-field mask)}``: the anatomy with a blade whose plateau scatter
    has dimmed below the anatomy's brightest part and that fades along the edge, a bright
    retractor-like band with two parallel edges, and a long but blurred straight step (anatomy)."""
    image = _anatomy(2)
    row, col = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    noise = 0.05 * torch.randn(SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    blade = col >= SIZE - 20  # a right blade: +0.9 at the top fading to +0.5 at the bottom
    dimmed = torch.where(blade, image + 0.9 - 0.4 * row / SIZE + noise, image)
    band = (col - 0.3 * row - 20.0).abs() <= 6.0  # a plate crossing the image, 12 px wide
    plate = torch.where(band, image + 1.0, image)
    soft = image + torch.sigmoid((col - 100.0) / 2.0)  # a long step over ~8 px: masked if sharpness is not asked
    nothing = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    return {"dimmed blade": (dimmed, blade), "plate": (plate, nothing), "blurred step": (soft, nothing)}


@pytest.mark.parametrize("name", ["dimmed blade", "plate", "blurred step"])
def test_straight_field_edges_are_told_from_plates_and_anatomy(name):
    """A blade is a sharp straight step up onto a plateau: found even where its plateau is dimmer
    than the anatomy's brightest part and fades (the gradient-vote test alone misses all of it);
    a plate crossing the image (steps up, then down) and a long blurred step (masked when the
    line test does not ask for sharpness) are not field edges."""
    image, truth = _straight_structures()[name]
    masked = prepare_xray(image, detect_metal=False).outside_field
    if truth.any():
        assert float((truth & ~masked).sum()) / float(truth.sum()) < 0.02
    assert float((masked & ~truth).sum()) / float((~truth).sum()) < 0.02


def test_line_steps_measure_a_straight_step_edge_and_share_one_sampling_across_offsets():
    """A step of height 3 along a line whose outward normal is bin 0's (22.5 deg of 8 bins), 20 px from
    the centre: the mean step across that line is 3 at offset 5 (the samples 5 px either side are clear of
    the edge's pixel blur), 0 on lines 20 px further out, and it steps up all along (steady 1). Offsets
    sampled together give exactly what each gives alone."""
    from sopi.field_edges import _line_steps

    rows, cols, bins, distance = 120, 140, 8, 20
    phi = 0.5 * 2 * math.pi / bins
    y, x = torch.meshgrid(torch.arange(rows, dtype=torch.float32) - (rows - 1) / 2,
                          torch.arange(cols, dtype=torch.float32) - (cols - 1) / 2, indexing="ij")
    image = 3.0 * (x * math.cos(phi) + y * math.sin(phi) > distance).float()
    usable = torch.ones(rows, cols, dtype=torch.bool)
    together = _line_steps(image, usable, bins, offsets=(5, 1))
    (mean, length, steady), _ = together
    assert mean[0, distance].item() == pytest.approx(3.0, rel=0.02)
    assert abs(mean[0, distance + 20].item()) < 1e-6 and length[0, distance] > 0.5 * min(rows, cols)
    assert steady[0, distance].item() == 1.0
    for offset, shared in zip((5, 1), together):
        (alone,) = _line_steps(image, usable, bins, offsets=(offset,))
        assert all(torch.equal(a, b) for a, b in zip(alone, shared))
    for chunk in (1, 3, bins):  # angles sampled at once (the default follows the threads): the same to the bit
        chunked = _line_steps(image, usable, bins, offsets=(5, 1), chunk=chunk)
        assert all(torch.equal(a, b) for one, other in zip(chunked, together) for a, b in zip(one, other))


def test_a_dicom_shutter_is_honoured():
    image = _anatomy(2)
    shutter = torch.ones(SIZE, SIZE, dtype=torch.bool)
    shutter[:, 100:] = False
    prepared = prepare_xray(image, shutter, detect_field=False, detect_metal=False)
    assert bool(prepared.outside_field[:, 100:].all()) and not bool(prepared.outside_field[:, :100].any())
    assert float(prepared.weight[:, 98:].max()) == 0.0  # eroded by two pixels


def test_the_weight_is_eroded_by_the_same_width_of_detector_at_any_size():
    """Two pixels of a 256-pixel image: four of the same image at 512 pixels (binned by 2 for the analysis), so
    a large X-ray, registered binned, keeps the weight a 256-pixel file gets (the pose of a 2560-pixel X-ray
    moved 1 mm in depth with a narrower erosion)."""
    image = _anatomy(2)
    for factor, eroded in ((2, 2), (4, 4)):  # 256 and 512 pixels
        large = torch.kron(image, torch.ones(factor, factor))
        shutter = torch.ones_like(large, dtype=torch.bool)
        shutter[:, 100 * factor:] = False
        weight = prepare_xray(large, shutter, detect_field=False, detect_metal=False).weight
        edge = 100 * factor
        assert float(weight[:, edge - eroded:].max()) == 0.0 and float(weight[:, : edge - eroded].min()) == 1.0


def test_saturated_pixels_are_masked():
    image = _anatomy(3)
    clip = float(torch.quantile(image.flatten(), 0.95))
    clipped = image.clamp(max=clip)
    prepared = prepare_xray(clipped, detect_field=False, detect_metal=False)
    truth = image >= clip
    assert bool(prepared.saturated[truth].all())
    assert float(prepared.saturated[~truth].float().mean()) < 0.05  # only a one-pixel rim around them
    assert float(prepare_xray(image, detect_field=False, detect_metal=False).saturated.sum()) == 0.0


def test_a_k_wire_and_a_screw_are_masked_and_bone_is_kept():
    image = _anatomy(4)
    row, col = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    distance = ((col - 30) * math.sin(0.6) - (row - 20) * math.cos(0.6)).abs()  # a line through (30, 20)
    wire = (distance <= 1.2) & (row > 15) & (row < 110)
    screw = (row - 90).abs().le(3) & (col - 80).abs().le(12)
    metal_truth = wire | screw
    with_metal = image + 1.2 * wire + 0.9 * screw
    prepared = prepare_xray(with_metal, detect_field=False)
    assert float(prepared.metal[metal_truth].float().mean()) > 0.95
    assert float(prepared.weight[metal_truth].max()) == 0.0
    far = ~torch.nn.functional.max_pool2d(metal_truth[None, None].float(), 11, 1, 5)[0, 0].bool()
    assert float(prepared.metal[far].float().mean()) < 0.01  # the bright column and blobs are not metal
    assert float(prepare_xray(image, detect_field=False).metal.float().mean()) < 0.01


def test_polarity_is_detected_both_ways():
    drr = _anatomy(5)
    for reading, image in (
        ("bone-bright", 3.0 * drr + 10.0),
        ("bone-dark", 4000.0 - 900.0 * drr),
        ("intensity", 1000.0 * torch.exp(-drr)),
    ):
        shifted = torch.roll(image, shifts=(6, -5), dims=(0, 1))  # start pose a little off
        found, scores = detect_polarity(shifted, drr)
        assert found == reading, scores
        assert scores[found] > 0.8
        restored = apply_reading(image, found)
        assert float(torch.corrcoef(torch.stack([restored.flatten(), drr.flatten()]))[0, 1]) > 0.99


def test_polarity_is_detected_from_a_far_start_against_a_wider_drr():
    """The X-ray shows a part of the body far from where the start looks: the DRR on a detector
    three times as wide holds it somewhere, and every placement is tried."""
    wide = torch.nn.functional.interpolate(_anatomy(7)[None, None], scale_factor=3, mode="bilinear", align_corners=False)[0, 0]
    part = wide[10:10 + SIZE, 2 * SIZE - 15:3 * SIZE - 15]  # off-centre by most of a detector width
    for reading, image in (("bone-bright", 2.0 * part + 1.0), ("bone-dark", 50.0 - 7.0 * part)):
        found, scores = detect_polarity(image, wide)
        assert found == reading, scores
        assert scores[reading] > 0.9


def test_fill_continues_a_ramp_and_keeps_usable_pixels():
    row, col = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    ramp = 0.05 * col + 0.02 * row
    usable = torch.ones(64, 64, dtype=torch.bool)
    usable[20:40, 25:35] = False
    filled = fill_masked(ramp, usable)
    assert torch.equal(filled[usable], ramp[usable])
    assert float((filled - ramp)[~usable].abs().max()) < 0.15  # the ramp rises 0.5 across the hole
    hole_centre = filled[29:31, 29:31].mean()
    assert float(hole_centre) == pytest.approx(float(ramp[29:31, 29:31].mean()), abs=0.03)


def test_weight_removes_an_artefact_from_the_objective():
    data = torch.zeros(24, 24, 24)
    data[6:18, 9:15, 8:16] = 0.05
    data[8:16, 11:13, 10:14] = 0.2
    volume = Volume(data, torch.diag(torch.tensor([4.0, 4.0, 4.0, 1.0], dtype=torch.float64)))
    geometry = CArmGeometry(1000.0, 40, 40, (4.0, 4.0), source_to_isocenter_mm=650.0)
    pose = nominal_view("ap", volume.center_world, 650.0).camera_from_world
    from sopi.drr import Projector

    clean = Projector(volume, geometry)(pose).detach()
    artefact = clean.clone()
    artefact[2:12, 25:36] += 5.0  # something the CT cannot explain
    weight = torch.ones(40, 40)
    weight[0:14, 23:38] = 0.0  # the artefact and a two-pixel margin
    theta = torch.tensor([[0.0, 0, 0, 0, 0, 0], [3.0, -2.0, 1.0, 4.0, -3.0, 8.0]], dtype=torch.float64)
    pivot = volume.center_world

    def scores(image, xray_weight):
        problem = PoseProblem(volume, image, geometry, pose, pivot, xray_weight=xray_weight)
        return problem.similarity(theta, 1, "gc")

    with_weight = scores(artefact, weight)
    assert torch.allclose(with_weight, scores(clean, weight), atol=1e-6)  # the artefact is invisible
    assert not torch.allclose(scores(artefact, None), scores(clean, None), atol=1e-3)  # it is seen without
    assert float(with_weight[0]) > float(with_weight[1])  # and the true pose still scores best


def test_scatter_readout_of_a_flat_image_is_an_offset_and_zero_is_identity():
    from sopi.registration.problem import with_scatter

    flat = torch.full((2, 32, 40), 1.7)
    assert torch.allclose(with_scatter(flat, 0.8, 6.0), flat - math.log(1.8), atol=1e-5)  # -log(P (1 + SPR))
    image = _anatomy(6)[None]
    assert torch.allclose(with_scatter(image, 1e-9, 6.0), image, atol=1e-6)
    compressed = with_scatter(image, 1.0, 10.0)
    assert float(compressed.std()) < 0.95 * float(image.std())  # scatter lowers contrast


def test_scatter_comes_from_the_exposed_field_only():
    from sopi.registration.problem import with_scatter

    flat = torch.full((1, 40, 64), 1.2)
    primary = math.exp(-1.2)
    everywhere = torch.ones(40, 64)
    assert torch.allclose(with_scatter(flat, 0.8, 6.0, everywhere), with_scatter(flat, 0.8, 6.0), atol=1e-6)
    exposed = torch.zeros(40, 64)
    exposed[:, :32] = 1.0  # a collimator blade covers the right half
    scatter = torch.exp(-with_scatter(flat, 0.8, 6.0, exposed))[0] - primary
    assert float(scatter[exposed > 0].mean()) == pytest.approx(0.8 * primary, rel=1e-4)  # SPR over the exposed field
    row = scatter[20]
    assert float(row[4]) > float(row[28]) > float(row[36]) > float(row[60])  # falls off across the blade's edge
    assert float(row[60]) < 0.05 * float(row[4])  # and is all but gone far behind it


def test_registration_gives_the_exposed_field_only_when_switched_on(monkeypatch):
    import sopi.registration.problem as problem_module
    from sopi.io_xray import XRay

    geometry = CArmGeometry(1000.0, 8, 10, (1.0, 1.0))
    field = torch.ones(8, 10, dtype=torch.bool)
    field[:, 7:] = False
    collimated = XRay(torch.zeros(8, 10), geometry, field_mask=field)
    open_beam = XRay(torch.zeros(8, 10), geometry, field_mask=torch.ones(8, 10, dtype=torch.bool))
    assert problem_module.exposed_field(collimated) is None  # off by default
    monkeypatch.setattr(problem_module, "SCATTER_FROM_EXPOSED_FIELD", True)
    assert torch.equal(problem_module.exposed_field(collimated), field)
    assert problem_module.exposed_field(open_beam) is None and problem_module.exposed_field(XRay(torch.zeros(8, 10), geometry)) is None


def test_scatter_level_is_recovered_from_an_image_that_has_it():
    from sopi.registration.problem import with_scatter

    volume, geometry, pose, clean = _box_scene()
    for level in (0.0, 1.0):
        fixed = with_scatter(clean[None], level, 40.0 / 4.0)[0] if level else clean
        problem = PoseProblem(volume, fixed, geometry, pose, volume.center_world)
        assert problem.estimate_scatter(torch.zeros(6, dtype=torch.float64), 1, "gc") == level


def test_local_gradient_correlation_ignores_a_smooth_contrast_gain():
    from sopi.similarity import gradient_correlation, local_gradient_correlation

    moving = _anatomy(7)[None]
    row = torch.arange(SIZE, dtype=torch.float32)[:, None]
    gain = 0.4 + 1.2 * row / (SIZE - 1)  # contrast 4x higher at the bottom than at the top
    fixed = moving * gain
    local = float(local_gradient_correlation(fixed, moving))
    assert local > 0.93 and local > float(gradient_correlation(fixed, moving)) + 0.02
    assert float(local_gradient_correlation(moving, moving)) == pytest.approx(1.0, abs=1e-5)


def test_unexplained_edges_find_an_instrument_but_not_the_anatomy():
    volume, geometry, pose, clean = _box_scene(core=0.08)
    wire = torch.zeros(40, 40, dtype=torch.bool)
    wire[8:32, 30] = True
    fixed = clean + 3.0 * wire
    problem = PoseProblem(volume, fixed, geometry, pose, volume.center_world)
    found = problem.unexplained_edges(torch.zeros(6, dtype=torch.float64), 1)
    near_wire = torch.nn.functional.max_pool2d(wire[None, None].float(), 5, 1, 2)[0, 0].bool()
    assert float(found[near_wire].float().mean()) > 0.3 and not bool(found[~near_wire].any())
    assert not bool(PoseProblem(volume, clean, geometry, pose, volume.center_world).unexplained_edges(torch.zeros(6, dtype=torch.float64), 1).any())
    before = problem.similarity(torch.zeros(1, 6, dtype=torch.float64), 1, "gc")
    problem.restrict_weight(~near_wire)
    after = problem.similarity(torch.zeros(1, 6, dtype=torch.float64), 1, "gc")
    assert float(after) > float(before)  # without the wire, the true pose matches better


def _box_scene(body: float = 0.02, core: float = 0.06):
    """A 24^3 box phantom at 4 mm (body and a denser core), a 40^2 detector, the AP pose and its DRR."""
    from sopi.drr import Projector

    data = torch.zeros(24, 24, 24)
    data[2:22, 4:20, 3:21] = body
    data[6:18, 9:15, 8:16] = core
    volume = Volume(data, torch.diag(torch.tensor([4.0, 4.0, 4.0, 1.0], dtype=torch.float64)))
    geometry = CArmGeometry(1000.0, 40, 40, (4.0, 4.0), source_to_isocenter_mm=650.0)
    pose = nominal_view("ap", volume.center_world, 650.0).camera_from_world
    return volume, geometry, pose, Projector(volume, geometry)(pose).detach()


def test_a_clean_drr_of_a_cropped_ct_is_read_bone_bright(shared_data):
    """The TPTBox crop's DRR is a box on a zero background. Judged against a DRR three detectors
    wide, the nearly flat windows beyond the CT once gave correlations above 1 (1.9 for the
    bone-dark reading at the nominal pose), so its clean X-rays were read as bone-dark."""
    from sopi.io import read_ct, read_mask
    from sopi.io_xray import XRay
    from sopi.registration.preparation import prepare_fixed
    from sopi.render import render_drr, rendering_volume
    from sopi.segment import mask_centroid_world

    folder = shared_data / "tptbox_lumbar_crop"
    ct = read_ct(folder / "sub-ct_label-22_ct.nii.gz")
    spine = read_mask(folder / "sub-ct_seg-vert_label-22_msk.nii.gz", ct)
    geometry = CArmGeometry.preset("perlove-plx118f").resized(64, 64)
    nominal = nominal_view("ap", mask_centroid_world(spine), geometry.source_to_isocenter_mm)
    volume = rendering_volume(ct, "hu")
    image = render_drr(volume, geometry, nominal.camera_from_world)
    _, _, record = prepare_fixed(XRay(image, geometry), volume, nominal.camera_from_world, torch.device("cpu"))
    assert record["polarity"] == "bone-bright"
    assert all(-1.0 <= score <= 1.0 for score in record["polarity_scores"].values())
    assert record["polarity_scores"]["bone-bright"] > record["polarity_scores"]["bone-dark"] + 0.2


def test_anatomy_at_the_border_of_an_image_of_mostly_air_is_not_taken_for_a_blade():
    """A small CT crop seen from the side: air (a constant, saturated) fills the centre and the crop's body
    touches the left border with a straight edge. Blades are told from anatomy by being brighter than the
    centre's anatomy, and here the centre has none: the body is kept. The same body beside a centre that
    does show anatomy, shifted +3 (a blade), is still found."""
    row, col = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    body = col < 40
    thickness = 1.0 + 3.0 * (40.0 - col) / 40.0  # the body thins towards its edge, which the central disc reaches
    image = torch.where(body, thickness + 0.2 * _anatomy(4) + 0.2 * torch.sin(row / 5.0), torch.zeros(SIZE, SIZE))
    prepared = prepare_xray(image, detect_metal=False)
    assert bool(prepared.saturated[~body].float().mean() > 0.9)  # the air is the saturated direct exposure
    assert float(prepared.outside_field[body].float().mean()) < 0.05
    assert float(prepared.weight[body].mean()) > 0.8  # kept, but for the eroded rim
    blade = torch.where(body, _anatomy(4) + 3.0, _anatomy(4))
    assert float(prepare_xray(blade, detect_metal=False).outside_field[body].float().mean()) > 0.95


def test_the_edges_tell_an_inverted_x_ray_with_a_bright_blade():
    """The sample CT seen off its start by a few degrees and millimetres, with a collimator blade bright in the
    image as stored. The edges' scores (``_gradient_scores``) favour the reading that shows bone bright, each
    way, and the coarse scores never favour a wrong reading by their margin; the registration re-reads the inverted image,
    whose edges clear ``_GRADIENT_MARGIN``, and keeps the bone-bright one."""
    from sopi.io import mask_from_labels
    from sopi.io_xray import XRay
    from sopi.registration import preparation
    from sopi.render import render_drr, rendering_volume
    from sopi.sample_data import load_sample
    from sopi.segment import mask_centroid_world

    ct, labels = load_sample()
    geometry = CArmGeometry.preset("perlove-plx118f")  # 256 pixels: judged at 64
    start = nominal_view("ap", mask_centroid_world(mask_from_labels(labels)), geometry.source_to_isocenter_mm)
    attenuation = rendering_volume(ct, "hu")
    drr = render_drr(attenuation, geometry, start.pose(torch.tensor([-3.0, 2.0, -4.0, -5.0, 7.0, -10.0], dtype=torch.float64)))
    blade = torch.zeros_like(drr, dtype=torch.bool)
    blade[:, :36] = True
    bright = torch.where(blade, drr.max() * 1.3, drr)  # the blade's shadow: more attenuation than any ray through the body
    cpu = torch.device("cpu")
    expected = {"bone-bright": bright, "bone-dark": float(bright.max()) * 1.1 - bright, "intensity": torch.exp(-bright)}
    for reading, image in expected.items():
        judgement = preparation._polarity_scores(XRay(image, geometry), attenuation, start.camera_from_world, cpu)
        others = max(score for name, score in judgement.edges.items() if name != "bone-bright")
        margin = judgement.edges["bone-bright"] - others if reading == "bone-bright" else others - judgement.edges["bone-bright"]
        assert margin >= 0.15, judgement.edges
        right = {"bone-bright"} if reading == "bone-bright" else {"bone-dark", "intensity"}  # either reverses the image
        for coarse in (judgement.fills, judgement.field_masked):  # the coarse pattern never re-reads it the wrong way
            wrong = max(score for name, score in coarse.items() if name not in right)
            assert wrong - max(coarse[name] for name in right) < preparation._POLARITY_MARGIN, coarse
        if reading == "intensity":
            continue
        prepared, _, record = preparation.prepare_fixed(XRay(image, geometry), attenuation, start.camera_from_world, cpu)
        assert record["polarity"] == reading, record
        assert record["polarity_scores_edges"] == {name: round(value, 3) for name, value in judgement.edges.items()}
        inside = ~blade & (prepared.image.abs() > 0)
        assert float(torch.corrcoef(torch.stack([prepared.image[inside], drr[inside]]))[0, 1]) > 0.9  # bone bright again


def test_the_edges_re_read_by_their_margin_and_otherwise_only_where_the_coarse_judgements_and_the_edges_agree():
    from sopi.registration.preparation import _GRADIENT_MARGIN, _Judgement, _reading

    coarse_dark = {"bone-bright": 0.5, "bone-dark": 0.9}  # both coarse weightings would re-read
    coarse_bright = {"bone-bright": 0.9, "bone-dark": 0.5}
    clear = _GRADIENT_MARGIN + 0.01
    assert _reading([_Judgement(coarse_bright, coarse_bright, None, {"bone-bright": 0.3, "bone-dark": 0.3 + clear})]) == "bone-dark"
    assert _reading([_Judgement(coarse_bright, coarse_bright, None,
                                {"bone-bright": 0.3, "bone-dark": 0.35, "intensity": 0.3 + clear})]) == "intensity"
    assert _reading([_Judgement(coarse_dark, coarse_dark, None, {"bone-bright": 0.3 + clear, "bone-dark": 0.3})]) == "bone-bright"
    leaning_dark = {"bone-bright": 0.4, "bone-dark": 0.4 + _GRADIENT_MARGIN / 2}
    leaning_bright = {"bone-bright": 0.4 + _GRADIENT_MARGIN / 2, "bone-dark": 0.4}
    assert _reading([_Judgement(coarse_dark, coarse_dark, None, leaning_dark)]) == "bone-dark"  # both cues say so
    assert _reading([_Judgement(coarse_dark, coarse_dark, None, leaning_bright)]) == "bone-bright"
    assert _reading([_Judgement(coarse_bright, coarse_bright, None, leaning_dark)]) == "bone-bright"
    assert _reading([_Judgement(coarse_dark, coarse_bright, None, leaning_dark)]) == "bone-bright"  # the coarse two disagree
    assert _reading([_Judgement(coarse_dark, coarse_dark, None)]) == "bone-dark"  # not judged by its edges
    assert _reading([]) == "bone-bright"


def test_edges_that_lean_short_of_the_margin_leave_the_other_readings_open():
    from sopi.registration.preparation import _GRADIENT_MARGIN, _GRADIENT_OPEN, _Judgement, _alternatives, _reading

    coarse_dark, coarse_bright = {"bone-bright": 0.5, "bone-dark": 0.9}, {"bone-bright": 0.9, "bone-dark": 0.5}
    between = (_GRADIENT_OPEN + _GRADIENT_MARGIN) / 2

    def judged(coarse, lean):
        views = [_Judgement(coarse, coarse, None, {"bone-bright": 0.4, "bone-dark": 0.4 + lean, "intensity": 0.4 + lean / 2})]
        reading = _reading(views)
        return reading, _alternatives(views, reading)

    assert judged(coarse_bright, between) == ("bone-bright", ("bone-dark", "intensity"))  # the best edges first
    assert judged(coarse_bright, _GRADIENT_OPEN / 2) == ("bone-bright", ())  # too little lean: nothing open
    assert judged(coarse_bright, -between) == ("bone-bright", ())  # leaning bright
    assert judged(coarse_bright, _GRADIENT_MARGIN + 0.01) == ("bone-dark", ())  # taken outright
    assert judged(coarse_dark, _GRADIENT_OPEN / 2) == ("bone-dark", ("bone-bright",))  # re-read by the coarse judgements
    assert judged(coarse_dark, between) == ("bone-dark", ("bone-bright",))
    assert _alternatives([_Judgement(coarse_dark, coarse_dark, None)], "bone-dark") == ()  # not judged by its edges
    assert _alternatives([], "bone-bright") == ()


def test_the_readings_left_closed_are_the_rest_the_best_edges_first():
    """What the registration tries only where no reading chosen explains the image: every reading neither chosen nor
    left open, by its edges (by the coarse pattern where the edges were not judged); nothing where nothing was judged."""
    from sopi.registration.preparation import _GRADIENT_MARGIN, _GRADIENT_OPEN, _Judgement, _alternatives, _closed, _reading

    coarse = {"bone-bright": 0.9, "bone-dark": 0.5, "intensity": 0.7}
    for lean, closed in ((_GRADIENT_OPEN / 2, ("intensity", "bone-dark")), (-0.1, ("intensity", "bone-dark")),
                         ((_GRADIENT_OPEN + _GRADIENT_MARGIN) / 2, ()), (_GRADIENT_MARGIN + 0.01, ("bone-dark", "bone-bright"))):  # intensity outright
        edges = {"bone-bright": 0.4, "bone-dark": 0.4 + lean, "intensity": 0.4 + lean + 0.01}
        views = [_Judgement(coarse, coarse, None, edges)]
        reading = _reading(views)
        chosen = (reading, *_alternatives(views, reading))
        assert _closed(views, chosen) == closed
        assert set(chosen) | set(closed) == set(edges) and not set(chosen) & set(closed)
    assert _closed([_Judgement(coarse, coarse, None)], ("bone-bright",)) == ("intensity", "bone-dark")  # by the coarse pattern
    assert _closed([], ("bone-bright",)) == ()


def test_an_image_positive_but_for_its_zeros_is_read_as_intensities_too():
    """A display image (counts to a gamma, black outside the field) has an intensity reading: the logarithm, its zeros
    at its smallest positive value; an image mostly zero, or with negative values, has none."""
    from sopi.xray_prep import readings

    counts = torch.exp(-torch.linspace(0.5, 4.0, 64))[None].repeat(64, 1)
    display = counts ** 0.7
    display[:, :8] = 0.0  # outside the field
    intensity = readings(display)["intensity"]
    assert torch.allclose(intensity[:, 8:], -torch.log(display[:, 8:] / display.max()))
    offset = intensity[:, 8:] - 0.7 * -torch.log(counts[:, 8:])  # the line integral times the gamma, plus a constant
    assert float(offset.max() - offset.min()) < 1e-5
    assert torch.allclose(intensity[:, :8], intensity[:, 8:].max().expand(64, 8))  # the zeros: the smallest positive value
    assert torch.equal(apply_reading(display, "intensity"), intensity)
    mostly_zero = torch.zeros(64, 64)
    mostly_zero[:, :8] = display[:, 8:16]
    assert "intensity" not in readings(mostly_zero) and "intensity" not in readings(display - 0.5)
    positive = counts + 0.01
    assert torch.equal(readings(positive)["intensity"], -torch.log(positive / positive.max()))  # as before


def test_a_reading_asked_for_is_applied_without_a_judgement():
    from sopi.io_xray import XRay
    from sopi.registration.preparation import prepare_fixed
    from sopi.render import render_drr

    volume, geometry, pose, _ = _box_scene()
    drr = render_drr(volume, geometry, pose)
    image = float(drr.max()) * 1.2 - drr  # bone dark
    judged = prepare_fixed(XRay(image, geometry), volume, pose, torch.device("cpu"))[2]
    for reading in ("bone-dark", "bone-bright"):
        prepared, weight, record = prepare_fixed(XRay(image, geometry), volume, pose, torch.device("cpu"), reading=reading)
        assert record["polarity"] == reading and record["polarity_source"] == "asked for"
        assert not any(key.startswith("polarity_scores") for key in record)  # nothing judged
        inside = weight > 0
        correlation = float(torch.corrcoef(torch.stack([prepared.image[inside], drr[inside]]))[0, 1])
        assert (correlation > 0.9) if reading == "bone-dark" else (correlation < -0.9)
    assert "polarity_scores" in judged and judged["polarity_source"] == "drr-comparison"


def test_the_judgement_sees_each_reading_as_the_registration_reads_it():
    """``readings`` (what the polarity judgement compares) and ``apply_reading`` (what the registration then uses) give
    the same image for every reading, also where a positive image holds values under a millionth of its maximum (the
    logarithm is clamped there: a raw image's dark corners must not become edges far beyond any attenuation)."""
    from sopi.xray_prep import readings

    image = torch.exp(-torch.linspace(0.5, 4.0, 64))[None].repeat(64, 1)
    image[:4, :4] = 1e-9 * float(image.max())  # positive, far under the clamp
    options = readings(image)
    assert set(options) == {"bone-bright", "bone-dark", "intensity"}
    for name, seen in options.items():
        assert torch.equal(seen, apply_reading(image, name))
    assert float(options["intensity"].max()) == pytest.approx(-math.log(1e-6), rel=1e-5)  # clamped, not -log(1e-9)
