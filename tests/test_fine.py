"""SOPI's fine module: composite encoder, masked feature distance, geodesic gradient,
double-backward training, inference and the fine / sopi / sopi+opt pipelines."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sopi.distances import geodesic_gradient
from sopi.errors import InputError
from sopi.geometry import CArmGeometry, nominal_view, paper_matrix
from sopi.nets.encoder import CompositeEncoder, EncoderConfig, FineNet, SplitAttention
from sopi.nets.fine_loss import direction_loss, masked_feature_distance
from sopi.nets.model_file import load_model, save_model
from sopi.sample_data import load_sample, sample_ct_path, sample_vertebrae_path
from sopi.training.distributed import DistContext
from sopi.training.fine import FineSettings, FineTask
from sopi.training.trainer import OptimSettings, train

TINY = EncoderConfig(image_size=32, width=4, branch_width=8, embed_channels=8, radix=2)
GEOMETRY = CArmGeometry.preset("perlove-plx118f")


# --------------------------------------------------------------------------- network and losses


@pytest.mark.parametrize("composite", [True, False])
def test_encoder_shapes(composite):
    config = EncoderConfig(**{**TINY.to_dict(), "composite": composite})
    encoder = CompositeEncoder(config)
    assert encoder(torch.randn(3, 1, 32, 32)).shape == (3, 8, 8, 8)
    assert encoder(torch.randn(1, 1, 48, 40)).shape == (1, 8, 12, 10)  # fully convolutional
    with pytest.raises(InputError, match="expected"):
        encoder(torch.randn(2, 32, 32))
    with pytest.raises(InputError, match="branch_width"):
        EncoderConfig(branch_width=6, radix=2)


def test_split_attention_with_one_split_is_a_plain_convolution():
    torch.manual_seed(0)
    block = SplitAttention(8, radix=1)
    features = torch.randn(2, 8, 6, 6)
    expected = torch.relu(block.norm(block.conv(features)))  # softmax over a single split is 1
    assert torch.allclose(block(features), expected, atol=1e-6)
    two = SplitAttention(8, radix=2)
    assert two(features).shape == (2, 8, 6, 6)


def test_fine_net_encoders_do_not_share_weights():
    net = FineNet(TINY)
    moving = {name: value for name, value in net.moving.named_parameters()}
    assert all(value.data_ptr() != dict(net.fixed.named_parameters())[name].data_ptr() for name, value in moving.items())


def test_masked_feature_distance_is_the_masked_mean_of_per_cell_norms():
    fixed = torch.zeros(1, 2, 4, 4)
    moving = torch.zeros(1, 2, 4, 4)
    moving[0, 0, :2] = 3.0
    moving[0, 1, :2] = 4.0  # norm 5 in the top half
    moving[0, 0, 2:] = 100.0  # far off in the bottom half
    mask = torch.zeros(1, 16, 16)
    mask[0, :8] = 1  # the top half of the image
    assert float(masked_feature_distance(moving, fixed, mask)[0]) == pytest.approx(5.0)
    assert float(masked_feature_distance(moving, fixed, torch.zeros(1, 16, 16))[0]) == pytest.approx((8 * 5 + 8 * 100) / 16)
    assert float(masked_feature_distance(moving, fixed, None)[0]) == pytest.approx((8 * 5 + 8 * 100) / 16)


def test_direction_loss_compares_unit_vectors():
    geodesic = torch.tensor([[1.0, 2.0, 3.0, -1.0, 0.5, 2.0]])
    assert float(direction_loss(5.0 * geodesic, geodesic)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(direction_loss(-geodesic, geodesic)[0]) == pytest.approx(4.0)
    orthogonal = torch.tensor([[2.0, -1.0, 0.0, 0.5, 1.0, 0.0]])
    assert float(direction_loss(orthogonal, geodesic)[0]) == pytest.approx(2 * np.sqrt(2.0), rel=1e-6)


def test_geodesic_gradient_matches_finite_differences_of_geomstats():
    backend = pytest.importorskip("geomstats.backend")
    from geomstats.geometry.special_euclidean import SpecialEuclidean

    se3 = SpecialEuclidean(n=3, equip=True)
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        theta = torch.randn(6, generator=generator, dtype=torch.float64) * torch.tensor([15, 15, 15, 20, 20, 20.0], dtype=torch.float64)
        target = torch.randn(6, generator=generator, dtype=torch.float64) * torch.tensor([15, 15, 15, 20, 20, 20.0], dtype=torch.float64)

        def half_squared(t: torch.Tensor) -> float:
            return 0.5 * float(se3.metric.dist(backend.array(paper_matrix(t).numpy()), backend.array(paper_matrix(target).numpy()))) ** 2

        step = 1e-4
        numeric = torch.tensor([
            (half_squared(theta + step * e) - half_squared(theta - step * e)) / (2 * step) for e in torch.eye(6, dtype=torch.float64)
        ], dtype=torch.float64)
        ours = geodesic_gradient(theta, target)
        assert torch.allclose(ours, numeric, rtol=1e-4, atol=1e-6)
        assert torch.allclose(ours[3:], theta[3:] - target[3:])  # the translation part is the offset
    torch.set_default_dtype(torch.float32)  # geomstats switches it


def test_double_backward_through_the_projector_equals_the_explicit_jacobian():
    """d|V|^2/dW with V = dL/dtheta and L = sum(W * DRR(theta)) is 2 J V (J the DRR's Jacobian)."""
    from sopi.drr import Projector
    from sopi.render import rendering_volume

    ct, _ = load_sample()
    small = GEOMETRY.resized(16, 16)
    projector = Projector(rendering_volume(ct, "hu"), small, step_mm=3.0)
    view = nominal_view("ap", ct.center_world, small.source_to_isocenter_mm)
    start = torch.tensor([3.0, -2.0, 1.0, 4.0, -5.0, 6.0], dtype=torch.float64)
    weights = torch.randn(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float32, requires_grad=True)
    theta = start.clone().requires_grad_(True)
    (learned,) = torch.autograd.grad((weights * projector(view.pose(theta[None]))[0]).sum(), theta, create_graph=True)
    learned.square().sum().backward()
    step = 0.05
    with torch.no_grad():
        jacobian = torch.stack([
            (projector(view.pose((start + step * e)[None]))[0] - projector(view.pose((start - step * e)[None]))[0]) / (2 * step)
            for e in torch.eye(6, dtype=torch.float64)
        ], dim=-1)  # (16, 16, 6)
    expected = 2 * (jacobian.double() @ learned.detach())
    got = weights.grad.double().flatten()
    assert float(torch.nn.functional.cosine_similarity(got, expected.flatten(), dim=0)) > 0.99
    assert float((got - expected.flatten()).norm() / expected.norm()) < 0.1


# --------------------------------------------------------------------------- training


def _tiny_factory(settings: FineSettings | None = None):
    settings = settings or FineSettings(batch_size=4, step_mm=4.0)
    pairs = [(sample_ct_path(), sample_vertebrae_path())]
    return lambda context: FineTask(pairs, GEOMETRY, TINY, settings, context)


def test_double_backward_training_turns_the_learned_gradient_towards_the_geodesic_one():
    """On a fixed batch of pose pairs, minimising the direction loss by the second backward
    pass makes the encoders' pose gradient point along the geodesic one."""
    from sopi.training.augmentation import AugmentSettings

    task = _tiny_factory(FineSettings(batch_size=4, step_mm=4.0, augment=AugmentSettings(enabled=False)))(DistContext())
    torch.manual_seed(0)
    network = FineNet(TINY)

    def batch():
        return task.step_loss(network, torch.Generator().manual_seed(3), 0)

    before_loss, before = batch()
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(60):
        loss, _ = batch()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after_loss, after = batch()
    assert float(after_loss.detach()) < 0.5 * float(before_loss.detach())
    assert after["cosine_rotation"] > before["cosine_rotation"] + 0.3
    assert after["cosine_translation"] > before["cosine_translation"] + 0.3


def test_fine_training_loop_writes_a_loadable_model(tmp_path):
    train(_tiny_factory(), tmp_path, OptimSettings(steps=3, log_every=1), model_name="fine", device="cpu")
    assert load_model(tmp_path / "fine.pt").kind == "fine"
    assert (tmp_path / "loss.png").is_file() and "cosine_rotation" in (tmp_path / "log.csv").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- inference and pipelines


def _case(theta: torch.Tensor):
    from sopi.io_xray import XRay
    from sopi.render import render_drr, rendering_volume
    from sopi.segment import mask_centroid_world

    ct, labels = load_sample()
    spine = labels.with_data((labels.data != 0).to(torch.uint8))
    view = nominal_view("ap", mask_centroid_world(spine), GEOMETRY.source_to_isocenter_mm)
    small = GEOMETRY.resized(64, 64)
    return ct, spine, view, XRay(render_drr(rendering_volume(ct, "hu"), small, view.pose(theta), step_mm=2.0), small)


@pytest.mark.parametrize(("masked_loss", "moving_image"), [(True, "spine"), (False, "spine"), (True, "ct")])
def test_fine_objective_is_the_masked_distance_of_the_documented_inputs(tmp_path, masked_loss, moving_image):
    """L_N of the rendered moving DRR (the spine-only CT, or the whole CT for ``moving_image="ct"``)
    against the resized X-ray: over the projected mask M' (eq. 6), or over every cell for the
    EL-off ablation (``masked_loss=False``)."""
    from sopi.io_xray import resize_image
    from sopi.nets.inputs import standardize_xray
    from sopi.registration.fine import FineObjective
    from sopi.render import render_drr, rendering_volume

    torch.manual_seed(1)
    config = EncoderConfig(**{**TINY.to_dict(), "masked_loss": masked_loss, "moving_image": moving_image})
    model = load_model(save_model(tmp_path / "fine.pt", FineNet(config), "fine", GEOMETRY, "ap"))
    assert model.network.config.masked_loss is masked_loss and model.network.config.moving_image == moving_image
    ct, spine, view, xray = _case(torch.tensor([2.0, -1.0, 3.0, 4.0, 2.0, -5.0], dtype=torch.float64))
    attenuation = rendering_volume(ct, "hu")
    objective = FineObjective(model, attenuation, spine, view, xray.image, xray.geometry, step_mm=2.0)
    theta = torch.tensor([[1.0, 0.0, 0.0, 0.0, 3.0, 0.0]], dtype=torch.float64)
    detector = xray.geometry.resized(32, 32)
    spine_only = attenuation.with_data(attenuation.data * (spine.data != 0))
    mask = render_drr(spine.with_data(spine.data.float()), detector, view.pose(theta[0]), step_mm=2.0)
    with torch.no_grad():
        embedded_fixed = model.network.fixed(standardize_xray(resize_image(xray.image, (32, 32)))[None, None])

        def distance(volume, weights):
            moving = render_drr(volume, detector, view.pose(theta[0]), step_mm=2.0)
            return masked_feature_distance(model.network.moving(standardize_xray(moving)[None, None]), embedded_fixed, weights)

        masks = (mask[None], None) if masked_loss else (None, mask[None])
        volumes = (spine_only, attenuation) if moving_image == "spine" else (attenuation, spine_only)
        expected = distance(volumes[0], masks[0])
        others = [distance(volumes[0], masks[1]), distance(volumes[1], masks[0])]
    assert float(objective(theta)[0]) == pytest.approx(float(expected[0]), rel=1e-4)
    for other in others:  # both switches matter here
        assert float(objective(theta)[0]) != pytest.approx(float(other[0]), rel=1e-3)


def test_moving_image_must_be_known_and_init_may_change_it(tmp_path):
    """An unknown moving image is refused by name; ``--init`` may start a whole-CT variant from a
    spine-image model (the weights' shapes are the same) and the weights are copied, while a
    model of another width is still refused."""
    with pytest.raises(InputError, match="moving_image must be one of spine, ct"):
        EncoderConfig(**{**TINY.to_dict(), "moving_image": "bone"})
    torch.manual_seed(3)
    start = save_model(tmp_path / "start.pt", FineNet(TINY), "fine", GEOMETRY, "ap")
    whole = replace(TINY, moving_image="ct")
    pairs = [(sample_ct_path(), sample_vertebrae_path())]
    settings = FineSettings(batch_size=1, step_mm=6.0)
    factory = lambda config: lambda context: FineTask(pairs, GEOMETRY, config, settings, context)  # noqa: E731
    tiny_lr = OptimSettings(steps=1, base_lr=1e-12, max_lr=1e-12)
    train(factory(whole), tmp_path / "tuned", tiny_lr, model_name="fine", initial_weights=start, device="cpu")
    tuned, given = load_model(tmp_path / "tuned" / "fine.pt"), load_model(start)
    assert tuned.network.config.moving_image == "ct" and tuned.metadata["training"]["initial_weights"]["file"] == "start.pt"
    for name, weights in given.network.state_dict().items():
        torch.testing.assert_close(tuned.network.state_dict()[name], weights, atol=1e-9, rtol=0)
    with pytest.raises(InputError, match="another configuration"):
        train(factory(replace(whole, width=8)), tmp_path / "wide", tiny_lr, model_name="fine", initial_weights=start, device="cpu")


@pytest.mark.parametrize("method", ["fine", "sopi", "sopi+opt"])
def test_pipelines_run_end_to_end_on_the_sample_ct(tmp_path, method):
    from sopi.nets.rtpi import RTPI, RTPIConfig
    from sopi.registration import register

    torch.manual_seed(2)
    fine = save_model(tmp_path / "fine.pt", FineNet(TINY), "fine", GEOMETRY, "ap")
    rtpi = save_model(tmp_path / "rtpi.pt", RTPI(RTPIConfig(xray_size=32, ct_size=8, width=4, ct_channels=2, local_widths=(8, 8), head_hidden=8)), "rtpi", GEOMETRY, "ap")
    ct, spine, view, xray = _case(torch.tensor([2.0, -1.0, 1.0, 3.0, -2.0, 4.0], dtype=torch.float64))
    seen = []
    result = register(
        ct, xray, initial_pose=view.camera_from_world, mask=spine, method=method, model=rtpi, fine_model=fine,
        progress=lambda fraction, message: seen.append(message),
    )
    stages = [record["stage"] for record in result.stages]
    assert stages[: 2 if method != "fine" else 1] == (["rtpi", "fine"] if method != "fine" else ["fine"])
    assert torch.allclose(result.camera_from_world, view.pose(result.params), atol=1e-9)
    assert any(message.startswith("fine") for message in seen)
    if method == "sopi+opt":  # the polish: the classical stages follow
        assert stages[2:] == ["cma-es gradient-ncc 1/4", "adam gc 1/2", "depth-scan gradient-ncc 1/2", "adam gradient-ncc 1/2"]


def test_learned_methods_refuse_missing_or_wrong_models(tmp_path):
    from sopi.registration import register

    ct, spine, view, xray = _case(torch.zeros(6, dtype=torch.float64))
    fine = save_model(tmp_path / "fine.pt", FineNet(TINY), "fine", GEOMETRY, "ap")
    with pytest.raises(InputError, match="needs a trained FINE model"):
        register(ct, xray, initial_pose=view.camera_from_world, mask=spine, method="fine")
    with pytest.raises(InputError, match="needs a 'rtpi' model"):
        register(ct, xray, initial_pose=view.camera_from_world, mask=spine, method="sopi", model=fine, fine_model=fine)


def test_cli_train_fine_and_register_sopi(tmp_path):
    from sopi.cli import main

    out = tmp_path / "fine"
    assert main([
        "train", "fine", "--ct", str(sample_ct_path()), "--mask", str(sample_vertebrae_path()), "--out", str(out), "--steps", "2",
        "--batch-size", "2", "--image-size", "32", "--width", "4", "--branch-width", "8", "--embed-channels", "8", "--step-mm", "4",
        "--no-mask", "--moving-image", "ct", "--loss", "axis-sign", "--one-axis-fraction", "0.5", "--device", "cpu", "--quiet",
    ]) == 0
    recorded = json.loads((out / "fine.json").read_text(encoding="utf-8"))
    assert recorded["kind"] == "fine" and recorded["config"]["masked_loss"] is False
    assert recorded["config"]["moving_image"] == "ct" and recorded["training"]["task"]["loss"] == "axis-sign"
    assert recorded["training"]["task"]["one_axis_fraction"] == 0.5
    case = tmp_path / "case"
    assert main(["simulate", str(sample_ct_path()), "--mask", str(sample_vertebrae_path()), "--out", str(case)]) == 0
    from sopi.sample_data import sample_rtpi_model_path

    result = tmp_path / "result.json"
    assert main([
        "register", "--ct", str(sample_ct_path()), "--xray", str(case / "xray.mha"), "--mask", str(sample_vertebrae_path()),
        "--method", "sopi", "--model", str(sample_rtpi_model_path()), "--fine-model", str(out / "fine.pt"), "--out", str(result),
        "--device", "cpu", "--quiet",
    ]) == 0
    stages = [stage["stage"] for stage in json.loads(result.read_text(encoding="utf-8"))["stages"]]
    # RTPI, then the fine module; a flagged result (a 2-step network) may take a second look with the same two stages
    assert stages[:2] == ["rtpi", "fine"] and all(stage.split(": ")[-1] in ("rtpi", "fine") for stage in stages)


def test_training_settings_round_trip_through_a_model_json():
    from sopi.training.augmentation import AugmentSettings
    from sopi.training.rtpi import RTPISettings

    for settings in (
        FineSettings(batch_size=2, target_sd=(10.0, 5.0), offset_sd=(3.0, 10.0), step_mm=4.0, augment=AugmentSettings(gamma=(0.9, 1.1))),
        RTPISettings(batch_size=8, alpha=0.5, protocol="paper", augment=AugmentSettings(enabled=False, photons=(1e3, 1e4))),
    ):
        recorded = json.loads(json.dumps(settings.to_dict()))
        assert recorded["augment"]["gamma"] == list(settings.augment.gamma)
        assert type(settings).from_dict(recorded) == settings  # tuples come back as tuples


# --------------------------------------------------------------------------- the shipped model


def test_shipped_fine_model_points_towards_the_target_on_unseen_pairs():
    """The encoders trained for the sample CT (card: Resources/Models/fine_sample_ct.md): on pose
    pairs from seeds training never drew, their pose gradient leans towards the geodesic one."""
    from sopi.sample_data import sample_fine_model_path
    from sopi.training.augmentation import AugmentSettings

    model = load_model(sample_fine_model_path())
    assert model.kind == "fine" and model.view == "ap" and model.geometry == GEOMETRY
    settings = replace(FineSettings.from_dict(model.metadata["training"]["task"]), augment=AugmentSettings(enabled=False))
    task = FineTask([(sample_ct_path(), sample_vertebrae_path())], GEOMETRY, model.network.config, settings, DistContext())
    network = model.network.requires_grad_(True)  # the direction needs d L_N / d theta only; weights stay as shipped
    cosines = [task.step_loss(network, torch.Generator().manual_seed(seed), 0)[1] for seed in range(9000, 9004)]
    assert np.mean([c["cosine_rotation"] for c in cosines]) > 0.15
    assert np.mean([c["cosine_translation"] for c in cosines]) > 0.25


def test_one_axis_pairs_keep_one_drawn_axis_and_leave_the_paper_draws_alone():
    """A fraction of 0 draws exactly the all-axes normal offsets (same random stream); a fraction
    of 1 keeps, in every row, one axis of that same draw and zeroes the other five; in between,
    about that share of rows is one-axis, spread over the six axes."""
    from sopi.training.fine import start_offsets

    spread = (3.0, 10.0)
    sd = torch.tensor([3.0] * 3 + [10.0] * 3, dtype=torch.float64)
    expected = torch.randn(500, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * sd
    assert torch.equal(start_offsets(500, spread, 0.0, torch.Generator().manual_seed(4)), expected)
    single = start_offsets(500, spread, 1.0, torch.Generator().manual_seed(4))
    nonzero = single != 0
    assert torch.equal(nonzero.sum(dim=1), torch.ones(500, dtype=torch.long))
    assert torch.equal(single[nonzero], expected[nonzero])  # the kept axis keeps its all-axes value
    per_axis = nonzero.sum(dim=0).double() / 500
    assert torch.all((per_axis > 1 / 6 - 0.06) & (per_axis < 1 / 6 + 0.06))
    mixed = start_offsets(4000, spread, 0.3, torch.Generator().manual_seed(5))
    one_axis_rows = float(((mixed != 0).sum(dim=1) == 1).double().mean())
    assert 0.27 < one_axis_rows < 0.33
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="one_axis_fraction must lie in"):
            FineSettings(one_axis_fraction=bad)


def test_axis_sign_loss_counts_agreeing_axes_whatever_their_scale():
    """In a batch of equal pairs each axis scores 1 - tanh(1) when its sign agrees and 1 + tanh(1)
    when not, so one wrong axis of six costs the same whether it is the largest or a tiny one
    (depth), unlike eq. 7, which cannot tell a tiny axis's sign."""
    from sopi.nets.fine_loss import axis_sign_loss

    t = float(np.tanh(1.0))
    geodesic = torch.tensor([[1.0, -2.0, 3.0, -4.0, 5.0, -5.0]] * 4, dtype=torch.float64)
    learned = geodesic * torch.tensor([1e3, 1e3, 1e3, 1e3, 1e3, 1e-3], dtype=torch.float64)  # depth 1e6 times weaker here
    assert axis_sign_loss(learned, geodesic) == pytest.approx(torch.full((4,), 1 - t, dtype=torch.float64))
    assert axis_sign_loss(-learned, geodesic) == pytest.approx(torch.full((4,), 1 + t, dtype=torch.float64))
    one_wrong = (5 * (1 - t) + (1 + t)) / 6
    for axis in (4, 5):  # the largest axis, then the tiny one
        wrong = learned.clone()
        wrong[:, axis] *= -1
        assert float(axis_sign_loss(wrong, geodesic).mean()) == pytest.approx(one_wrong, rel=1e-9)
    tiny_wrong = learned.clone()
    tiny_wrong[:, 5] *= -1
    # eq. 7 cannot tell the tiny axis's sign: right or wrong, the same loss
    assert direction_loss(tiny_wrong, geodesic) == pytest.approx(direction_loss(learned, geodesic), abs=1e-5)
    assert float(axis_sign_loss(tiny_wrong, geodesic).mean()) > float(axis_sign_loss(learned, geodesic).mean()) + 0.2
    with pytest.raises(InputError, match="loss must be one of direction, axis-sign"):
        FineSettings(loss="sign")
