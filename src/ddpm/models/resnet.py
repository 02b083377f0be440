"""Residual blocks, down- and upsamplers of the UNet. Module and parameter names match diffusers' state dicts.

Each ``forward`` is the network as the paper draws it. In eager inference the plain residual block and the
upsampler hand over to equivalent, faster evaluations in :mod:`ddpm.models.optimizations`.

The resampling filters of NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations", Appendix H) are StyleGAN2's FIR filters: the separable binomial kernel ``[1, 3, 3, 1]`` applied by
``upfirdn2d`` (upsample by zero insertion, pad, filter, downsample by striding). For the factor-2 case used here
that is one depthwise convolution (:func:`fir_downsample2d`) or one depthwise transposed convolution
(:func:`fir_upsample2d`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .activations import Activation
from .optimizations import fast_paths_enabled, resnet_block, subpixel_upsample, subpixel_upsample_applies

__all__ = [
    "RESAMPLERS",
    "TIME_EMBEDDING_NORMS",
    "Downsample2D",
    "ResnetBlock2D",
    "Upsample2D",
    "fir_downsample2d",
    "fir_upsample2d",
    "group_norm",
]

#: How a residual block may add the time embedding (diffusers' ``resnet_time_scale_shift``): ``"default"`` adds
#: it before ``norm2``; ``"scale_shift"`` modulates after it, ``norm2(h) · (1 + scale) + shift`` (Dhariwal & Nichol
#: 2021, "AdaGN").
TIME_EMBEDDING_NORMS: tuple[str, ...] = ("default", "scale_shift")

# The 1-d FIR taps of StyleGAN2's default resampling filter (a binomial filter); the 2-d kernel is their outer product.
_FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


def group_norm(groups: int, channels: int, eps: float) -> nn.GroupNorm:
    """``nn.GroupNorm(groups, channels, eps)``, with a :class:`ConfigError` naming both numbers if they do not fit."""
    if groups <= 0 or channels % groups:
        raise ConfigError(
            f"a GroupNorm over {channels} channels cannot have {groups} groups (the channel count must be a multiple "
            "of the group count); change norm_num_groups / attn_norm_num_groups or block_out_channels"
        )
    return nn.GroupNorm(groups, channels, eps=eps)


def _fir_kernel(x: torch.Tensor, gain: float) -> torch.Tensor:
    """The normalised 4×4 FIR kernel times ``gain``, one copy per channel of x: shape (C, 1, 4, 4)."""
    taps = torch.tensor(_FIR_TAPS, dtype=torch.float32, device=x.device)
    kernel = torch.outer(taps, taps)
    kernel = kernel / kernel.sum() * gain  # sums to gain
    return kernel.to(x.dtype).repeat(x.shape[1], 1, 1, 1)


def fir_downsample2d(x: torch.Tensor) -> torch.Tensor:
    """Halve H and W with the FIR filter: ``upfirdn2d(x, k, down=2, pad=(1, 1))``.

    Maps (B, C, H, W) to (B, C, H/2, W/2); a constant image keeps its value.
    """
    padded = F.pad(x, (1, 1, 1, 1))  # (B, C, H+2, W+2)
    return F.conv2d(padded, _fir_kernel(x, 1.0), stride=2, groups=x.shape[1])


def fir_upsample2d(x: torch.Tensor) -> torch.Tensor:
    """Double H and W with the FIR filter: ``upfirdn2d(x, 4k, up=2, pad=(2, 1))``.

    Zero insertion, padding 2 before and 1 after, and the 4×4 filter are exactly a stride-2 transposed convolution
    with padding 1. Maps (B, C, H, W) to (B, C, 2H, 2W); the gain 4 = factor² keeps a constant image's value.
    """
    return F.conv_transpose2d(x, _fir_kernel(x, 4.0), stride=2, padding=1, groups=x.shape[1])


def _nearest_upsample2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W), nearest neighbour."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _average_downsample2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H/2, W/2), 2×2 average pooling."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


#: The resampling a residual block may do between its first activation and ``conv1``, by name.
RESAMPLERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "up": _nearest_upsample2d,
    "down": _average_downsample2d,
    "fir_up": fir_upsample2d,
    "fir_down": fir_downsample2d,
}


class ResnetBlock2D(nn.Module):
    """Pre-norm residual block with a time-embedding term (Ho et al. 2020, Appendix B; Wide ResNet style).

    ``h = conv1(act(norm1(x))) + time_emb_proj(act(temb))``; ``h = conv2(dropout(act(norm2(h))))``;
    output ``(shortcut(x) + h) / output_scale_factor``, where the shortcut is a 1×1 conv when the channel count
    changes (or ``use_in_shortcut``) and the identity otherwise. With ``time_embedding_norm="scale_shift"`` the
    projection is twice as wide and ``norm2(h)`` becomes ``norm2(h) · (1 + scale) + shift``. A resampling block
    (``resample``) resizes both ``act(norm1(x))`` and the shortcut input before the convolutions (BigGAN style, as
    NCSN++ does).

    Args:
        in_channels: Channels of ``x``.
        out_channels: Channels of the output.
        temb_channels: Width of the time embedding.
        groups: GroupNorm groups of ``norm1``.
        eps: GroupNorm epsilon (``norm_eps``).
        act_fn: Activation name (``act_fn``).
        dropout: Dropout probability before ``conv2`` (active in training mode only).
        output_scale_factor: The output divisor (the mid block uses ``mid_block_scale_factor``).
        groups_out: GroupNorm groups of ``norm2``; None means ``groups``.
        time_embedding_norm: One of :data:`TIME_EMBEDDING_NORMS` (``resnet_time_scale_shift``).
        resample: None, or a key of :data:`RESAMPLERS`.
        use_in_shortcut: Force (True) or forbid (False) the 1×1 shortcut conv; None: only if the width changes.
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
        groups_out: int | None = None,
        time_embedding_norm: str = "default",
        resample: str | None = None,
        use_in_shortcut: bool | None = None,
    ) -> None:
        super().__init__()
        if time_embedding_norm not in TIME_EMBEDDING_NORMS:
            raise ConfigError(
                f"config key 'resnet_time_scale_shift' has value {time_embedding_norm!r}; expected one of "
                f"{', '.join(map(repr, TIME_EMBEDDING_NORMS))}"
            )
        if resample is not None and resample not in RESAMPLERS:
            raise ValueError(f"resample must be None or one of {', '.join(RESAMPLERS)}, got {resample!r}")
        self.norm1 = group_norm(groups, in_channels, eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        projected = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
        self.time_emb_proj = nn.Linear(temb_channels, projected)
        self.norm2 = group_norm(groups if groups_out is None else groups_out, out_channels, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = Activation(act_fn)
        shortcut = in_channels != out_channels if use_in_shortcut is None else use_in_shortcut
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1) if shortcut else None
        self.output_scale_factor = output_scale_factor
        self.time_embedding_norm = time_embedding_norm
        self.resample = resample
        # The eager fast path (optimizations.resnet_block) computes the plain block only.
        self.plain = resample is None and time_embedding_norm == "default"

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Map x (B, in_channels, H, W) and temb (B or 1, temb_channels) to (B, out_channels, H', W').

        H' = H except for a resampling block (2H up, H/2 down).
        """
        if self.plain and fast_paths_enabled():  # eager inference: the same map in fewer passes over memory
            return resnet_block(self, x, temb)
        h = self.nonlinearity(self.norm1(x))  # (B, in_channels, H, W)
        if self.resample is not None:
            resample = RESAMPLERS[self.resample]
            x, h = resample(x), resample(h)  # (B, in_channels, H', W')
        h = self.conv1(h)  # (B, out_channels, H', W')
        t = self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]  # (B or 1, out or 2·out, 1, 1)
        if self.time_embedding_norm == "default":
            h = self.norm2(h + t)
        else:  # scale_shift
            scale, shift = t.chunk(2, dim=1)  # each (B or 1, out_channels, 1, 1)
            h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(self.nonlinearity(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)  # (B, out_channels, H', W')
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
        return self.conv(_nearest_upsample2d(x))
