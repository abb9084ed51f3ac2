"""`sopi prepare`: networks fine-tuned for one CT from the shipped ones, and `register --models`."""

from __future__ import annotations

import json

import pytest
import torch

from sopi.cli import main
from sopi.errors import InputError
from sopi.geometry import CArmGeometry, nominal_view
from sopi.io import read_mask, write_volume
from sopi.io_xray import XRay
from sopi.nets.model_file import load_model
from sopi.nets.rtpi import RTPI
from sopi.nets.shipped import PRETRAINED_MODELS, other_ct_warning, pretrained_model, shipped_model
from sopi.registration import register
from sopi.render import render_drr, rendering_volume
from sopi.sample_data import load_sample
from sopi.segment import mask_centroid_world
from sopi.training.prepare import MODELS_INDEX, prepare_models, read_prepared
from sopi.training.rtpi import RTPISettings, RTPITask
from sopi.training.trainer import OptimSettings, train
from sopi.volume import Volume


def _crop(volume: Volume, start: int, size: int) -> Volume:
    """A cube of ``volume`` (same spacing and world positions), so another CT than the sample."""
    shift = torch.eye(4, dtype=torch.float64)
    shift[:3, 3] = start
    data = volume.data[start:start + size, start:start + size, start:start + size].clone()
    return Volume(data, volume.world_from_index @ shift)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    sample_ct, labels = load_sample()
    ct, mask = _crop(sample_ct, 16, 96), _crop(labels, 16, 96)
    mask = mask.with_data((mask.data != 0).to(torch.uint8))
    out = tmp_path_factory.mktemp("prepared")
    models = prepare_models(ct, out, mask=mask, minutes=0.02, device="cpu", seed=3)
    return {"ct": ct, "mask": mask, "out": out, "models": models}


def _distance(a: dict, b: dict) -> float:
    return float(sum((a[key].float() - b[key].float()).square().sum() for key in a).sqrt())


def test_prepare_writes_loadable_models_fine_tuned_from_the_population_ones(prepared):
    out, models = prepared["out"], prepared["models"]
    index = json.loads((out / MODELS_INDEX).read_text(encoding="utf-8"))
    assert (out / index["rtpi"]).resolve() == models.rtpi.resolve() and (out / index["fine"]).resolve() == models.fine.resolve()
    for kind, path in (("rtpi", models.rtpi), ("fine", models.fine)):
        # the default start is the shipped population model, not the sample CT's
        assert pretrained_model(kind) == PRETRAINED_MODELS[kind] != shipped_model(kind)
        loaded, shipped = load_model(path), load_model(pretrained_model(kind))
        assert loaded.kind == kind
        # the JSON records what it started from, and it did start there: a few small steps from
        # the shipped weights, far closer to them than a fresh network is
        assert loaded.metadata["training"]["initial_weights"]["sha256"] == shipped.metadata["sha256"]
        assert loaded.metadata["training"]["steps_done"] >= 1
        moved = _distance(loaded.network.state_dict(), shipped.network.state_dict())
        assert moved > 0
        if kind == "rtpi":
            torch.manual_seed(0)
            fresh = RTPI(loaded.network.config).state_dict()
            assert moved < 0.05 * _distance(fresh, shipped.network.state_dict())
        # trained on this CT: no "another CT" warning, unlike the shipped model
        assert other_ct_warning(path, prepared["ct"], kind) is None
        assert "another CT" in other_ct_warning(pretrained_model(kind), prepared["ct"], kind)
    stored = read_mask(models.mask, prepared["ct"])
    assert torch.equal(stored.data, prepared["mask"].data)


def test_register_with_the_prepared_folder_uses_its_networks_and_mask(prepared):
    ct, out = prepared["ct"], prepared["out"]
    geometry = CArmGeometry.preset("perlove-plx118f")
    centroid = mask_centroid_world(prepared["mask"])
    pose = nominal_view("ap", centroid, geometry.source_to_isocenter_mm).camera_from_world
    image = render_drr(rendering_volume(ct, "hu"), geometry, pose, step_mm=3.0)
    result = register(ct, XRay(image, geometry), initial_pose=pose, models=out, device="cpu", iteration_scale=0.05)
    assert result.method == "sopi+global+opt"
    assert [record["stage"] for record in result.stages][:3] == ["rtpi", "global search", "fine"]
    torch.testing.assert_close(result.pivot_world, centroid, atol=1e-6, rtol=0)  # the folder's spine mask, not a segmentation
    with pytest.raises(InputError, match="leave out model"):
        register(ct, XRay(image, geometry), initial_pose=pose, models=out, model=prepared["models"].rtpi)


def test_read_prepared_refuses_unfinished_or_foreign_folders(prepared, tmp_path):
    with pytest.raises(InputError, match="no models.json"):
        read_prepared(tmp_path)
    (tmp_path / MODELS_INDEX).write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(InputError, match="not a sopi prepare index"):
        read_prepared(tmp_path)
    record = json.loads((prepared["out"] / MODELS_INDEX).read_text(encoding="utf-8"))
    (tmp_path / MODELS_INDEX).write_text(json.dumps(record), encoding="utf-8")  # the index without its files
    with pytest.raises(InputError, match="is missing"):
        read_prepared(tmp_path)


def test_initial_weights_must_be_the_same_network(tmp_path):
    from sopi.nets.rtpi import RTPIConfig
    from sopi.sample_data import sample_ct_path, sample_vertebrae_path

    tiny = RTPIConfig(xray_size=32, ct_size=8, width=4, ct_channels=2, local_widths=(8, 8), head_hidden=8)
    pairs = [(sample_ct_path(), sample_vertebrae_path())]
    factory = lambda context: RTPITask(pairs, CArmGeometry.preset("perlove-plx118f"), tiny, RTPISettings(batch_size=2, step_mm=4.0), context)  # noqa: E731
    with pytest.raises(InputError, match="holds a 'fine' network"):
        train(factory, tmp_path / "a", OptimSettings(steps=1), initial_weights=shipped_model("fine"), device="cpu")
    with pytest.raises(InputError, match="another configuration"):
        train(factory, tmp_path / "b", OptimSettings(steps=1), initial_weights=shipped_model("rtpi"), device="cpu")


def test_cli_prepare_and_register_models(prepared, tmp_path, capsys):
    ct_path, mask_path = tmp_path / "ct.nii.gz", tmp_path / "mask.nii.gz"
    write_volume(ct_path, prepared["ct"])
    write_volume(mask_path, prepared["mask"])
    with pytest.raises(SystemExit) as usage:
        main(["--progress", "none", "prepare", str(ct_path), "--out", str(tmp_path / "p"), "--minutes", "0"])
    assert usage.value.code == 2 and "--minutes" in capsys.readouterr().err
    assert main(["--progress", "none", "prepare", str(ct_path), "--out", str(tmp_path / "p"), "--name", "a b"]) == 2
    assert "--name" in capsys.readouterr().err
    code = main(["--progress", "none", "register", "--ct", str(ct_path), "--xray", str(ct_path), "--models", str(prepared["out"]),
                 "--model", str(prepared["models"].rtpi), "--out", str(tmp_path / "r.json")])
    assert code == 2 and "leave out --model" in capsys.readouterr().err
    code = main(["--progress", "none", "register", "--ct", str(ct_path), "--xray", str(ct_path), "--models", str(tmp_path),
                 "--out", str(tmp_path / "r.json")])
    assert code == 2 and "no models.json" in capsys.readouterr().err
    code = main(["--progress", "none", "prepare", str(ct_path), "--mask", str(mask_path), "--out", str(tmp_path / "p"),
                 "--pretrained", str(prepared["models"].fine), str(prepared["models"].rtpi), "--minutes", "0.01"])
    assert code == 2 and "holds a 'fine' network" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert main(["--progress", "none", "prepare", str(ct_path), "--out", str(tmp_path / "p"),
                 "--pretrained", str(tmp_path / "none.pt"), str(prepared["models"].fine)]) == 2
    message = capsys.readouterr().err
    assert "the rtpi model" in message and "none.pt" in message
    # --pretrained: this run starts from the models prepared before, not from the shipped ones
    code = main(["--progress", "none", "prepare", str(ct_path), "--mask", str(mask_path), "--out", str(tmp_path / "p"),
                 "--minutes", "0.01", "--device", "cpu", "--name", "cli",
                 "--pretrained", str(prepared["models"].rtpi), str(prepared["models"].fine)])
    assert code == 0
    assert read_prepared(tmp_path / "p").rtpi.name == "rtpi_cli.pt"
    index = json.loads((tmp_path / "p" / MODELS_INDEX).read_text(encoding="utf-8"))
    assert index["pretrained"] == {"rtpi": prepared["models"].rtpi.name, "fine": prepared["models"].fine.name}
    for kind in ("rtpi", "fine"):
        start = json.loads(getattr(read_prepared(tmp_path / "p"), kind).with_suffix(".json").read_text(encoding="utf-8"))
        assert start["training"]["initial_weights"]["file"] == getattr(prepared["models"], kind).name
    # preparing into the same folder and name from its own models would overwrite them: refused, nothing touched
    own = read_prepared(tmp_path / "p")
    before = {path: path.read_bytes() for path in (own.rtpi, own.fine, tmp_path / "p" / MODELS_INDEX)}
    code = main(["--progress", "none", "prepare", str(ct_path), "--mask", str(mask_path), "--out", str(tmp_path / "p"),
                 "--minutes", "0.01", "--device", "cpu", "--name", "cli", "--pretrained", str(own.rtpi), str(own.fine)])
    assert code == 2 and "is the file this preparation writes" in capsys.readouterr().err
    assert all(path.read_bytes() == content for path, content in before.items())


def test_population_models_know_the_cts_they_were_trained_on(shared_data):
    """The shipped population models (cards: Resources/Models/*_population.md) list the sample CT
    and the TPTBox crop in their training record, so neither gets the "another CT" warning; a CT
    outside the population (the sample CT cropped) does."""
    from sopi.io import read_ct

    sample_ct, _ = load_sample()
    tptbox = read_ct(shared_data / "tptbox_lumbar_crop" / "sub-ct_label-22_ct.nii.gz")
    for kind in ("rtpi", "fine"):
        loaded = load_model(pretrained_model(kind))
        # started from the sample-CT model, or continued from an earlier population run (rtpi, 2026-12-07)
        assert loaded.kind == kind and loaded.metadata["training"]["initial_weights"]["file"] in (shipped_model(kind).name, pretrained_model(kind).name)
        assert other_ct_warning(pretrained_model(kind), sample_ct, kind) is None
        assert other_ct_warning(pretrained_model(kind), tptbox, kind) is None
        assert "another CT" in other_ct_warning(pretrained_model(kind), _crop(sample_ct, 16, 96), kind)
