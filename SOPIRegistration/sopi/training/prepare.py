"""``sopi prepare``: networks for one new CT, fine-tuned from the shipped pretrained ones in a few minutes.

A prepared folder holds everything ``sopi register --models DIR`` needs::

    DIR/models.json           index, written last (a folder without it is unfinished; a new
                              run into the same folder removes it first and replaces the models)
    DIR/spine_mask.nii.gz     the spine mask the networks were trained with (0/1, the CT's grid)
    DIR/rtpi/rtpi_NAME.pt     RTPI (+ .json record, checkpoint, log, loss plot)
    DIR/fine/fine_NAME.pt     the fine module's encoders (same)

Both networks start from the pretrained models (by default the shipped population models,
:func:`sopi.nets.shipped.pretrained_model`) and are trained on
this CT with the same recipe (:func:`sopi.training.patient.train_patient_models`), each for
half of the time budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..geometry import CArmGeometry
from ..volume import Volume

__all__ = ["MODELS_INDEX", "PreparedModels", "checked_pretrained", "prepare_models", "read_prepared"]

#: The index file of a prepared folder.
MODELS_INDEX = "models.json"
_FORMAT = "sopi-models-1"
_MASK_FILE = "spine_mask.nii.gz"
#: Share of the progress bar the segmentation takes before training starts.
_SEGMENT_SHARE = 0.05


@dataclass(frozen=True)
class PreparedModels:
    """The files of a prepared folder and the CT they were made for."""

    rtpi: Path
    fine: Path
    mask: Path
    ct_voxels_sha256: str
    folder: Path

    def mask_for(self, ct: Volume) -> Path | None:
        """The stored spine mask when ``ct`` is the CT it was made for (same voxels), else None."""
        from .cases import voxel_fingerprint

        return self.mask if voxel_fingerprint(ct) == self.ct_voxels_sha256 else None


def prepare_models(
    ct: Volume,
    out_dir: str | Path,
    *,
    mask: Volume | None = None,
    minutes: float = 5.0,
    geometry: CArmGeometry | None = None,
    name: str = "patient",
    pretrained: dict[str, str | Path] | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PreparedModels:
    """Segment the spine (unless ``mask`` is given), fine-tune RTPI and the fine module from
    ``pretrained`` (default: the shipped population models) for ``minutes`` in all, and write ``out_dir``.

    ``geometry`` defaults to the pretrained RTPI's C-arm. The recipe (architecture, losses,
    augmentation, learning rates) is the pretrained models' own.
    """
    from ..io import write_volume
    from ..atomic import write_json
    from .cases import voxel_fingerprint
    from .patient import train_patient_models

    if not minutes > 0:
        raise InputError(f"prepare: --minutes must be positive, got {minutes}")
    pretrained = checked_pretrained(pretrained, out_dir, name)
    if geometry is None:
        geometry = _model_geometry(Path(pretrained["rtpi"]))
    out = Path(out_dir)

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    if mask is None:
        from ..segment import segment_spine

        mask = segment_spine(ct, progress=lambda f, m: report(_SEGMENT_SHARE * f, f"segmenting spine: {m}"), cancel=cancel)
    mask = mask.with_data((mask.data != 0).to(mask.data.dtype))
    if not bool(mask.data.any()):
        raise InputError("prepare: the spine mask is empty; expected the vertebrae marked non-zero")
    out.mkdir(parents=True, exist_ok=True)
    (out / MODELS_INDEX).unlink(missing_ok=True)  # models of an earlier run are replaced: unfinished until the end
    write_volume(out / _MASK_FILE, mask)
    models = train_patient_models(
        ct, mask, geometry, out, minutes=minutes, name=name, references=pretrained, initial=pretrained, device=device, seed=seed,
        progress=lambda f, m: report(_SEGMENT_SHARE + (1 - _SEGMENT_SHARE) * f, m), cancel=cancel,
    )
    fingerprint = voxel_fingerprint(ct)
    write_json(out / MODELS_INDEX, {
        "format": _FORMAT, "rtpi": models["rtpi"].relative_to(out).as_posix(), "fine": models["fine"].relative_to(out).as_posix(),
        "mask": _MASK_FILE, "ct_voxels_sha256": fingerprint, "minutes": minutes, "seed": seed,
        "pretrained": {kind: Path(path).name for kind, path in pretrained.items()},
    })
    report(1.0, "models ready")
    return PreparedModels(models["rtpi"], models["fine"], out / _MASK_FILE, fingerprint, out)


def checked_pretrained(pretrained: dict[str, str | Path] | None, out_dir: str | Path, name: str) -> dict[str, Path]:
    """The models :func:`prepare_models` starts from (default: :func:`sopi.nets.shipped.pretrained_model`),
    each checked to hold its kind of network and not to be a file the preparation into ``out_dir`` writes."""
    from ..nets.shipped import pretrained_model
    from .patient import patient_model_path, training_recipe

    if pretrained is None:
        pretrained = {kind: pretrained_model(kind) for kind in ("rtpi", "fine")}
        missing = sorted(kind for kind, path in pretrained.items() if path is None)
        if missing:
            raise InputError(f"prepare: the shipped pretrained {', '.join(missing)} model is not installed (Resources/Models); give the pretrained models")
    if set(pretrained) != {"rtpi", "fine"}:
        raise InputError(f"prepare: pretrained models must name 'rtpi' and 'fine', got {sorted(pretrained)}")
    checked = {kind: Path(path) for kind, path in pretrained.items()}
    for kind, path in checked.items():
        training_recipe(path, kind)
        written = patient_model_path(out_dir, kind, name)
        if written.exists() and written.resolve() == path.resolve():
            raise InputError(f"prepare: the pretrained {kind} model {path} is the file this preparation writes; "
                             "choose another --out or --name (inputs are never overwritten)")
    return checked


def read_prepared(folder: str | Path) -> PreparedModels:
    """The models of a folder written by :func:`prepare_models`; a clear error for anything else."""
    folder = Path(folder)
    index = folder / MODELS_INDEX
    if not folder.is_dir():
        raise InputError(f"--models {folder}: not a folder (expected the --out folder of sopi prepare)")
    if not index.is_file():
        raise InputError(f"--models {folder}: no {MODELS_INDEX} in it (not made by sopi prepare, or sopi prepare did not finish)")
    try:
        record = json.loads(index.read_text(encoding="utf-8"))
        if record.get("format") != _FORMAT:
            raise KeyError("format")
        paths = {key: folder / record[key] for key in ("rtpi", "fine", "mask")}
        fingerprint = str(record["ct_voxels_sha256"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as error:
        raise InputError(f"--models {index}: not a sopi prepare index ({type(error).__name__}: {error})") from None
    for key, path in paths.items():
        if not path.is_file():
            raise InputError(f"--models {folder}: {record[key]} is missing")
    return PreparedModels(paths["rtpi"], paths["fine"], paths["mask"], fingerprint, folder)


def _model_geometry(path: Path) -> CArmGeometry:
    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return CArmGeometry.from_dict(record["geometry"], source=f"{path.with_suffix('.json')} geometry")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"prepare: {path.with_suffix('.json')}: cannot read the model's C-arm geometry ({error})") from None
