"""The composite encoder of SOPI's fine-registration module (paper section 2.3, Fig. 3).

* shallow stem: three 3x3 convolutions, each followed by an activation and a
  normalisation (the paper's order);
* two stride-2 convolutions (the image shrinks by 4);
* two branches of two cascade-fusion (CF) blocks each, whose bottleneck is a
  split-attention convolution (ResNeSt, Zhang et al. 2022):
  - the *assistant* works at half the leader's resolution (its first block has stride 2)
    and extracts the low-level features;
  - the *leader* works at the stem's resolution; before each of its blocks a composite
    connection unit (1x1 convolution + normalisation + upsampling, CBNet) adds the
    assistant's features of the matching depth;
* the leader's output and the upsampled assistant output are concatenated and a 1x1
  convolution gives the embedded feature map ``e`` of ``embed_channels`` x H/4 x W/4.

Plain torch; group normalisation (batch statistics do not mix the pose gradients of a
batch). Two encoders of this structure, without shared weights, embed the moving DRR
and the fixed X-ray (:class:`FineNet`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .fine_loss import masked_feature_distance

__all__ = ["MOVING_IMAGES", "CompositeEncoder", "EncoderConfig", "FineNet", "SplitAttention"]

#: What the moving encoder sees: the spine-only DRR (the paper's ``V_seg``) or the whole CT's DRR.
MOVING_IMAGES = ("spine", "ct")


@dataclass
class EncoderConfig:
    """Widths of a composite encoder; ``image_size`` is the detector edge the fine module renders at."""

    image_size: int = 128
    width: int = 16  # stem channels
    branch_width: int = 32  # channels in both branches
    embed_channels: int = 32  # C of the embedded features
    radix: int = 2  # split-attention splits
    composite: bool = True  # composite connections and concatenation (off: two plain branches, for the ablation)
    masked_loss: bool = True  # L_N over the projected spine M' (eq. 6); off: over every cell (the paper's EL ablation)
    moving_image: str = "spine"  # the moving DRR: "spine" (the paper's V_seg) or "ct" (the whole CT, as the X-ray)

    #: Fields that leave the weights' shapes alone: ``sopi train --init`` may start from a model that differs in them.
    WEIGHT_FREE_FIELDS = ("masked_loss", "moving_image")

    def __post_init__(self) -> None:
        if self.image_size % 8 or self.image_size < 16:
            raise InputError(f"encoder config: image_size must be a multiple of 8 (at least 16), got {self.image_size}")
        if min(self.width, self.branch_width, self.embed_channels, self.radix) < 1 or self.branch_width % (2 * self.radix):
            raise InputError("encoder config: widths must be positive and branch_width a multiple of 2 * radix")
        if self.moving_image not in MOVING_IMAGES:
            raise InputError(f"encoder config: moving_image must be one of {', '.join(MOVING_IMAGES)}, got {self.moving_image!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "encoder config") -> EncoderConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"{source}: unknown fields {sorted(unknown)}")
        return cls(**data)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, min(8, channels // 4)), channels)


class SplitAttention(nn.Module):
    """ResNeSt split attention: a grouped 3x3 convolution into ``radix`` splits, weighted by a
    softmax over the splits computed from their pooled sum."""

    def __init__(self, channels: int, radix: int = 2, stride: int = 1) -> None:
        super().__init__()
        self.radix = radix
        self.conv = nn.Conv2d(channels, channels * radix, 3, stride=stride, padding=1, groups=radix, bias=False)
        self.norm = _norm(channels * radix)
        hidden = max(channels // 2, 8)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels * radix, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        splits = torch.relu(self.norm(self.conv(features)))
        batch, channels = splits.shape[0], splits.shape[1] // self.radix
        splits = splits.reshape(batch, self.radix, channels, *splits.shape[2:])
        attention = self.fc2(torch.relu(self.fc1(splits.sum(dim=1).mean(dim=(-2, -1), keepdim=True))))
        attention = torch.softmax(attention.reshape(batch, self.radix, channels, 1, 1), dim=1)
        return (splits * attention).sum(dim=1)


class CFBlock(nn.Module):
    """Cascade-fusion block: a residual bottleneck (1x1 reduce, split attention, 1x1 expand)."""

    def __init__(self, inputs: int, outputs: int, radix: int, stride: int = 1) -> None:
        super().__init__()
        middle = outputs // 2
        self.body = nn.Sequential(
            nn.Conv2d(inputs, middle, 1, bias=False), _norm(middle), nn.ReLU(inplace=True),
            SplitAttention(middle, radix, stride),
            nn.Conv2d(middle, outputs, 1, bias=False), _norm(outputs),
        )
        self.skip = (
            nn.Identity() if inputs == outputs and stride == 1
            else nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), _norm(outputs))
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(features) + self.skip(features))


class CompositeConnection(nn.Module):
    """CBNet's composite connection: 1x1 convolution and normalisation, upsampled to the leader's size."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Conv2d(inputs, outputs, 1, bias=False), _norm(outputs))

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.project(features), size=size, mode="bilinear", align_corners=False)


class CompositeEncoder(nn.Module):
    """``(B, 1, S, S)`` standardised image -> ``(B, embed_channels, S/4, S/4)`` embedded features."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or EncoderConfig()

        def conv_act_norm(inputs: int, outputs: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1), nn.ReLU(inplace=True), _norm(outputs)]

        self.stem = nn.Sequential(
            *conv_act_norm(1, c.width), *conv_act_norm(c.width, c.width), *conv_act_norm(c.width, c.width),
            *conv_act_norm(c.width, c.branch_width, 2), *conv_act_norm(c.branch_width, c.branch_width, 2),
        )
        b = c.branch_width
        self.assistant = nn.ModuleList([CFBlock(b, b, c.radix, stride=2), CFBlock(b, b, c.radix)])
        self.leader = nn.ModuleList([CFBlock(b, b, c.radix), CFBlock(b, b, c.radix)])
        if c.composite:
            self.connections = nn.ModuleList([CompositeConnection(b, b), CompositeConnection(b, b)])
        self.head = nn.Conv2d(2 * b if c.composite else b, c.embed_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 1:
            raise InputError(f"encoder: expected (B, 1, H, W) images, got {tuple(image.shape)}")
        shallow = self.stem(image)
        size = tuple(shallow.shape[-2:])
        assistant = [self.assistant[0](shallow)]
        assistant.append(self.assistant[1](assistant[0]))
        leader = shallow
        for depth, block in enumerate(self.leader):
            if self.config.composite:  # the assistant's features of this depth join the leader
                leader = leader + self.connections[depth](assistant[depth], size)
            leader = block(leader)
        if self.config.composite:
            leader = torch.cat([leader, F.interpolate(assistant[-1], size=size, mode="bilinear", align_corners=False)], dim=1)
        return self.head(leader)


class FineNet(nn.Module):
    """The two encoders of the fine-registration module: ``moving`` (DRR) and ``fixed`` (X-ray)."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        self.moving = CompositeEncoder(self.config)
        self.fixed = CompositeEncoder(self.config)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.moving(moving), self.fixed(fixed)

    def distance(self, embedded_moving: torch.Tensor, embedded_fixed: torch.Tensor, projected_mask: torch.Tensor) -> torch.Tensor:
        """``L_N`` (paper eq. 6) per image ``(B,)``: weighted by ``projected_mask`` ``(B, rows, cols)``
        when the config's ``masked_loss`` is on, over every cell when it is off."""
        return masked_feature_distance(embedded_moving, embedded_fixed, projected_mask if self.config.masked_loss else None)
