"""Residual blocks, down- and upsamplers of the UNet. Module and parameter names match diffusers' state dicts.

Each ``forward`` is the network as the paper draws it. In eager inference the residual block and the upsampler hand
over to equivalent, faster evaluations in :mod:`ddpm.models.optimizations`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .activations import Activation
from .optimizations import fast_paths_enabled, resnet_block, subpixel_upsample, subpixel_upsample_applies

__all__ = ["Downsample2D", "ResnetBlock2D", "Upsample2D"]


class ResnetBlock2D(nn.Module):
    """Pre-norm residual block with a time-embedding term (Ho et al. 2020, Appendix B; Wide ResNet style).

    ``h = conv1(act(norm1(x))) + time_emb_proj(act(temb))``; ``h = conv2(dropout(act(norm2(h))))``;
    output ``(shortcut(x) + h) / output_scale_factor``, where the shortcut is a 1×1 conv when the channel count
    changes and the identity otherwise.

    Args:
        in_channels: Channels of ``x``.
        out_channels: Channels of the output.
        temb_channels: Width of the time embedding.
        groups: GroupNorm groups (``norm_num_groups``).
        eps: GroupNorm epsilon (``norm_eps``).
        act_fn: Activation name (``act_fn``).
        dropout: Dropout probability before ``conv2`` (active in training mode only).
        output_scale_factor: The output divisor (the mid block uses ``mid_block_scale_factor``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        groups: int,
        eps: float,
        act_fn: str = "silu",
        dropout: float = 0.0,
        output_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = Activation(act_fn)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Map x (B, in_channels, H, W) and temb (B or 1, temb_channels) to (B, out_channels, H, W)."""
        if fast_paths_enabled():  # eager inference: the same map in fewer passes over memory
            return resnet_block(self, x, temb)
        h = self.conv1(self.nonlinearity(self.norm1(x)))  # (B, out_channels, H, W)
        h = h + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]  # + (B or 1, out_channels, 1, 1)
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)  # (B, out_channels, H, W)
        return (skip + h) / self.output_scale_factor


class Downsample2D(nn.Module):
    """Halve H and W with a strided 3×3 conv.

    With ``padding=0`` the input is first zero-padded on the right and bottom only (the original TF ``'SAME'``
    convention of the google/ddpm-* models); with ``padding=1`` the conv pads all sides.

    Args:
        channels: Input and output channels.
        padding: ``downsample_padding``, 0 or 1.
    """

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        if padding not in (0, 1):
            raise ConfigError(f"config key 'downsample_padding' has value {padding!r}; expected 0 or 1")
        self.padding = padding
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, H/2, W/2)."""
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))  # (B, C, H+1, W+1)
        return self.conv(x)


class Upsample2D(nn.Module):
    """Double H and W: nearest-neighbour upsampling followed by a 3×3 conv.

    Args:
        channels: Input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, 2H, 2W)."""
        if subpixel_upsample_applies(x):  # CPU inference: the same map as one sub-pixel convolution
            return subpixel_upsample(self.conv, x)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
