"""Write-then-rename helpers, so a failed write never leaves a half-written output."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name keeps ``path``'s suffixes (``.nii.gz``, ``.png``) so writers
    that pick a format from the extension still work.
    """
    from .errors import InputError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; expected a file path to write")
    suffix = "".join(path.suffixes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{path}: a part of its folder path is a file; expected a folder to write into") from None
    except PermissionError:
        raise InputError(f"{path}: cannot write into {path.parent} (permission denied); expected a writable folder") from None
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def write_json(path: str | Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    import json

    with atomic_path(path) as temporary:
        Path(temporary).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
