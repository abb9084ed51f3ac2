"""Simulate the shipped sample X-ray from the sample CT (reproducible; run from the repository root).

Writes ``SOPIRegistration/Resources/SampleData/sample_xray.mha`` (a DRR on the
``perlove-plx118f`` detector at a ``paper``-protocol pose about the spine centroid, seed 7)
and ``sample_xray_truth.json`` (its true ``camera_from_world`` and paper parameters).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from sopi.geometry import CArmGeometry
from sopi.sample_data import sample_ct_path, sample_data_dir, sample_vertebrae_path
from sopi.simulate import simulate_case

SEED = 7


def main() -> None:
    out = sample_data_dir()
    with tempfile.TemporaryDirectory() as folder:
        simulate_case(sample_ct_path(), folder, CArmGeometry.preset("perlove-plx118f"), mask_path=sample_vertebrae_path(),
                      protocol="paper", seed=SEED)
        shutil.copyfile(Path(folder) / "xray.mha", out / "sample_xray.mha")
        text = (Path(folder) / "gt.json").read_text(encoding="utf-8").replace(str(sample_ct_path()), "sample_ct.nii.gz")
        (out / "sample_xray_truth.json").write_text(text, encoding="utf-8")
    print(f"wrote {out / 'sample_xray.mha'} and {out / 'sample_xray_truth.json'}")


if __name__ == "__main__":
    main()
