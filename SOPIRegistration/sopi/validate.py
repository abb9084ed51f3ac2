"""Checks at the boundaries: numbers, poses, outputs, and whether content is plausible.

Every check raises :class:`~sopi.errors.InputError` with one line that names the file
or field and says what was expected. The command line, the Python API and the Slicer
bridge call the same checks, so the same bad input gets the same message everywhere.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import InputError

__all__ = [
    "MAX_SEED",
    "all_finite",
    "available_memory_bytes",
    "check_allocation",
    "check_ct_content",
    "check_label_map_content",
    "check_nonempty_mask",
    "check_outputs",
    "check_pose_in_front",
    "check_seed",
    "check_rigid_pose",
    "check_xray_signal",
    "nonnegative_number",
    "positive_int",
    "positive_number",
    "seed",
]

#: Seeds are handed to numpy and torch generators, which take 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


# --------------------------------------------------------------------------- numbers


def check_seed(value: object, field: str = "seed") -> int:
    """A random seed: an integer from 0 to :data:`MAX_SEED`; :class:`InputError` naming ``field`` otherwise."""
    if not (isinstance(value, int) and 0 <= value <= MAX_SEED):
        raise InputError(f"{field}: expected an integer from 0 to {MAX_SEED}, got {value!r}")
    return value


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def _argparse_type(parse, accept, description: str):
    """An argparse ``type=``: ``parse`` the text, then ``accept`` the value; argparse names the option."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    convert.__name__ = description
    return convert


#: argparse types: ``--cases 0`` becomes "argument --cases: expected a positive integer, got '0'".
positive_int = _argparse_type(int, lambda number: number >= 1, "a positive integer")
seed = _argparse_type(int, lambda number: 0 <= number <= MAX_SEED, f"an integer from 0 to {MAX_SEED}")
positive_number = _argparse_type(_finite_float, lambda number: number > 0, "a positive finite number")
nonnegative_number = _argparse_type(_finite_float, lambda number: number >= 0, "a finite number >= 0")


# --------------------------------------------------------------------------- memory


def available_memory_bytes() -> int | None:
    """Physical memory not in use (Linux, macOS); ``None`` where it cannot be asked."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_allocation(n_bytes: float, what: str) -> None:
    """:class:`InputError` if ``n_bytes`` for ``what`` exceed the memory this machine has free."""
    free = available_memory_bytes()
    if free is not None and n_bytes > free:
        raise InputError(f"{what}: needs about {n_bytes / 2**30:.1f} GiB of memory, {free / 2**30:.1f} GiB are free")


# --------------------------------------------------------------------------- poses


def check_rigid_pose(matrix: object, field: str) -> torch.Tensor:
    """A rigid 4x4 ``camera_from_world`` as float64; errors say which entries or property are wrong."""
    try:
        pose = torch.as_tensor(matrix, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"{field}: expected a 4x4 matrix of numbers ({error})") from None
    if pose.shape != (4, 4):
        raise InputError(f"{field}: expected a 4x4 matrix, got shape {tuple(pose.shape)}")
    bad = (~torch.isfinite(pose)).nonzero().tolist()
    if bad:
        where = ", ".join(f"[{row}][{col}]={float(pose[row, col])}" for row, col in bad[:4])
        raise InputError(f"{field}: {len(bad)} entr{'y is' if len(bad) == 1 else 'ies are'} not finite ({where}); expected finite numbers")
    rotation = pose[:3, :3]
    gram_error = float((rotation @ rotation.T - torch.eye(3, dtype=torch.float64)).abs().max())
    if gram_error > 1e-5 or float(torch.det(rotation)) < 0:
        scales = torch.linalg.svdvals(rotation).tolist()
        raise InputError(
            f"{field}: not a rigid transform (the 3x3 part has singular values {', '.join(f'{s:.4g}' for s in scales)} "
            f"and determinant {float(torch.det(rotation)):.4g}; expected a rotation: all 1, determinant +1)"
        )
    if not torch.equal(pose[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
        raise InputError(f"{field}: last row is {pose[3].tolist()}; expected 0 0 0 1")
    return pose


def check_pose_in_front(camera_from_world: torch.Tensor, center_world: torch.Tensor, sdd_mm: float, field: str) -> None:
    """:class:`InputError` unless the point ``center_world`` (LPS mm) lies between source and detector.

    In the camera frame the source is at ``z = 0`` and the detector at ``z = sdd_mm``; a
    CT centre at ``z <= 0`` is behind the source (nothing of it would be imaged as posed).
    """
    pose = camera_from_world.detach().to(torch.float64).cpu()
    depth = float(pose[2, :3] @ center_world.to(torch.float64).cpu() + pose[2, 3])
    if not 0.0 < depth < sdd_mm:
        side = "behind the X-ray source" if depth <= 0 else "beyond the detector"
        raise InputError(
            f"{field}: puts the CT's centre {side} (depth {depth:.1f} mm along the principal ray); "
            f"expected it between the source (0 mm) and the detector ({sdd_mm:g} mm)"
        )


# --------------------------------------------------------------------------- outputs


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Mapping[str, Path | str | None], inputs: Mapping[str, Path | str | None], folders: tuple[str, ...] = ()) -> None:
    """Refuse outputs that would overwrite an input, or that cannot be written where asked.

    Args:
        outputs: ``{field: path}`` of files (or, for names in ``folders``, folders) to be written.
        inputs: ``{field: path}`` of files or folders that are read; ``None`` entries are skipped.
        folders: the output fields that name folders.
    """
    given_inputs = {field: Path(path) for field, path in inputs.items() if path is not None}
    for out_field, out_path in outputs.items():
        if out_path is None:
            continue
        out_path = Path(out_path)
        for in_field, in_path in given_inputs.items():
            if _same_file(out_path, in_path):
                raise InputError(
                    f"{out_field} {out_path}: is the input {in_field}; choose another output path (inputs are never overwritten)"
                )
        if out_field in folders:
            if out_path.exists() and not out_path.is_dir():
                raise InputError(f"{out_field} {out_path}: exists and is a file; expected a folder (new or existing)")
        elif out_path.is_dir():
            raise InputError(f"{out_field} {out_path}: is a folder; expected a file path")
        parent = out_path if out_field in folders else out_path.parent
        existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise InputError(f"{out_field} {out_path}: {existing} is a file, not a folder")
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise InputError(f"{out_field} {out_path}: the folder {existing} is not writable")


# --------------------------------------------------------------------------- content


def check_ct_content(data: torch.Tensor, source: str) -> None:
    """:class:`InputError` unless ``data`` (HU) varies like a CT of anatomy does.

    A CT of a patient holds air, fat, soft tissue and bone: its voxel values span several
    hundred HU. A constant or nearly constant volume (a blank or mis-exported file) would be
    rendered into an X-ray with no structure to register.
    """
    sample = data.reshape(-1)
    if sample.numel() > 200_000:  # a regular subsample is plenty for percentiles (sorting a million took 0.05 s)
        sample = sample[:: sample.numel() // 200_000 + 1]
    sample = sample.to(torch.float32)
    low, high = (float(v) for v in torch.quantile(sample, torch.tensor([0.01, 0.99])))
    if high - low < 100.0:
        raise InputError(
            f"{source}: voxel values barely vary (1st-99th percentile {low:g} to {high:g}); "
            "expected a CT in HU with anatomy (air, soft tissue and bone span hundreds of HU)"
        )


def check_label_map_content(data: torch.Tensor, source: str, max_labels: int = 1000) -> None:
    """:class:`InputError` unless ``data`` looks like a label map: non-negative integer labels, few of them."""
    if data.dtype.is_floating_point:
        return  # integrality and finiteness are checked by the reader
    low = int(data.min())
    if low < 0:
        raise InputError(f"{source}: holds negative values (minimum {low}); expected a label map (0 = background, labels > 0), not a CT")
    counts = torch.bincount(data.reshape(-1).to(torch.int64)) if int(data.max()) < 1 << 24 else None
    distinct = int((counts > 0).sum()) if counts is not None else int(torch.unique(data).numel())
    if distinct > max_labels:
        raise InputError(f"{source}: holds {distinct} distinct values; expected a label map with at most {max_labels} labels, not a CT")


def check_nonempty_mask(data: torch.Tensor, source: str) -> None:
    """:class:`InputError` if a mask holds no non-zero voxel."""
    if not bool(data.any()):
        raise InputError(f"{source}: the mask is empty (no non-zero voxel on the CT's grid); expected the spine")


def all_finite(values: torch.Tensor) -> bool:
    """Whether a floating-point tensor holds no NaN or infinite value, from its minimum and maximum (NaN and
    infinities reach them): 0.02 s for a 2 x 415 x 512 x 512 volume, where ``isfinite(...).all()`` took 1.8 s."""
    if values.numel() == 0 or not values.is_floating_point():
        return True
    low, high = torch.aminmax(values)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def check_xray_signal(image: torch.Tensor, source: str) -> None:
    """:class:`InputError` unless an X-ray holds finite values that vary (there is something to register)."""
    if not all_finite(image):
        raise InputError(f"{source}: holds NaN or infinite pixels; expected finite values")
    low, high = float(image.min()), float(image.max())
    if not high - low > 1e-6 * max(abs(low), abs(high), 1.0):
        raise InputError(f"{source}: every pixel is {low:g}; expected an X-ray with contrast")
