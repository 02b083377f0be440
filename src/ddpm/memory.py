"""The memory a request needs against the memory there is: refuse what cannot fit *before* allocating it.

A hostile or mistyped request (a config with ``sample_size`` 65536, a batch of a million images, a weights file of
18 GB) must end in a clear :class:`~ddpm.errors.ResourceLimitError` that gives the estimate, the limit and how to
lower the request, instead of an allocation that swaps the machine to a halt or is killed by the kernel.

The limit is the memory available on the device (on the CPU: ``MemAvailable`` from ``/proc/meminfo``, else the
physical memory; on CUDA: the free memory ``torch.cuda.mem_get_info`` reports). ``DDPM_MEMORY_LIMIT`` (bytes, or
with a unit: ``512MB``, ``8GiB``) overrides it, e.g. to keep several jobs within their share of a machine.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Protocol

import torch

from .errors import ConfigError, ResourceLimitError

__all__ = [
    "LIMIT_ENV",
    "UNetShape",
    "available_bytes",
    "check_fits",
    "check_sampling_fits",
    "format_bytes",
    "memory_limit",
    "parse_bytes",
    "sampling_bytes",
]

#: The environment variable that overrides the memory limit (bytes, or a size with a unit).
LIMIT_ENV = "DDPM_MEMORY_LIMIT"

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_bytes(text: str) -> int:
    """``"512MB"`` → 512000000, ``"8GiB"`` → 8589934592, ``"1000"`` → 1000.

    Raises:
        ConfigError: ``text`` is not a non-negative number with an optional unit (B, KB, MB, GB, TB, KiB ... TiB).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{text!r} is not a size; write bytes or a number with a unit such as 512MB or 8GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """A size for messages: ``1.5 GiB``, ``320 MiB``, ``12 KiB``, ``100 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _cpu_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """The memory available now on ``device`` (default: the CPU); None where it cannot be known (e.g. MPS)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return _cpu_available()
    return None


def memory_limit(device: torch.device | str | None = None) -> int | None:
    """The most memory one request may ask for: :data:`LIMIT_ENV` when set, else :func:`available_bytes`."""
    override = os.environ.get(LIMIT_ENV)
    if override:
        return parse_bytes(override)
    return available_bytes(device)


def check_fits(need: int, *, what: str, lower: str, device: torch.device | str | None = None) -> None:
    """Refuse a request that needs more than :func:`memory_limit` bytes, before anything is allocated.

    Args:
        need: The estimated bytes the request needs.
        what: The request, for the message (``"sampling a batch of 64 images of 256x256"``).
        lower: How to lower it (``"use a smaller --batch-size"``).
        device: Where the memory would be allocated (default: the CPU).

    Raises:
        ResourceLimitError: ``need`` exceeds the limit; the message gives both and ``lower``.
    """
    limit = memory_limit(device)
    if limit is None or need <= limit:
        return
    where = torch.device(device if device is not None else "cpu")
    source = f"{LIMIT_ENV}={os.environ[LIMIT_ENV]}" if os.environ.get(LIMIT_ENV) else f"available on {where}"
    raise ResourceLimitError(
        f"{what} needs about {format_bytes(need)}, more than the {format_bytes(limit)} {source}; {lower} "
        f"(or set {LIMIT_ENV} to allow more)"
    )


# ---------------------------------------------------------------------------------------------- sampling estimate


class UNetShape(Protocol):
    """What :func:`sampling_bytes` reads of a UNet config (``ddpm.models.UNet2DConfig`` has all of it)."""

    @property
    def in_channels(self) -> int: ...
    @property
    def block_out_channels(self) -> Sequence[int]: ...
    @property
    def layers_per_block(self) -> int: ...
    @property
    def down_block_types(self) -> Sequence[str]: ...
    @property
    def up_block_types(self) -> Sequence[str]: ...
    @property
    def mid_block_type(self) -> str | None: ...
    @property
    def add_attention(self) -> bool: ...
    @property
    def attention_head_dim(self) -> int | None: ...


#: Full-size float32 tensors of one image that the loop and the scheduler hold at once besides the UNet: x_t, the
#: noise, the model output, the scaled input, x_{t-1}, the x_0 estimate and the step's temporaries, then the
#: post-processed float image and its 8-bit copy.
_LOOP_TENSORS = 10
#: The margin over the sum above for what it does not model: layout copies (channels_last on the CPU), fused-kernel
#: buffers and allocator slack. Without it the sum came within 0.75x-1.35x of the measured peaks.
_MARGIN = 1.5
#: A fixed allowance per call for kernel workspaces and allocator arenas, which dominate small batches.
_FIXED = 16 * 2**20


def sampling_bytes(
    config: UNetShape, batch_size: int, height: int, width: int, dtype: torch.dtype, *, gradient: bool = False
) -> int:
    """An upper estimate of the peak memory that sampling a batch adds to a loaded UNet (weights not included).

    Per image, in elements (``dtype``'s size each; the loop's tensors in float32):

    * the skip connections, all alive during the up path: ``conv_in``'s output, every residual block output of the
      down blocks (``layers_per_block`` per level) and every downsampler output;
    * the working set of the widest residual block at each level: an up block's input is the concatenation of the
      level below's output and a skip, so ``3 x (c_below + c)`` for the concatenation, its norm and activation plus
      ``3 x c`` for the convolutions, norm and shortcut, at ``(H/2**l) x (W/2**l)`` positions;
    * at a level with attention (an ``Attn*`` block there, or the mid block at the lowest level): ``8 x c`` per
      token for the norm, q, k, v, the output and the residual, plus the score and probability matrices,
      ``2 x heads x tokens**2``: quadratic in the tokens (``(H*W)**2`` per head at full resolution). PyTorch's
      fused attention kernels (flash, memory-efficient; CPU flash) never materialise them, so this term is where
      the estimate is most conservative; it keeps the math fallback, which does, within the limit;
    * ``10`` full-size float32 images for the loop (x_t, noise, model output, x_{t-1}, x_0 estimate, step
      temporaries, the post-processed image).

    The peak is the skips plus the largest level's working set and attention, times ``batch_size``, plus a margin
    of 1.5x for what this does not model (layout copies, kernel buffers, allocator slack) and 16 MiB per call.

    Measured against the peak resident memory that a DDIM call adds on the CPU (torch 2.13, 2 threads; ``VmHWM``
    after resetting it, as tests/pipelines/test_memory.py does): the estimate was 1.3x to 2.8x the measured peak for
    the tiny test UNet (batch 8 and 256), the bundled ddpm-mnist (16 and 128) and a google/ddpm-cifar10-32-shaped
    UNet (8 and 32 at 32x32, 16 at 64x64) on an AMD EPYC (AVX2); never below it. Repeated measurements of one case
    vary by up to 1.5x, and CPUs whose convolutions need less workspace measure less: on the CI machine ddpm-mnist at
    batch 32 took 25.4 MiB where the estimate is 109 MiB (4.3x).

    Args:
        config: The UNet's config (block channels, layers, block types, attention settings).
        batch_size: Images per call.
        height: Image height in pixels.
        width: Image width in pixels.
        dtype: The UNet's dtype (its activations' element size).
        gradient: Each call also takes a gradient with respect to its input (RePaint's reconstruction guidance):
            autograd keeps every layer's activations for the backward pass. Added per image, per level: ``8 x c``
            per position for each residual block (``8 x (c_below + c)`` in the up path, whose inputs are
            concatenations), ``4 x c`` for the resamplers, and per attention layer its ``8 x c`` plus the score
            matrices; the mid block's two residual blocks and attention at the lowest level. An upper estimate:
            several of these tensors share storage in practice.
    """
    size = torch.empty((), dtype=dtype).element_size()
    channels = list(config.block_out_channels)
    levels = len(channels)
    down, up = list(config.down_block_types), list(config.up_block_types)
    has_mid = config.mid_block_type is not None

    def positions(level: int) -> int:
        return math.ceil(height / 2**level) * math.ceil(width / 2**level)

    def attention(level: int) -> bool:
        mid = has_mid and config.add_attention and level == levels - 1
        return mid or "Attn" in down[level] or "Attn" in up[levels - 1 - level]

    skips = channels[0] * positions(0)
    peak_level = 0
    for level, c in enumerate(channels):
        n = positions(level)
        skips += config.layers_per_block * c * n + (c * positions(level + 1) if level < levels - 1 else 0)
        below = channels[min(level + 1, levels - 1)]
        work = (3 * (below + c) + 3 * c) * n
        if attention(level):
            heads = max(1, c // config.attention_head_dim) if config.attention_head_dim else 1
            work += 8 * c * n + 2 * heads * n * n
        peak_level = max(peak_level, work)
    saved = 0
    if gradient:  # every activation is kept for the backward pass
        lpb = config.layers_per_block
        for level, c in enumerate(channels):
            n = positions(level)
            below = channels[min(level + 1, levels - 1)]
            saved += (8 * lpb * c + 8 * (lpb + 1) * (below + c) + 4 * c) * n
            if attention(level):
                heads = max(1, c // config.attention_head_dim) if config.attention_head_dim else 1
                saved += (2 * lpb + 1) * (8 * c * n + 2 * heads * n * n)
        if has_mid:
            c, n = channels[-1], positions(levels - 1)
            saved += 2 * 8 * c * n
    unet = (skips + peak_level + saved) * size
    loop = _LOOP_TENSORS * config.in_channels * height * width * 4
    return _FIXED + math.ceil(_MARGIN * batch_size * (unet + loop))


def check_sampling_fits(
    config: UNetShape,
    batch_size: int,
    height: int,
    width: int,
    dtype: torch.dtype,
    *,
    lower: str,
    device: torch.device | str | None = None,
    gradient: bool = False,
) -> None:
    """Refuse to sample a batch whose :func:`sampling_bytes` estimate exceeds :func:`memory_limit`.

    Args:
        config: The UNet's config.
        batch_size: Images per call.
        height: Image height in pixels.
        width: Image width in pixels.
        dtype: The UNet's dtype.
        lower: How to lower the request, in the caller's terms (``"use a smaller --batch-size"``).
        device: Where the sampling runs.
        gradient: Each model call also takes a gradient (see :func:`sampling_bytes`).

    Raises:
        ResourceLimitError: The batch would not fit; the message says ``sampling a batch of N images of HxW``, the
            estimate, the limit and ``lower``.
    """
    images = f"{batch_size} image{'' if batch_size == 1 else 's'}"
    check_fits(
        sampling_bytes(config, batch_size, height, width, dtype, gradient=gradient),
        what=f"sampling a batch of {images} of {height}x{width}" + (" with a gradient per step" if gradient else ""),
        lower=lower,
        device=device,
    )
