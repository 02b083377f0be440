"""The UNet's down, mid and up blocks, and :data:`BLOCK_TYPES`, the only place block names map to classes.

A down block runs ``layers_per_block`` residual blocks (each followed by attention in ``AttnDownBlock2D``) and then,
except at the lowest resolution, a :class:`~ddpm.models.resnet.Downsample2D`; every intermediate output is kept as a
skip connection. An up block runs ``layers_per_block + 1`` residual blocks, each fed the concatenation
``[h, skip]`` of the running features and the most recent unused skip, then (except at the top) an
:class:`~ddpm.models.resnet.Upsample2D`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .attention import AttentionBlock
from .resnet import Downsample2D, ResnetBlock2D, Upsample2D

__all__ = [
    "BLOCK_TYPES",
    "DOWN_BLOCK_TYPES",
    "MID_BLOCK_TYPES",
    "UP_BLOCK_TYPES",
    "AttnDownBlock2D",
    "AttnUpBlock2D",
    "BlockSettings",
    "DownBlock2D",
    "UNetMidBlock2D",
    "UpBlock2D",
    "block_class",
]


@dataclass(frozen=True)
class BlockSettings:
    """The settings every block of one UNet shares (taken from its config).

    Attributes:
        temb_channels: Width of the time embedding.
        groups: GroupNorm groups (``norm_num_groups``).
        eps: GroupNorm epsilon (``norm_eps``).
        act_fn: Activation name.
        dropout: Dropout probability in the residual blocks.
        attention_head_dim: Width of one attention head, or None for one head per block.
        downsample_padding: 0 (pad right/bottom) or 1 (pad all sides).
    """

    temb_channels: int
    groups: int
    eps: float
    act_fn: str
    dropout: float
    attention_head_dim: int | None
    downsample_padding: int

    def resnet(self, in_channels: int, out_channels: int, output_scale_factor: float = 1.0) -> ResnetBlock2D:
        """A residual block with these settings."""
        return ResnetBlock2D(
            in_channels,
            out_channels,
            self.temb_channels,
            groups=self.groups,
            eps=self.eps,
            act_fn=self.act_fn,
            dropout=self.dropout,
            output_scale_factor=output_scale_factor,
        )

    def attention(self, channels: int, groups: int | None = None, rescale_output_factor: float = 1.0) -> AttentionBlock:
        """An attention block with these settings (``groups`` overrides the GroupNorm group count)."""
        return AttentionBlock(
            channels,
            self.attention_head_dim,
            groups=self.groups if groups is None else groups,
            eps=self.eps,
            rescale_output_factor=rescale_output_factor,
        )


class _DownBlock(nn.Module):
    has_attention: ClassVar[bool]

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool, settings: BlockSettings
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            settings.resnet(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)
        )
        if self.has_attention:
            self.attentions = nn.ModuleList(settings.attention(out_channels) for _ in range(num_layers))
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, settings.downsample_padding)]) if add_downsample else None
        )

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Map h (B, C_in, H, W) to (B, C_out, H', W') and the skips this block leaves for the up path."""
        skips: list[torch.Tensor] = []
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.has_attention:
                h = self.attentions[i](h)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class DownBlock2D(_DownBlock):
    """Residual blocks, then an optional downsampler."""

    has_attention = False


class AttnDownBlock2D(_DownBlock):
    """Residual blocks each followed by self-attention, then an optional downsampler."""

    has_attention = True


class UNetMidBlock2D(nn.Module):
    """``resnet → attention → resnet`` at the lowest resolution (attention can be switched off).

    Args:
        channels: Input and output channels.
        settings: The shared block settings.
        output_scale_factor: ``mid_block_scale_factor``, the divisor of both resnets' and the attention's output.
        add_attention: Whether the attention layer exists.
        attn_groups: GroupNorm groups of the attention (``attn_norm_num_groups``; None means ``settings.groups``).
    """

    def __init__(
        self,
        channels: int,
        settings: BlockSettings,
        *,
        output_scale_factor: float = 1.0,
        add_attention: bool = True,
        attn_groups: int | None = None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            settings.resnet(channels, channels, output_scale_factor=output_scale_factor) for _ in range(2)
        )
        self.add_attention = add_attention
        self.attentions = nn.ModuleList(
            [settings.attention(channels, groups=attn_groups, rescale_output_factor=output_scale_factor)]
            if add_attention
            else []
        )

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, H, W)."""
        h = self.resnets[0](h, temb)
        if self.add_attention:
            h = self.attentions[0](h)
        return self.resnets[1](h, temb)


class _UpBlock(nn.Module):
    has_attention: ClassVar[bool]

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        add_upsample: bool,
        settings: BlockSettings,
    ) -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            # The last resnet consumes the skip from the level below (in_channels wide), the others skips of this
            # level; the first continues from the previous up block.
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            h_channels = prev_output_channels if i == 0 else out_channels
            resnets.append(settings.resnet(h_channels + skip_channels, out_channels))
        self.resnets = nn.ModuleList(resnets)
        if self.has_attention:
            self.attentions = nn.ModuleList(settings.attention(out_channels) for _ in range(num_layers))
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        """Map h (B, C_prev, H, W) to (B, C_out, H', W'), consuming (popping) one skip per residual block."""
        for i, resnet in enumerate(self.resnets):
            h = resnet(torch.cat([h, skips.pop()], dim=1), temb)  # input (B, C_h + C_skip, H, W)
            if self.has_attention:
                h = self.attentions[i](h)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h)
        return h


class UpBlock2D(_UpBlock):
    """Residual blocks over ``[h, skip]``, then an optional upsampler."""

    has_attention = False


class AttnUpBlock2D(_UpBlock):
    """Residual blocks over ``[h, skip]`` each followed by self-attention, then an optional upsampler."""

    has_attention = True


#: Every block name a config may use, mapped to its class.
BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "DownBlock2D": DownBlock2D,
    "AttnDownBlock2D": AttnDownBlock2D,
    "UNetMidBlock2D": UNetMidBlock2D,
    "UpBlock2D": UpBlock2D,
    "AttnUpBlock2D": AttnUpBlock2D,
}
DOWN_BLOCK_TYPES: tuple[str, ...] = tuple(k for k, v in BLOCK_TYPES.items() if issubclass(v, _DownBlock))
UP_BLOCK_TYPES: tuple[str, ...] = tuple(k for k, v in BLOCK_TYPES.items() if issubclass(v, _UpBlock))
MID_BLOCK_TYPES: tuple[str, ...] = tuple(k for k, v in BLOCK_TYPES.items() if v is UNetMidBlock2D)

#: diffusers also accepts these names with a legacy ``UNetRes`` prefix (e.g. ``UNetResDownBlock2D``).
_LEGACY_PREFIX = "UNetRes"


def block_class(name: str) -> type[nn.Module] | None:
    """The class for a block name (legacy ``UNetRes`` prefix allowed), or None if ddpm has no such block."""
    return BLOCK_TYPES.get(name.removeprefix(_LEGACY_PREFIX))
