"""DDIMScheduler specifics: η, clipped model output, set_alpha_to_one, the linspace fix, DDIM(η=1) = DDPM."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from ddpm.schedulers import DDIMScheduler, DDPMScheduler

from helpers import CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG
from scheduler_helpers import (
    corrected_ddim,
    diffusers_twin,
    max_abs_diff,
    random_model_outputs,
    run_loop,
    stride_is_right,
)

TOL = 1e-5


def _run_pair(config: dict, steps: int, *, eta: float = 0.0, clipped: bool = False):
    ours = DDIMScheduler.from_config({**CELEBAHQ_SCHEDULER_CONFIG, **config}, eta=eta, use_clipped_model_output=clipped)
    theirs = diffusers_twin(ours)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    hook = None if stride_is_right(ours) else corrected_ddim(theirs, ours)
    outputs, x = random_model_outputs(len(ours.timesteps))
    kwargs = {"eta": eta, "use_clipped_model_output": clipped}
    return (
        run_loop(ours, outputs, x, generator_seed=2),
        run_loop(theirs, outputs, x, generator_seed=2, before_step=hook, step_kwargs=kwargs),
    )


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clipped", [False, True])
@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_eta_and_use_clipped_model_output_match_diffusers(eta, clipped, prediction):
    ours, theirs = _run_pair({"prediction_type": prediction}, 30, eta=eta, clipped=clipped)
    assert max_abs_diff(ours.prev_samples, theirs.prev_samples) <= TOL
    assert max_abs_diff(ours.pred_original_samples, theirs.pred_original_samples) <= TOL


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_set_alpha_to_one_false_ends_at_alpha_bar_0_like_diffusers(spacing):
    ours, theirs = _run_pair({"set_alpha_to_one": False, "timestep_spacing": spacing}, 20)
    assert max_abs_diff(ours.prev_samples, theirs.prev_samples) <= TOL
    assert not torch.equal(ours.prev_samples[-1], ours.pred_original_samples[-1])


@pytest.mark.parametrize(
    "config",
    [{"thresholding": True, "sample_max_value": 2.0}, {"clip_sample": False}, {"clip_sample_range": 0.3}],
    ids=["threshold", "no-clip", "clip-0.3"],
)
def test_clipping_and_thresholding_match_diffusers(config):
    ours, theirs = _run_pair(config, 25, eta=1.0)
    assert max_abs_diff(ours.prev_samples, theirs.prev_samples) <= TOL


def _closed_form_ddim(
    alphas_cumprod: torch.Tensor, timesteps: list[int], outputs: torch.Tensor, x: torch.Tensor, clip: float
) -> list[torch.Tensor]:
    """An independent float64 DDIM (η = 0) over an explicit list of timesteps, straight from Song et al. Eq. (12)."""
    xs = []
    x = x.double()
    for i, t in enumerate(timesteps):
        a_t = alphas_cumprod[t].item()
        a_prev = alphas_cumprod[timesteps[i + 1]].item() if i + 1 < len(timesteps) else 1.0
        eps = outputs[i].double()
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-clip, clip)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        xs.append(x)
    return xs


@pytest.mark.parametrize("steps", [10, 50, 333])
def test_linspace_steps_to_the_previous_timestep_of_the_schedule(steps):
    # diffusers steps from t to t - T // n (diffusers#11347, #12633); the schedule's previous timestep is what DDIM
    # (Song et al. 2021, Eq. 12 over the sub-sequence τ) prescribes. Reference: a float64 closed form.
    scheduler = DDIMScheduler.from_config({**CELEBAHQ_SCHEDULER_CONFIG, "timestep_spacing": "linspace"})
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.tolist()
    assert timesteps[0] == 999 and timesteps[-1] == 0
    outputs, x = random_model_outputs(steps)
    ours = run_loop(scheduler, outputs, x)
    reference = _closed_form_ddim(scheduler._alphas_cumprod64, timesteps, outputs, x, clip=1.0)
    assert max_abs_diff([p.double() for p in ours.prev_samples], reference) <= 1e-4


def test_ddim_with_eta_1_and_clipped_model_output_is_ddpm_with_the_posterior_variance():
    # With η = 1, σ_t² is DDPM's β̃_t, and with ε re-derived from the clipped x̂_0 the DDIM mean equals DDPM's
    # posterior mean (Song et al. 2021, Sec. 4.1); both draw the same noise from the same generator.
    for config in (CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG):
        ddim = DDIMScheduler.from_config(config, eta=1.0, use_clipped_model_output=True)
        ddpm = DDPMScheduler.from_config({**config, "variance_type": "fixed_small"})
        for steps in (50, 7):
            ddim.set_timesteps(steps)
            ddpm.set_timesteps(steps)
            outputs, x = random_model_outputs(steps)
            a = run_loop(ddim, outputs, x, generator_seed=4)
            b = run_loop(ddpm, outputs, x, generator_seed=4)
            assert max_abs_diff(a.prev_samples, b.prev_samples) <= 1e-4, steps


def test_eta_can_be_changed_between_loops_and_is_validated():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    scheduler.eta = 1.0  # after set_timesteps: takes effect for this loop
    reference = DDIMScheduler(eta=1.0)
    reference.set_timesteps(10)
    outputs, x = random_model_outputs(10)
    a = run_loop(scheduler, outputs, x, generator_seed=0)
    b = run_loop(reference, outputs, x, generator_seed=0)
    assert torch.equal(a.prev_samples[-1], b.prev_samples[-1])
    bad_etas: tuple[Any, ...] = (-0.1, 1.5, "1", True)  # wrong on purpose, as a caller without a type checker
    for bad in bad_etas:
        with pytest.raises(ValueError, match="eta must be a number in"):
            scheduler.eta = bad
    not_a_bool: Any = 1
    with pytest.raises(TypeError, match="use_clipped_model_output must be True or False"):
        DDIMScheduler(use_clipped_model_output=not_a_bool)


def test_deterministic_ddim_draws_no_noise_and_ignores_the_generator():
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(10)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    a = run_loop(scheduler, outputs, x)
    scheduler.set_timesteps(10)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(outputs[i], t, x, generator=generator).prev_sample
    assert torch.equal(generator.get_state(), state) and torch.equal(a.prev_samples[-1], x)


def test_sigmoid_schedule_converts_from_a_ddpm_config():
    # diffusers' DDIM refuses beta_schedule="sigmoid" (diffusers#13591); here every DDPM config converts.
    scheduler = DDIMScheduler.from_config(DDPMScheduler(beta_schedule="sigmoid").config)
    scheduler.set_timesteps(20)
    outputs, x = random_model_outputs(20)
    assert torch.isfinite(run_loop(scheduler, outputs, x).prev_samples[-1]).all()
