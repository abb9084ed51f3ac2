"""The projectors one registration's problems share: one per CT (and spine mask) and kind of render, each level and
pass rendering through a copy that keeps the blended slices already built."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..drr import Projector, support_box_fraction
from ..geometry import CArmGeometry
from ..volume import Volume

__all__ = ["SharedProjectors"]


class SharedProjectors:
    """The projectors of one CT (and its spine mask) that the :class:`~sopi.registration.problem.PoseProblem` s of one registration share:
    its passes (a fresh problem each) and its views render through copies of them
    (:meth:`sopi.drr.Projector.on_detector`), which keep the blended slices already built instead of blending the
    volume again (0.3-1.3 s per plane set on a 512 x 512 x 141 CT; seven passes of a flagged wide start blended
    about seventy sets). A projector is rebuilt when its voxels are no longer the same tensors.

    The levels render the spine mask one of two ways (:meth:`separate_mask`): as a second channel of the CT's
    projector (``"channels"``), or, where its support box is a small part of the CT's, with a projector of its own
    (``"spine"``) on the CT's planes (:class:`sopi.drr.Projector`'s ``planes_like``), which samples only rays and
    planes near the spine and none at all while a stage holds the spine region (:meth:`~sopi.registration.problem.PoseProblem.hold_region`).
    The global search renders the CT alone (``"attenuation"``, or block-averaged: ``"attenuation binned (i, j, k)"``)."""

    #: the mask gets its own projector where its support box is less than this fraction of the CT's. A second channel
    #: costs a third to a half of the CT's render; a projector of its own samples at most its box's share of it, but
    #: computes its own interpolation weights and blends its own slices. Measured whole registrations (2026-12-06):
    #: masks of 0.04 and 0.09 of the CT's box ran 15-25 % faster with their own, of 0.33 and 0.71 up to 12 % slower.
    SEPARATE_MASK_BELOW: float = 0.2

    def __init__(self) -> None:
        self._held: dict[str, tuple[tuple[torch.Tensor, ...], Projector]] = {}
        self._separate: tuple[tuple[torch.Tensor, ...], bool] | None = None

    def separate_mask(self, volume: Volume, mask: Volume) -> bool:
        """Whether the levels render ``mask`` with a projector of its own (:attr:`SEPARATE_MASK_BELOW`)."""
        sources = (volume.data, mask.data)
        if self._separate is None or not _same_tensors(self._separate[0], sources):
            self._separate = (sources, support_box_fraction(mask.data, volume.data) < self.SEPARATE_MASK_BELOW)
        return self._separate[1]

    def projector(
        self, kind: str, volume: Volume | Callable[[], Volume], sources: tuple[torch.Tensor, ...], geometry: CArmGeometry, step_mm: float,
        device: torch.device, planes_like: Projector | None = None,
    ) -> Projector:
        """A projector of ``volume`` on ``geometry``; ``kind`` names what it renders and ``sources`` the tensors
        ``volume`` was made from (the same objects give the held projector's copy); ``volume`` may be a callable that
        makes it, called only when no held projector serves; ``planes_like``: whose sample planes a new projector uses
        (:class:`sopi.drr.Projector`)."""
        held = self._held.get(kind)
        if held is None or not _same_tensors(held[0], sources) or held[1].volume.device != torch.device(device):
            volume = volume() if callable(volume) else volume
            held = (sources, Projector(volume, geometry, step_mm=step_mm, planes_like=planes_like).to(device))
            self._held[kind] = held
        return held[1].on_detector(geometry, step_mm)


def _same_tensors(held: tuple[torch.Tensor, ...], sources: tuple[torch.Tensor, ...]) -> bool:
    """Whether ``sources`` are the very tensors ``held`` (what :class:`SharedProjectors` keeps something for)."""
    return len(held) == len(sources) and all(old is new for old, new in zip(held, sources))
