"""Small tensor helpers shared by the model, the schedulers and the pipelines, each defined once.

``make_image_grid`` is re-exported from :mod:`ddpm.image_processing`, where it lives, because diffusers' scripts
import it as ``from diffusers.utils import make_image_grid``: ``from ddpm.utils import make_image_grid`` works too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import show_value
from .image_processing import make_image_grid

__all__ = ["Generators", "check_generators", "extract", "make_image_grid", "randn_tensor"]

#: What every ``generator=`` argument accepts: one generator, one per sample, or None for the global RNG.
Generators = torch.Generator | Sequence[torch.Generator] | None


def extract(a: torch.Tensor, t: torch.Tensor, x_shape: Sequence[int]) -> torch.Tensor:
    """Gather ``a[t]`` for a batch of integer timesteps and shape it to broadcast against ``x_shape``.

    Args:
        a: A 1-D schedule tensor, shape (T,).
        t: Integer timesteps, shape (B,) or a 0-d tensor.
        x_shape: The shape of the batch the result multiplies, (B, C, H, W).

    Returns:
        ``a[t]`` with shape (B, 1, 1, 1) (or (1, 1, 1, 1) for a 0-d ``t``).
    """
    out = a[t.reshape(-1)]
    return out.reshape(out.shape[0], *([1] * (len(x_shape) - 1)))


def check_generators(
    generator: Generators, batch_size: int, device: torch.device, *, batch: str | None = None
) -> list[torch.Generator] | None:
    """Check a ``generator=`` argument for a batch of ``batch_size`` samples on ``device``: the one rule.

    Args:
        generator: One generator, a list of ``batch_size`` generators, or None for the global RNG.
        batch_size: The number of samples; a list must have one generator per sample.
        device: Where the samples live. A generator must be on the CPU (it then draws there, the same numbers on
            every device) or on this device's type.
        batch: How the error names the batch (default ``"a batch of {batch_size}"``), e.g. the caller's argument.

    Returns:
        The list of generators, or None for a single generator or None.

    Raises:
        TypeError: ``generator`` is neither a generator nor a list of them.
        ValueError: A list whose length is not ``batch_size``, or a generator on another accelerator.
    """
    if generator is None:
        return None
    if not isinstance(generator, (torch.Generator, list, tuple)):
        raise TypeError(
            f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}: "
            f"{show_value(generator)}; e.g. torch.Generator().manual_seed(0)"
        )
    gens = None if isinstance(generator, torch.Generator) else list(generator)
    if gens is not None and len(gens) != batch_size:
        raise ValueError(
            f"got a list of {len(gens)} generators for {batch or f'a batch of {batch_size}'}; pass exactly one "
            "generator per image, or a single torch.Generator for the whole batch"
        )
    for i, g in enumerate([generator] if gens is None else gens):
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator[{i}] is {show_value(g)} ({type(g).__name__}), not a torch.Generator")
        if g.device.type not in ("cpu", device.type):
            raise ValueError(
                f"a {g.device.type} generator cannot draw noise for a pipeline on {device}; use a CPU generator "
                f'(torch.Generator("cpu").manual_seed(seed), same images on every device) or move the pipeline '
                f"with pipe.to({g.device.type!r})"
            )
    return gens


def randn_tensor(
    shape: Sequence[int],
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Draw standard normal noise the way diffusers does, so the same seed gives the same numbers.

    * A CPU generator with a CUDA target draws on the CPU and moves the result (through pinned memory, without
      making the host wait for the GPU): a CPU seed gives the same noise on any device.
    * A generator on the target device draws there directly.
    * A CUDA generator with a CPU target is an error.
    * A list of generators draws sample ``i`` (shape ``(1, *shape[1:])``) from generator ``i`` and concatenates, so
      each sample is independent of the batch size. Its length must equal ``shape[0]``; a list of one generator
      counts as a single generator.
    * ``dtype`` is passed to :func:`torch.randn`, so fp16 noise is sampled in fp16, not drawn in fp32 and cast.

    Args:
        shape: The output shape, (B, C, H, W).
        generator: One generator, a list of ``B`` generators, or None for the global RNG of ``device``.
        device: Where the result lives (default CPU).
        dtype: The result's dtype (default float32).

    Raises:
        TypeError, ValueError: ``generator`` breaks a rule of :func:`check_generators`.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.float32
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]  # a list of one generator counts as that generator, whatever the batch size
    gens = check_generators(generator, shape[0], device)
    first = gens[0] if gens is not None else generator if isinstance(generator, torch.Generator) else None
    # A CPU generator draws on the CPU for any device: the same seed then gives the same noise everywhere.
    draw_device = torch.device("cpu") if isinstance(first, torch.Generator) and first.device.type == "cpu" else device

    if gens is not None:
        one = (1, *shape[1:])
        samples = [torch.randn(one, generator=g, device=draw_device, dtype=dtype) for g in gens]
        out = torch.cat(samples, dim=0)
    else:
        out = torch.randn(tuple(shape), generator=first, device=draw_device, dtype=dtype)
    if device.type == "cuda" and out.device.type == "cpu":
        # Through pinned memory, asynchronously: a copy from ordinary memory would make the host wait for the GPU
        # at every noise draw (each step of a stochastic sampler). The pinned block is not reused before the copy
        # has run (PyTorch's pinned-memory cache records the copy on the stream).
        return out.pin_memory().to(device, non_blocking=True)
    return out.to(device)
