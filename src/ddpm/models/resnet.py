"""Residual blocks, down- and upsamplers of the UNet. Module and parameter names match diffusers' state dicts.

Speed notes (CPU, measured with benchmarks/unet_forward.py): activations are applied in place whenever autograd
does not need their input, and the per-channel time-embedding term is folded into ``conv1``'s bias when one
embedding serves the whole batch; both save a full pass over the largest tensors of the network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "Downsample2D",
    "ResnetBlock2D",
    "Upsample2D",
    "add_into",
    "divide",
    "make_activation",
    "may_overwrite",
]

#: Activation names accepted by ``act_fn`` → (function, whether it has an in-place form).
ACTIVATIONS: dict[str, tuple[Callable[..., torch.Tensor], bool]] = {
    "silu": (F.silu, True),
    "swish": (F.silu, True),
    "mish": (F.mish, True),
    "relu": (F.relu, True),
    "gelu": (F.gelu, False),
}


def may_overwrite(x: torch.Tensor) -> bool:
    """True when ``x`` may be modified in place without breaking autograd (no graph is being recorded for it)."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def add_into(h: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``h + other``, written into ``h`` (a temporary) when autograd and the dtypes allow it."""
    if may_overwrite(h) and torch.result_type(h, other) == h.dtype:
        return h.add_(other)
    return h + other


def divide(h: torch.Tensor, factor: float) -> torch.Tensor:
    """``h / factor``, in place when autograd allows it; nothing at all for ``factor == 1``."""
    if factor == 1.0:
        return h
    return h.div_(factor) if may_overwrite(h) else h / factor


class Activation(nn.Module):
    """An elementwise activation chosen by name, with an opt-in in-place mode.

    Args:
        name: One of :data:`ACTIVATIONS`.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in ACTIVATIONS:
            allowed = ", ".join(map(repr, ACTIVATIONS))
            raise ConfigError(f"config key 'act_fn' has value {name!r}; expected one of {allowed}")
        self.name = name
        self._fn, self._has_inplace = ACTIVATIONS[name]

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Apply the activation; with ``inplace=True`` overwrite ``x`` when that is safe for autograd."""
        if inplace and self._has_inplace and may_overwrite(x):
            return self._fn(x, inplace=True)
        return self._fn(x)

    def extra_repr(self) -> str:
        return self.name


def make_activation(name: str) -> Activation:
    """The :class:`Activation` for ``name`` (raises :class:`~ddpm.errors.ConfigError` for unknown names)."""
    return Activation(name)


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
        self.nonlinearity = make_activation(act_fn)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )
        self.output_scale_factor = output_scale_factor

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Map x (B, in_channels, H, W) and temb (B or 1, temb_channels) to (B, out_channels, H, W)."""
        act = self.nonlinearity
        t = self.time_emb_proj(act(temb))  # (Bt, out_channels)
        h = act(self.norm1(x), inplace=True)
        if t.shape[0] == 1:
            # One embedding for the whole batch: a per-channel constant, so it rides along in conv1's bias.
            h = F.conv2d(h, self.conv1.weight, self.conv1.bias + t[0], padding=1)
        else:
            h = self.conv1(h)
            h = add_into(h, t[:, :, None, None])  # (B, C, H, W)
        h = act(self.norm2(h), inplace=True)
        h = self.dropout(h)
        if self.conv_shortcut is not None and _fits_channels_last_gemm(h, x):
            # h = conv2(h) + W_sc x + b_sc, with the 1×1 shortcut accumulated into conv2's output by one in-place
            # matrix product over the pixels (channels_last makes (B, C, H, W) a (B·H·W, C) matrix view).
            h = F.conv2d(h, self.conv2.weight, self.conv2.bias + self.conv_shortcut.bias, padding=1)
            w = self.conv_shortcut.weight
            h_rows = h.permute(0, 2, 3, 1).view(-1, h.shape[1])  # (B·H·W, C_out), a view (never a copy)
            x_rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (B·H·W, C_in), a view
            # (dtype casts only matter under autocast, which does not cast in-place ops)
            h_rows.addmm_(x_rows.to(h.dtype), w.reshape(w.shape[0], w.shape[1]).t().to(h.dtype))
        else:
            h = self.conv2(h)
            h = add_into(h, x if self.conv_shortcut is None else self.conv_shortcut(x))
        return divide(h, self.output_scale_factor)


def _fits_channels_last_gemm(h: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether the 1×1 shortcut can be added to ``h`` in place as a matrix product (inference, channels_last)."""
    cl = torch.channels_last
    return (
        h.device.type == "cpu"
        and may_overwrite(h)
        and h.is_contiguous(memory_format=cl)
        and x.is_contiguous(memory_format=cl)
    )


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

    On CPU, in inference, with channels_last input the two steps run as one "sub-pixel" convolution: each of the
    four output phases (even/odd row × even/odd column) of ``conv3x3(upsample(x))`` is a 2×2 conv of ``x`` whose
    taps are sums of the 3×3 taps, so 16 instead of 36 multiply-adds per input pixel and channel pair. The results
    agree with the two-step form to float rounding (~1e-6).

    Args:
        channels: Input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self._subpixel_cache: tuple[tuple[object, ...], torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, 2H, 2W)."""
        if (
            x.device.type == "cpu"
            and x.is_contiguous(memory_format=torch.channels_last)
            and not (torch.is_grad_enabled() and (x.requires_grad or self.conv.weight.requires_grad))
        ):
            return self._subpixel(x)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

    def _subpixel_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (4·C, C, 2, 2) weight and (4·C,) bias of the four output phases (phase 2·row_parity + col_parity)."""
        w, b = self.conv.weight, self.conv.bias
        try:
            key: tuple[object, ...] | None = (w.data_ptr(), w._version, b.data_ptr(), b._version, w.dtype)
        except RuntimeError:  # inference-mode tensors have no version counter: do not cache
            key = None
        cache = self._subpixel_cache
        if cache is not None and key is not None and cache[0] == key:
            return cache[1], cache[2]

        def fold(k: torch.Tensor, dim: int) -> list[torch.Tensor]:
            # Along one axis, an even output position sees inputs (i-1, i) with taps (k0, k1 + k2), an odd one
            # sees (i, i+1) with taps (k0 + k1, k2).
            k0, k1, k2 = k.unbind(dim)
            return [torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)]

        phases = [wc for wr in fold(w, 2) for wc in fold(wr, 3)]  # 4 × (C, C, 2, 2)
        weight = torch.cat(phases).contiguous(memory_format=torch.channels_last)  # (4C, C, 2, 2)
        bias = b.repeat(4)  # (4C,)
        self._subpixel_cache = (key, weight, bias) if key is not None else None
        return weight, bias

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._subpixel_cache = None  # .to(), .cuda(), .half() ... make the folded weights stale
        return super()._apply(fn, recurse)

    def _subpixel(self, x: torch.Tensor) -> torch.Tensor:
        bsz, c, height, width = x.shape
        weight, bias = self._subpixel_weights()
        # Output pixel (2i + a, 2j + b), channel o, is y[:, (2a + b)·C + o, i + a, j + b].
        y = F.conv2d(x, weight, bias, padding=1).contiguous(memory_format=torch.channels_last)  # (B, 4C, H+1, W+1)
        s_b, _, s_h, s_w = y.stride()  # channels_last: s_w = 4C, s_h = (W+1)·4C, channel stride 1
        # View y as (B, H, 2, W, 2, C) indexed [n, i, a, j, b, o] -> y[n, (2a + b)·C + o, i + a, j + b]; copying it
        # out gives the (B, 2H, 2W, C) upsampled image in one pass.
        phases = y.as_strided((bsz, height, 2, width, 2, c), (s_b, s_h, s_h + 2 * c, s_w, s_w + c, 1))
        out = phases.contiguous().view(bsz, 2 * height, 2 * width, c)  # (B, 2H, 2W, C)
        return out.permute(0, 3, 1, 2)  # (B, C, 2H, 2W), channels_last
