"""Write-then-rename: no partial output on failure, normal permissions on success."""

from __future__ import annotations

import os
import stat

import pytest

from sopi.atomic import atomic_path


def test_success_renames_with_umask_permissions(tmp_path):
    target = tmp_path / "out" / "image.nii.gz"
    with atomic_path(target) as temporary:
        assert temporary.endswith(".nii.gz") and os.path.dirname(temporary) == str(target.parent)
        with open(temporary, "w") as handle:
            handle.write("data")
    assert target.read_text(encoding="utf-8") == "data"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert list(target.parent.iterdir()) == [target]


def test_failure_leaves_no_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "pose.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            with open(temporary, "w") as handle:
                handle.write("half")
            raise RuntimeError("writer crashed")
    assert target.read_text(encoding="utf-8") == "old"
    assert list(tmp_path.iterdir()) == [target]
