"""Small tensor helpers shared by the model, the schedulers and the pipelines, each defined once."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["Generators", "extract", "randn_tensor"]

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


def _as_generator_list(generator: Generators) -> list[torch.Generator] | None:
    if generator is None or isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    for i, g in enumerate(gens):
        if not isinstance(g, torch.Generator):
            raise TypeError(f"generator[{i}] is a {type(g).__name__}, not a torch.Generator")
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
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    dtype = dtype or torch.float32
    gens = _as_generator_list(generator)
    if gens is not None and len(gens) == 1:
        generator, gens = gens[0], None

    first = gens[0] if gens is not None else generator
    draw_device = device
    if first is not None:
        gen_device = first.device
        if gen_device.type != device.type:
            if gen_device.type == "cpu":
                draw_device = torch.device("cpu")
            else:
                raise ValueError(
                    f"cannot draw noise for a {device.type} tensor with a {gen_device.type} generator; "
                    f'use a CPU generator (torch.Generator("cpu").manual_seed(seed)) or move the pipeline to '
                    f"{gen_device.type}"
                )

    if gens is not None:
        if len(gens) != shape[0]:
            raise ValueError(
                f"got a list of {len(gens)} generators for a batch of {shape[0]}; pass exactly one generator per "
                "sample, or a single generator"
            )
        one = (1, *shape[1:])
        samples = [torch.randn(one, generator=g, device=draw_device, dtype=dtype) for g in gens]
        out = torch.cat(samples, dim=0)
    else:
        out = torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype)
    if device.type == "cuda" and out.device.type == "cpu":
        # Through pinned memory, asynchronously: a copy from ordinary memory would make the host wait for the GPU
        # at every noise draw (each step of a stochastic sampler). The pinned block is not reused before the copy
        # has run (PyTorch's pinned-memory cache records the copy on the stream).
        return out.pin_memory().to(device, non_blocking=True)
    return out.to(device)
