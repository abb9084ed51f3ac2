"""RTPI: Rigid Transformation Parameter Initialisation (Chen et al., SOPI, section 2.2, Fig. 2).

An asymmetric dual-branch regressor of the paper's pose parameters ``theta`` (deg, mm)
relative to a nominal view:

* 3D branch: two 3D convolution blocks (each halves the grid) on the CT cube
  (:func:`sopi.nets.inputs.ct_cube`); depth is folded into channels, giving a 2D map
  of the X-ray branch's size;
* 2D branch: two 2D convolution blocks (each halves the image) on the X-ray;
* the two maps are concatenated along channels and go through a localisation network
  of four residual blocks (He et al. 2016), two of which halve the map;
* parameter-specific heads (Chen X. et al., MICCAI 2021): one small MLP per parameter on
  the flattened map (kept spatial, since translations are positions), each squashed by
  ``tanh`` into ``[-half_range, half_range]``.

Group normalisation throughout, so a batch of one and DistributedDataParallel replicas
behave exactly like the training batch (no running statistics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import InputError

__all__ = ["RTPI", "RTPIConfig"]


@dataclass
class RTPIConfig:
    """Architecture and parameterisation of an :class:`RTPI` network.

    Attributes:
        xray_size: X-ray input edge (pixels); the detector is resampled to it.
        ct_size: CT cube edge (voxels).
        ct_side_mm: CT cube edge (mm) about the isocentre.
        width: channels of the 2D branch.
        ct_channels: channels of the 3D branch output (times ``ct_size / 4`` after folding).
        local_widths: channels of the localisation network's two stages.
        head_hidden: hidden units of each parameter head.
        half_range: bound of each output ``(rx, ry, rz, tx, ty, tz)`` (deg, mm).
        scale: per-parameter normalisation (deg, mm) for the MSE and regularisation:
            the standard deviations of the training distribution.
    """

    xray_size: int = 64
    ct_size: int = 64
    ct_side_mm: float = 192.0
    width: int = 32
    ct_channels: int = 4
    local_widths: tuple[int, int] = (64, 128)
    head_hidden: int = 32
    half_range: tuple[float, ...] = (60.0, 60.0, 60.0, 45.0, 45.0, 90.0)
    scale: tuple[float, ...] = (20.0, 20.0, 20.0, 15.0, 15.0, 30.0)

    def __post_init__(self) -> None:
        self.local_widths = tuple(int(w) for w in self.local_widths)
        self.half_range = tuple(float(v) for v in self.half_range)
        self.scale = tuple(float(v) for v in self.scale)
        # the localisation map ends at xray_size / 16 cells a side; at least 2 x 2 so that
        # group normalisation never normalises a single value
        if self.xray_size % 16 or self.ct_size % 4 or self.xray_size < 32 or self.ct_size < 4:
            raise InputError(
                f"RTPI config: xray_size must be a multiple of 16 (at least 32) and ct_size a multiple of 4, "
                f"got {self.xray_size}, {self.ct_size}"
            )
        if len(self.half_range) != 6 or len(self.scale) != 6 or min(self.half_range + self.scale) <= 0:
            raise InputError("RTPI config: half_range and scale need six positive values (rx, ry, rz, tx, ty, tz)")
        if len(self.local_widths) != 2 or min(self.local_widths) < 1 or min(self.width, self.ct_channels, self.head_hidden) < 1:
            raise InputError("RTPI config: widths must be positive (local_widths has two entries)")

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict, source: str = "RTPI config") -> RTPIConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InputError(f"{source}: unknown fields {sorted(unknown)}; expected some of {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as error:
            raise InputError(f"{source}: {error}") from None


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


def _block(conv: type[nn.Module], inputs: int, outputs: int) -> nn.Sequential:
    """Strided convolution, normalisation, ReLU, convolution, normalisation, ReLU (halves the grid)."""
    return nn.Sequential(
        conv(inputs, outputs, 3, stride=2, padding=1, bias=False), _norm(outputs), nn.ReLU(inplace=True),
        conv(outputs, outputs, 3, padding=1, bias=False), _norm(outputs), nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Basic residual block (two 3x3 convolutions); a 1x1 projection when the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False), _norm(outputs), nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), _norm(outputs),
        )
        self.skip = (
            nn.Identity() if stride == 1 and inputs == outputs
            else nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), _norm(outputs))
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(features) + self.skip(features))


class RTPI(nn.Module):
    """Regress ``theta`` (deg, mm) of an X-ray relative to the nominal view the CT cube was sampled in.

    Inputs: ``ct`` ``(B or 1, 1, D, D, D)`` cube and ``xray`` ``(B, 1, S, S)`` standardised
    image (:mod:`sopi.nets.inputs`). A single CT is shared by the whole batch, and
    :meth:`ct_features` can be computed once and passed back for a fixed CT.
    """

    def __init__(self, config: RTPIConfig | None = None) -> None:
        super().__init__()
        self.config = config or RTPIConfig()
        c = self.config
        self.ct_branch = nn.Sequential(
            _block(nn.Conv3d, 1, c.ct_channels), _block(nn.Conv3d, c.ct_channels, c.ct_channels)
        )
        self.xray_branch = nn.Sequential(
            nn.Conv2d(1, c.width, 3, padding=1, bias=False), _norm(c.width), nn.ReLU(inplace=True),
            _block(nn.Conv2d, c.width, c.width), _block(nn.Conv2d, c.width, c.width),
        )
        folded = c.ct_channels * (c.ct_size // 4)
        first, second = c.local_widths
        self.localisation = nn.Sequential(
            ResidualBlock(folded + c.width, first), ResidualBlock(first, first, stride=2),
            ResidualBlock(first, second), ResidualBlock(second, second, stride=2),
        )
        cells = (c.xray_size // 16) ** 2
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Flatten(), nn.Linear(second * cells, c.head_hidden), nn.ReLU(inplace=True), nn.Linear(c.head_hidden, 1))
            for _ in range(6)
        )
        self.register_buffer("half_range", torch.tensor(c.half_range, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(c.scale, dtype=torch.float32), persistent=False)

    def ct_features(self, ct: torch.Tensor) -> torch.Tensor:
        """``(B, C * D/4, S/4, S/4)``: the 3D branch with depth folded into channels."""
        c = self.config
        if ct.ndim != 5 or tuple(ct.shape[1:]) != (1, c.ct_size, c.ct_size, c.ct_size):
            raise InputError(f"RTPI: CT cube must be (B, 1, {c.ct_size}, {c.ct_size}, {c.ct_size}), got {tuple(ct.shape)}")
        features = self.ct_branch(ct)  # (B, C, D/4, D/4, D/4), axes (z, y, x)
        batch, channels, depth = features.shape[:3]
        features = features.reshape(batch, channels * depth, *features.shape[3:])
        side = c.xray_size // 4
        if features.shape[-1] != side:
            features = nn.functional.adaptive_avg_pool2d(features, side)
        return features

    def forward(self, ct: torch.Tensor | None, xray: torch.Tensor, ct_features: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, 6)`` theta (deg, mm), each in ``[-half_range, half_range]``."""
        c = self.config
        if xray.ndim != 4 or tuple(xray.shape[1:]) != (1, c.xray_size, c.xray_size):
            raise InputError(f"RTPI: X-ray must be (B, 1, {c.xray_size}, {c.xray_size}), got {tuple(xray.shape)}")
        if ct_features is None:
            if ct is None:
                raise InputError("RTPI: give the CT cube or its features")
            ct_features = self.ct_features(ct)
        if ct_features.shape[0] == 1 and xray.shape[0] > 1:
            ct_features = ct_features.expand(xray.shape[0], -1, -1, -1)
        features = self.localisation(torch.cat([ct_features, self.xray_branch(xray)], dim=1))
        raw = torch.cat([head(features) for head in self.heads], dim=1)
        return torch.tanh(raw) * self.half_range

    def normalized(self, theta: torch.Tensor) -> torch.Tensor:
        """``theta / scale``: parameters in units of the training distribution's spread."""
        return theta / self.scale.to(theta)
