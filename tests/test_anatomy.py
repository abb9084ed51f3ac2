"""Anatomical augmentation: a warped CT's labels move with it; known affine draws; seeds; errors."""

from __future__ import annotations

import pytest
import torch

from sopi.errors import InputError
from sopi.segment import dice, mask_centroid_world
from sopi.training.anatomy import AnatomySettings, anatomical_variant, anatomical_variants
from sopi.volume import Volume

SPACING = 2.0


def _phantom() -> tuple[Volume, Volume]:
    """Air around a soft-tissue body holding two bone blocks (labels 1 and 2) off-centre."""
    ct = torch.full((40, 48, 56), -1000.0)
    ct[4:36, 6:42, 6:50] = 20.0
    labels = torch.zeros(40, 48, 56, dtype=torch.uint8)
    for label, (k0, j0, i0) in ((1, (8, 14, 12)), (2, (22, 20, 30))):
        ct[k0:k0 + 10, j0:j0 + 12, i0:i0 + 14] = 900.0
        labels[k0:k0 + 10, j0:j0 + 12, i0:i0 + 14] = label
    world = torch.eye(4, dtype=torch.float64)
    world[:3, :3] *= SPACING
    world[:3, 3] = torch.tensor([-30.0, 12.0, 100.0])
    return Volume(ct, world), Volume(labels, world)


def _ml(volume: Volume) -> float:
    return float((volume.data != 0).sum()) * float(volume.spacing.prod()) / 1000


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_labels_move_with_the_anatomy(seed):
    ct, labels = _phantom()
    warped_ct, warped_labels = anatomical_variant(ct, labels, seed, AnatomySettings(rotation_deg=15.0, elastic_mm=6.0))
    assert torch.equal(warped_ct.world_from_index, warped_labels.world_from_index)
    bone = (warped_ct.data > 450).to(torch.uint8)  # the CT's own bone, resampled trilinearly
    assert dice(bone, (warped_labels.data != 0).to(torch.uint8)) > 0.9
    assert set(torch.unique(warped_labels.data).tolist()) == {0, 1, 2}  # ids survive (nearest neighbour)
    assert float(mask_centroid_world(warped_labels).sub(mask_centroid_world(labels)).norm()) < 8.0  # turned about the spine


def test_a_pure_scale_grows_the_labels_by_its_cube_about_their_centroid():
    ct, labels = _phantom()
    settings = AnatomySettings(rotation_deg=0.0, scale=(1.2, 1.2), anisotropy=0.0, elastic_mm=0.0, spacing_mm=(SPACING, SPACING),
                               crop_p=0.0, hu_scale=(1.0, 1.0), hu_offset=(0.0, 0.0))
    warped_ct, warped_labels = anatomical_variant(ct, labels, 5, settings)
    assert _ml(warped_labels) == pytest.approx(_ml(labels) * 1.2 ** 3, rel=0.08)
    torch.testing.assert_close(mask_centroid_world(warped_labels), mask_centroid_world(labels), atol=1.0, rtol=0)
    assert float(warped_ct.data.max()) == pytest.approx(900.0, abs=1.0)  # no HU change asked for
    assert float(warped_ct.data.min()) == -1000.0


def test_hu_changes_touch_the_ct_only_and_air_stays_air():
    ct, labels = _phantom()
    settings = AnatomySettings(rotation_deg=0.0, scale=(1.0, 1.0), anisotropy=0.0, elastic_mm=0.0, spacing_mm=(SPACING, SPACING),
                               crop_p=0.0, hu_scale=(1.1, 1.1), hu_offset=(50.0, 50.0))
    warped_ct, warped_labels = anatomical_variant(ct, labels, 0, settings)
    assert torch.equal(warped_labels.data, labels.data)  # identity map: the labels are the source's
    assert float(warped_ct.data.max()) == pytest.approx((900 + 1000) * 1.1 - 1000 + 50, abs=0.5)
    assert float(warped_ct.data[0, 0, 0]) == -1000.0


def test_draws_are_seeded_and_crops_keep_the_spine():
    ct, labels = _phantom()
    first, again = anatomical_variants(ct, labels, 2, seed=7), anatomical_variants(ct, labels, 2, seed=7)
    for (a_ct, a_labels), (b_ct, b_labels) in zip(first, again):
        assert torch.equal(a_ct.data, b_ct.data) and torch.equal(a_labels.data, b_labels.data)
    assert first[0][0].data.shape != first[1][0].data.shape or not torch.equal(first[0][0].data, first[1][0].data)
    cropped = AnatomySettings(crop_p=1.0, crop_keep=(0.6, 0.6), spacing_mm=(SPACING, SPACING))
    for seed in range(3):
        warped_ct, warped_labels = anatomical_variant(ct, labels, seed, cropped)
        assert warped_ct.data.shape[0] < ct.data.shape[0]  # slices (the k axis) cut to 60 %
        assert bool((warped_labels.data != 0).any())


def test_bad_inputs_are_refused():
    ct, labels = _phantom()
    with pytest.raises(InputError, match="CT's grid"):
        anatomical_variant(ct, Volume(labels.data[:-1], labels.world_from_index), 0)
    with pytest.raises(InputError, match="empty"):
        anatomical_variant(ct, labels.with_data(torch.zeros_like(labels.data)), 0)
    with pytest.raises(InputError, match="count"):
        anatomical_variants(ct, labels, -1, 0)


def test_sopi_train_adds_the_variants_to_the_training_data(tmp_path):
    import json

    from sopi.cli import main
    from sopi.sample_data import sample_ct_path, sample_vertebrae_path

    code = main(["--progress", "none", "train", "rtpi", "--ct", str(sample_ct_path()), "--mask", str(sample_vertebrae_path()),
                 "--anatomical-variants", "2", "--steps", "1", "--out", str(tmp_path), "--xray-size", "32", "--ct-size", "16",
                 "--width", "4", "--batch-size", "2", "--device", "cpu"])
    assert code == 0
    data = json.loads((tmp_path / "rtpi.json").read_text(encoding="utf-8"))["training"]["data"]
    assert len(data) == 3 and len({entry["voxels_sha256"] for entry in data}) == 3  # the CT and two different variants
