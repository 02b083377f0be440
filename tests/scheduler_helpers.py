"""Drivers that run a ddpm scheduler and diffusers' scheduler of the same name side by side (the oracle).

Both get the same pre-generated random model outputs, one per entry of ``timesteps``, and the same seeded
generators. diffusers is given our ᾱ_t: ours is computed in float64 and rounded once, diffusers accumulates the
product in float32, and the two differ by up to ~4e-7 (relative); a long reverse chain amplifies that difference
like any rounding difference (up to ~3e-4 after 1000 DDPM steps on random outputs). With the same ᾱ the step
arithmetic must agree to 1e-5 (it agrees to the last bit). The schedules themselves are compared in
tests/schedulers/test_schedules.py.

Where diffusers computes the previous timestep by a stride that does not match the schedule (DDIM and PNDM with
``linspace``, ``trailing`` when n does not divide T, PNDM's Runge-Kutta half steps when T // n is odd), the
``corrected`` drivers run diffusers' own step math with the previous timestep taken from the schedule, which is
what ddpm does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

SHAPE = (2, 3, 8, 8)


def random_model_outputs(
    num_steps: int, shape: tuple[int, ...] = SHAPE, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(model outputs, one per step, shape (num_steps, *shape); the starting sample x_T), deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    outputs = torch.randn((num_steps, *shape), generator=g)
    return outputs, torch.randn(shape, generator=g)


def diffusers_twin(ours: Any, **overrides: Any) -> Any:
    """diffusers' scheduler of the same name and config as ``ours``, using ``ours``' ᾱ_t (see the module docstring)."""
    import diffusers

    cls = getattr(diffusers, type(ours).__name__)
    theirs = cls.from_config({**ours.config.to_dict(), **overrides})
    theirs.alphas_cumprod = ours.alphas_cumprod.clone()
    if hasattr(theirs, "final_alpha_cumprod") and not theirs.config.set_alpha_to_one:
        theirs.final_alpha_cumprod = theirs.alphas_cumprod[0]
    return theirs


def stride_is_right(scheduler: Any) -> bool:
    """True when diffusers' stride rule for the previous timestep agrees with the schedule (see the docstring)."""
    from ddpm.schedulers import PNDMScheduler

    t, n = scheduler.config.num_train_timesteps, scheduler.num_inference_steps
    if isinstance(scheduler, PNDMScheduler):
        calls = range(len(scheduler.timesteps))
        return all(_pndm_stride_interval(scheduler, i) == scheduler._transfer_interval(i) for i in calls)
    schedule = scheduler.timesteps.tolist()
    prev = schedule[1:] + [-1]
    return all((s - t // n if s - t // n >= 0 else -1) == p for s, p in zip(schedule, prev))


def _pndm_stride_interval(scheduler: Any, i: int) -> tuple[int, int]:
    """The (t, t - δ) diffusers' PNDM transfers over at call ``i`` (its strides; -1 for any negative target)."""
    schedule, t, n = scheduler.timesteps.tolist(), scheduler.config.num_train_timesteps, scheduler.num_inference_steps
    if not scheduler.config.skip_prk_steps and i < 12:
        start = schedule[i // 4 * 4]
        target = schedule[i] - (0 if i % 2 else t // n // 2)
    elif scheduler.config.skip_prk_steps and i == 1:
        start, target = schedule[1] + t // n, schedule[1]
    else:
        start, target = schedule[i], schedule[i] - t // n
    return start, max(target, -1)


def corrected_ddim(theirs: Any, ours: Any) -> Callable[[int], None]:
    """Make diffusers' DDIM read ᾱ of the schedule's previous timestep; returns a hook to call before step ``i``.

    diffusers reads ᾱ at ``t - T // n`` (or its final ᾱ when that is negative). The hook puts the ᾱ of the true
    previous timestep at exactly that place, so diffusers' own arithmetic runs with the right value.
    """
    base_ac = theirs.alphas_cumprod.clone()
    base_final = theirs.final_alpha_cumprod.clone()
    schedule = ours.timesteps.tolist()
    prev = schedule[1:] + [-1]
    stride = ours.config.num_train_timesteps // ours.num_inference_steps

    def before_step(i: int) -> None:
        right = base_ac[prev[i]] if prev[i] >= 0 else base_final
        wrong = schedule[i] - stride
        theirs.alphas_cumprod = base_ac.clone()
        theirs.final_alpha_cumprod = base_final.clone()
        if wrong >= 0:
            theirs.alphas_cumprod[wrong] = right
        else:
            theirs.final_alpha_cumprod = right.clone()

    return before_step


def corrected_pndm(theirs: Any, ours: Any) -> None:
    """Make diffusers' PNDM transfer over the schedule's intervals (ours' ``_transfer_interval``), not its strides."""
    original = theirs._get_prev_sample
    calls = {"i": 0}

    def get_prev_sample(
        sample: torch.Tensor, timestep: int, prev_timestep: int, model_output: torch.Tensor
    ) -> torch.Tensor:
        start, target = ours._transfer_interval(calls["i"])
        calls["i"] += 1
        return original(sample, start, target, model_output)

    theirs._get_prev_sample = get_prev_sample


@dataclass
class Run:
    """Per-step outputs of one sampling loop."""

    prev_samples: list[torch.Tensor]
    pred_original_samples: list[torch.Tensor | None]


def run_loop(
    scheduler: Any,
    outputs: torch.Tensor,
    sample: torch.Tensor,
    *,
    generator_seed: int | None = None,
    before_step: Callable[[int], None] | None = None,
    to_model_output: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    step_kwargs: dict[str, Any] | None = None,
) -> Run:
    """Run ``for t in timesteps: x = step(outputs[i], t, x)`` and record every step's outputs.

    Args:
        to_model_output: Maps (i, raw output, current x) to what the scheduler is given (used to feed ε converted
            from a v / x_0 output to diffusers' ε path, an independent reference for ddpm's PNDM).
        step_kwargs: Extra keywords for ``step()`` (diffusers' DDIM ``eta``).
    """
    generator = torch.Generator().manual_seed(generator_seed) if generator_seed is not None else None
    kwargs = dict(step_kwargs or {})
    if generator is not None:
        kwargs["generator"] = generator
    prev, x0s = [], []
    x = sample
    for i, t in enumerate(scheduler.timesteps):
        if before_step is not None:
            before_step(i)
        out = outputs[i] if to_model_output is None else to_model_output(i, outputs[i], x)
        result = scheduler.step(out, t, x, **kwargs)
        x = result.prev_sample
        prev.append(x)
        x0s.append(getattr(result, "pred_original_sample", None))
    return Run(prev, x0s)


def max_abs_diff(a: Sequence[torch.Tensor | None], b: Sequence[torch.Tensor | None]) -> float:
    """The largest |a - b| over all steps (pairs where either side is None are skipped)."""
    assert len(a) == len(b), (len(a), len(b))
    diffs = [(x - y).abs().max().item() for x, y in zip(a, b) if x is not None and y is not None]
    return max(diffs) if diffs else 0.0
