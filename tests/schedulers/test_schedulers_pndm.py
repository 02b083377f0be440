"""PNDMScheduler specifics: warm-up layouts, bounded state, few steps, ε-before-combination, the ignored generator."""

from __future__ import annotations

import pytest
import torch

from ddpm.schedulers import DDIMScheduler, PNDMScheduler

from helpers import CELEBAHQ_SCHEDULER_CONFIG
from scheduler_helpers import (
    corrected_pndm,
    diffusers_twin,
    max_abs_diff,
    random_model_outputs,
    run_loop,
    stride_is_right,
)

TOL = 1e-5


@pytest.mark.parametrize(
    "skip_prk_steps, steps",
    [(True, 1), (True, 2), (True, 3), (False, 4), (False, 5), (False, 27), (True, 27), (False, 1000), (True, 1000)],
)
def test_few_and_many_steps_and_odd_strides_match_diffusers_math(skip_prk_steps, steps):
    ours = PNDMScheduler.from_config({**CELEBAHQ_SCHEDULER_CONFIG, "skip_prk_steps": skip_prk_steps})
    theirs = diffusers_twin(ours)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    if not stride_is_right(ours):  # e.g. T // n = 37 is odd: diffusers' half step is 18.5 -> 18 vs 19
        corrected_pndm(theirs, ours)
    outputs, x = random_model_outputs(len(ours.timesteps))
    a, b = run_loop(ours, outputs, x), run_loop(theirs, outputs, x)
    assert max_abs_diff(a.prev_samples, b.prev_samples) <= TOL


def test_odd_stride_runge_kutta_half_steps_are_where_the_model_is_evaluated():
    scheduler = PNDMScheduler()
    scheduler.set_timesteps(27)  # T // n = 37
    ts = scheduler.timesteps.tolist()
    assert ts[:4] == [962, 943, 943, 925]  # 925 + 37 // 2
    assert scheduler._transfer_interval(0) == (962, 943)  # diffusers would transfer to 962 - 18 = 944
    assert not stride_is_right(scheduler)


def test_model_calls_equal_len_timesteps():
    for skip, steps, calls in ((False, 50, 59), (True, 50, 51), (True, 1, 1), (False, 4, 13)):
        scheduler = PNDMScheduler(skip_prk_steps=skip)
        scheduler.set_timesteps(steps)
        outputs, x = random_model_outputs(calls)
        count = 0
        for i, t in enumerate(scheduler.timesteps):
            x = scheduler.step(outputs[i], t, x).prev_sample
            count += 1
        assert count == calls == len(scheduler.timesteps)


def test_noise_history_is_bounded_and_reset_by_set_timesteps():
    scheduler = PNDMScheduler()
    scheduler.set_timesteps(100)
    outputs, x = random_model_outputs(len(scheduler.timesteps))
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(outputs[i], t, x).prev_sample
        assert len(scheduler._eps_history) <= 4
    assert len(scheduler._eps_history) == 4
    scheduler.set_timesteps(100)
    assert len(scheduler._eps_history) == 0 and scheduler._rk_sample is None and scheduler._euler_sample is None


def test_the_generator_is_accepted_and_ignored():
    scheduler = PNDMScheduler(skip_prk_steps=True)
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(11)
    a = run_loop(scheduler, outputs, x)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    scheduler.set_timesteps(10)
    b = run_loop(scheduler, outputs, x, generator_seed=0)
    assert torch.equal(a.prev_samples[-1], b.prev_samples[-1]) and torch.equal(generator.get_state(), state)


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_v_and_x0_models_sample_the_same_trajectory_as_the_equivalent_eps_model(prediction):
    # An ε-model and a v- (or x_0-) model that make the same predictions must give the same samples, because PNDM
    # combines ε estimates; diffusers combines raw v outputs instead (diffusers#14816).
    eps_scheduler = PNDMScheduler()
    other = PNDMScheduler(prediction_type=prediction)
    eps_scheduler.set_timesteps(20)
    other.set_timesteps(20)
    outputs, x = random_model_outputs(len(eps_scheduler.timesteps))
    eps_run = run_loop(eps_scheduler, outputs, x)
    schedule = other.timesteps.tolist()

    def as_prediction(i: int, eps: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        ab = other._alphas_cumprod64[schedule[i]].item()
        x0 = (x_s - (1 - ab) ** 0.5 * eps) / ab**0.5
        return ab**0.5 * eps - (1 - ab) ** 0.5 * x0 if prediction == "v_prediction" else x0

    other_run = run_loop(other, outputs, x, to_model_output=as_prediction)
    scale = max(x.abs().max().item() for x in eps_run.prev_samples)
    assert max_abs_diff(eps_run.prev_samples, other_run.prev_samples) <= 1e-5 * scale


def test_pred_original_sample_is_the_x0_implied_by_the_current_output():
    scheduler = PNDMScheduler()
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(len(scheduler.timesteps))
    for i, t in enumerate(scheduler.timesteps[:14]):
        out = scheduler.step(outputs[i], t, x)
        ab = scheduler.alphas_cumprod[int(t)]
        torch.testing.assert_close(out.pred_original_sample, (x - (1 - ab) ** 0.5 * outputs[i]) / ab**0.5)
        x = out.prev_sample


def test_zero_terminal_snr_cannot_start_at_the_pure_noise_timestep():
    scheduler = PNDMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing")
    with pytest.raises(ValueError, match="cannot start at timestep 999: its ᾱ is 0"):
        scheduler.set_timesteps(20)
    scheduler = PNDMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction")  # leading: starts at 950
    scheduler.set_timesteps(20)
    outputs, x = random_model_outputs(len(scheduler.timesteps))
    assert torch.isfinite(run_loop(scheduler, outputs, x).prev_samples[-1]).all()


def test_skip_prk_single_step_is_one_deterministic_ddim_step():
    pndm = PNDMScheduler(skip_prk_steps=True, timestep_spacing="trailing", set_alpha_to_one=True)
    ddim = DDIMScheduler(timestep_spacing="trailing", clip_sample=False)
    pndm.set_timesteps(1)
    ddim.set_timesteps(1)
    outputs, x = random_model_outputs(1)
    a, b = run_loop(pndm, outputs, x), run_loop(ddim, outputs, x)
    torch.testing.assert_close(a.prev_samples[0], b.prev_samples[0], rtol=1e-5, atol=1e-4)
