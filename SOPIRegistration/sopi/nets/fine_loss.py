"""The fine module's losses: the masked embedded-feature distance (paper eq. 6), the
direction loss that trains its pose gradient to follow the geodesic one (paper eq. 7), and a
per-axis variant of it (:func:`axis_sign_loss`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FINE_LOSSES", "axis_sign_loss", "direction_loss", "masked_feature_distance", "part_cosines"]


def masked_feature_distance(moving: torch.Tensor, fixed: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``L_N = sum_i M'_i ||e_m,i - e_f,i||_2 / sum_i M'_i`` per image: ``(B,)``.

    Args:
        moving, fixed: embedded features ``(B, C, H, W)``.
        mask: the projected spine ``(B, rows, cols)`` at image resolution (non-zero = spine),
            downsampled to ``H x W`` by max pooling (a cell counts when any of its pixels
            does); ``None`` or an empty mask weighs every cell.
    """
    distance = (moving - fixed).square().sum(dim=1).add(1e-12).sqrt()  # (B, H, W)
    if mask is None:
        weights = torch.ones_like(distance)
    else:
        weights = F.adaptive_max_pool2d((mask != 0).to(distance.dtype)[:, None], distance.shape[-2:])[:, 0]
        empty = weights.sum(dim=(-2, -1), keepdim=True) == 0
        weights = torch.where(empty, torch.ones_like(weights), weights)
    return (weights * distance).sum(dim=(-2, -1)) / weights.sum(dim=(-2, -1))


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def direction_loss(learned: torch.Tensor, geodesic: torch.Tensor) -> torch.Tensor:
    """``|| V'_r/|V'_r| - V_r/|V_r| || + || V'_t/|V'_t| - V_t/|V_t| ||`` per pose: ``(B,)``.

    ``learned`` and ``geodesic`` are ``(B, 6)`` gradients with respect to ``theta``
    (rotation first); each part is compared as a unit vector, so only directions count.
    """
    geodesic = geodesic.to(learned)
    return (_unit(geodesic[:, :3]) - _unit(learned[:, :3])).norm(dim=-1) + (_unit(geodesic[:, 3:]) - _unit(learned[:, 3:])).norm(dim=-1)


def axis_sign_loss(learned: torch.Tensor, geodesic: torch.Tensor) -> torch.Tensor:
    """``mean_i (1 - tanh(V_i / s_i) sign(V'_i))`` per pose: ``(B,)``, in [0, 2]; 1 is chance.

    A smooth count of the axes whose learned gradient ``V`` has the sign of the geodesic one
    ``V'`` (``(B, 6)``, rotation first); ``s_i`` is the batch's mean ``|V_i|`` (not
    differentiated), so every axis weighs alike whatever its scale. Eq. 7 compares each part
    as a unit vector, where depth, whose image changes are about ten times weaker than the
    in-plane ones, hardly counts; an optimiser that steps by each axis's sign (Adam) needs
    every axis.
    """
    scale = learned.detach().abs().mean(dim=0, keepdim=True).clamp(min=1e-12)
    return (1.0 - torch.tanh(learned / scale) * torch.sign(geodesic.to(learned))).mean(dim=-1)


#: ``FineSettings.loss`` -> the loss on ``(learned, geodesic)`` gradients: eq. 7 (the paper's) or per axis.
FINE_LOSSES = {"direction": direction_loss, "axis-sign": axis_sign_loss}


def part_cosines(learned: torch.Tensor, geodesic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines ``(B,)`` between ``learned`` and ``geodesic`` ``(B, 6)``, rotation part and translation part."""
    geodesic = geodesic.to(learned)
    return F.cosine_similarity(learned[:, :3], geodesic[:, :3], dim=-1), F.cosine_similarity(learned[:, 3:], geodesic[:, 3:], dim=-1)
