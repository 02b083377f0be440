"""Everything in the UNet that is there for speed, kept apart from the network it computes.

The blocks (:mod:`~ddpm.models.resnet`, :mod:`~ddpm.models.attention`, :mod:`~ddpm.models.unet_blocks`,
:mod:`~ddpm.models.unet_2d`) are written as the architecture. What is here changes how that network is evaluated,
never what it computes (results agree to float rounding, ~1e-6); each piece measurably speeds up the CPU forward
(``benchmarks/unet_forward.py``, docs/performance.md).

1. **Weight layout per device** (:func:`preferred_memory_format`, :class:`DeviceLayoutMixin`). Convolution weights
   are stored channels_last on the CPU, so the activations run in that layout too (oneDNN's convolutions and
   PyTorch's CPU GroupNorm have NHWC kernels; otherwise oneDNN re-lays the weights out on every call), and in the
   standard layout on CUDA, where PyTorch's GroupNorm has no channels_last kernel. A model re-lays its weights out
   whenever it moves to another kind of device.
2. **Eager inference fast paths** (:func:`fast_paths_enabled`, :func:`resnet_block`, :func:`subpixel_upsample`).
   Evaluations of a residual block and of the upsampler that save passes over the largest tensors: activations and
   residual sums overwrite temporaries, one time embedding for the whole batch rides in ``conv1``'s bias, the 1×1
   shortcut is accumulated into ``conv2``'s output by one in-place matrix product, and nearest-neighbour upsampling
   followed by a 3×3 conv runs as one sub-pixel convolution. Overwritten temporaries are what autograd would keep
   for the backward pass, so these run only with autograd off (``no_grad``, ``inference_mode``), and only in eager
   mode: ``torch.compile`` traces the plain forward instead, as one graph (inductor fuses the elementwise work
   itself; in-place writes, ``as_strided`` views and a weight cache would split its graph).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self

    from .activations import Activation
    from .resnet import ResnetBlock2D

try:
    from torch.compiler import is_compiling
except ImportError:  # torch < 2.3
    from torch._dynamo import is_compiling

__all__ = [
    "DeviceLayoutMixin",
    "fast_paths_enabled",
    "preferred_memory_format",
    "relayout_convolutions",
    "resnet_block",
    "subpixel_upsample",
    "subpixel_upsample_applies",
]


# ---------------------------------------------------------------------------------------------- 1. weight layout


def preferred_memory_format(device: torch.device | str) -> torch.memory_format:
    """The activation layout the UNet runs fastest in on ``device``'s kind of processor.

    channels_last on the CPU (oneDNN's convolutions and PyTorch's CPU GroupNorm both have NHWC kernels) and on
    ``meta`` (where models are built before their weights are loaded onto the CPU); the standard layout elsewhere.
    On CUDA, PyTorch's GroupNorm (through 2.11 at least) has no channels_last kernel: it copies its input to the
    standard layout and returns that layout, and the next convolution copies it back. On an H200 that made the
    channels_last UNet's batch-16 and batch-64 forwards 1.2 to 1.4 times slower than diffusers' standard-layout
    one (``benchmarks/gpu_sampling.py``, see docs/performance.md).
    """
    return torch.channels_last if torch.device(device).type in ("cpu", "meta") else torch.contiguous_format


def relayout_convolutions(model: nn.Module) -> None:
    """Store every ``Conv2d`` weight of ``model`` in the preferred layout of the device it is on."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            layout = preferred_memory_format(module.weight.device)
            module.weight.data = module.weight.data.contiguous(memory_format=layout)


class DeviceLayoutMixin(nn.Module):
    """Keeps a model's convolution weights in the preferred layout of its device.

    The model calls :func:`relayout_convolutions` once it is built; afterwards ``.to(device)``, ``.cuda()`` and
    ``.cpu()`` end in the new device's preferred layout, while a dtype change or an explicit
    ``.to(memory_format=...)`` on the same device keeps the layout it gives. Loading weights copies into the
    existing tensors and so keeps their layout.
    """

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        before = {p.device.type for p in self.parameters()}
        result = super()._apply(fn, recurse)
        _folded_upsamplers.clear()  # derived from the tensors just replaced
        if {p.device.type for p in self.parameters()} != before:
            relayout_convolutions(self)
        return result


# ---------------------------------------------------------------------------------------------- 2. fast paths


def fast_paths_enabled() -> bool:
    """Whether the blocks take the inference fast paths: eager execution with autograd off."""
    return not torch.is_grad_enabled() and not is_compiling()


# The in-place form of each activation that has one (GELU has none).
_IN_PLACE: dict[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] = {
    F.silu: partial(F.silu, inplace=True),
    F.mish: partial(F.mish, inplace=True),
    F.relu: partial(F.relu, inplace=True),
}


def _activate_(act: Activation, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, overwriting ``x`` where the activation has an in-place form."""
    return _IN_PLACE.get(act.function, act.function)(x)


def _add_(h: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``h + other``, written into ``h`` unless the sum needs a wider dtype (autocast can mix dtypes)."""
    return h.add_(other) if torch.promote_types(h.dtype, other.dtype) == h.dtype else h + other


def _channels_last_on_cpu(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.is_contiguous(memory_format=torch.channels_last) for t in tensors)


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    assert conv.bias is not None  # every convolution of the UNet has one
    return conv.bias


def resnet_block(block: ResnetBlock2D, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """``block(x, temb)`` in fewer passes over memory (inference only: it overwrites its temporaries).

    Shapes as in :meth:`ResnetBlock2D.forward <ddpm.models.resnet.ResnetBlock2D.forward>`: x (B, C_in, H, W), temb
    (B or 1, E), output (B, C_out, H, W).
    """
    act, conv1, conv2, shortcut = block.nonlinearity, block.conv1, block.conv2, block.conv_shortcut
    t = block.time_emb_proj(act(temb))  # (Bt, C_out)
    h = _activate_(act, block.norm1(x))
    if t.shape[0] == 1:
        # One embedding for the whole batch: a per-channel constant, so it rides along in conv1's bias.
        h = F.conv2d(h, conv1.weight, _bias(conv1) + t[0], padding=1)
    else:
        h = _add_(conv1(h), t[:, :, None, None])  # (B, C_out, H, W)
    h = block.dropout(_activate_(act, block.norm2(h)))
    if shortcut is not None and _channels_last_on_cpu(h, x):
        # h = conv2(h) + W_sc x + b_sc, with the 1×1 shortcut accumulated into conv2's output by one in-place
        # matrix product over the pixels (channels_last makes (B, C, H, W) a (B·H·W, C) matrix view).
        h = F.conv2d(h, conv2.weight, _bias(conv2) + _bias(shortcut), padding=1)
        w = shortcut.weight  # (C_out, C_in, 1, 1)
        h_rows = h.permute(0, 2, 3, 1).view(-1, h.shape[1])  # (B·H·W, C_out), a view (never a copy)
        x_rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (B·H·W, C_in), a view
        # (dtype casts only matter under autocast, which does not cast in-place ops)
        h_rows.addmm_(x_rows.to(h.dtype), w.reshape(w.shape[0], w.shape[1]).t().to(h.dtype))
    else:
        h = _add_(block.conv2(h), x if shortcut is None else shortcut(x))
    factor = block.output_scale_factor
    return h if factor == 1.0 else h.div_(factor)


# Folded sub-pixel weights per upsampler conv: (key of the weights they came from, weight, bias).
_folded_upsamplers: weakref.WeakKeyDictionary[nn.Conv2d, tuple[tuple[object, ...], torch.Tensor, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def _subpixel_weights(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The (4·C, C, 2, 2) weight and (4·C,) bias of the four output phases (phase 2·row_parity + col_parity).

    Cached per conv until its weights change in place (their version counter moves) or are replaced.
    """
    w, b = conv.weight, _bias(conv)
    try:
        key: tuple[object, ...] | None = (w.data_ptr(), w._version, b.data_ptr(), b._version, w.dtype, w.device)
    except RuntimeError:  # inference-mode tensors have no version counter: do not cache
        key = None
    cached = _folded_upsamplers.get(conv)
    if cached is not None and key is not None and cached[0] == key:
        return cached[1], cached[2]

    def fold(k: torch.Tensor, dim: int) -> list[torch.Tensor]:
        # Along one axis, an even output position sees inputs (i-1, i) with taps (k0, k1 + k2), an odd one
        # sees (i, i+1) with taps (k0 + k1, k2).
        k0, k1, k2 = k.unbind(dim)
        return [torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)]

    phases = [wc for wr in fold(w, 2) for wc in fold(wr, 3)]  # 4 × (C, C, 2, 2)
    weight = torch.cat(phases).contiguous(memory_format=torch.channels_last)  # (4C, C, 2, 2)
    bias = b.repeat(4)  # (4C,)
    if key is not None:
        _folded_upsamplers[conv] = (key, weight, bias)
    return weight, bias


def subpixel_upsample_applies(x: torch.Tensor) -> bool:
    """Whether :func:`subpixel_upsample` takes ``x``: eager inference on the CPU with channels_last input."""
    return fast_paths_enabled() and _channels_last_on_cpu(x)


def subpixel_upsample(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(interpolate(x, scale_factor=2, mode="nearest"))`` as one sub-pixel convolution (inference only).

    Each of the four output phases (even/odd row × even/odd column) of ``conv3x3(upsample(x))`` is a 2×2 conv of
    ``x`` whose taps are sums of the 3×3 taps: 16 instead of 36 multiply-adds per input pixel and channel pair.
    Needs channels_last input on the CPU (:func:`subpixel_upsample_applies`).

    Args:
        conv: A 3×3, padding-1 convolution with C input and output channels.
        x: Shape (B, C, H, W).

    Returns:
        Shape (B, C, 2H, 2W), channels_last.
    """
    bsz, c, height, width = x.shape
    weight, bias = _subpixel_weights(conv)
    # Output pixel (2i + a, 2j + b), channel o, is y[:, (2a + b)·C + o, i + a, j + b].
    y = F.conv2d(x, weight, bias, padding=1).contiguous(memory_format=torch.channels_last)  # (B, 4C, H+1, W+1)
    s_b, _, s_h, s_w = y.stride()  # channels_last: s_w = 4C, s_h = (W+1)·4C, channel stride 1
    # View y as (B, H, 2, W, 2, C) indexed [n, i, a, j, b, o] -> y[n, (2a + b)·C + o, i + a, j + b]; copying it
    # out gives the (B, 2H, 2W, C) upsampled image in one pass.
    phases = y.as_strided((bsz, height, 2, width, 2, c), (s_b, s_h, s_h + 2 * c, s_w, s_w + c, 1))
    out = phases.contiguous().view(bsz, 2 * height, 2 * width, c)  # (B, 2H, 2W, C)
    return out.permute(0, 3, 1, 2)  # (B, C, 2H, 2W), channels_last
