"""DDPMScheduler specifics: every variance_type, clipping and thresholding, noise draws, learned-sigma outputs."""

from __future__ import annotations

import pytest
import torch

from ddpm.schedulers import DDPMScheduler
from ddpm.schedulers.ddpm import VARIANCE_TYPES

from helpers import CELEBAHQ_SCHEDULER_CONFIG
from scheduler_helpers import diffusers_twin, max_abs_diff, random_model_outputs, run_loop

TOL = 1e-5


def _learned_outputs(steps: int, variance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Model outputs with 2C channels: ε in the first half, the variance channels in the second."""
    outputs, x = random_model_outputs(steps, shape=(2, 6, 8, 8))
    if variance == "positive":  # a predicted variance σ² (variance_type="learned")
        outputs[:, :, 3:] = outputs[:, :, 3:].abs() * 1e-3
    return outputs, x[:, :3]


def _run_pair(config: dict, steps: int, *, learned: str | None = None, seed: int = 1):
    ours = DDPMScheduler.from_config({**CELEBAHQ_SCHEDULER_CONFIG, **config})
    theirs = diffusers_twin(ours)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    if learned is None:
        outputs, x = random_model_outputs(len(ours.timesteps))
    else:
        outputs, x = _learned_outputs(len(ours.timesteps), learned)
    return run_loop(ours, outputs, x, generator_seed=seed), run_loop(theirs, outputs, x, generator_seed=seed)


@pytest.mark.parametrize(
    "variance_type, learned",
    [
        ("fixed_small", None),
        ("fixed_small_log", None),
        ("fixed_large", None),
        ("learned", "positive"),
        ("learned_range", "any"),
    ],
)
@pytest.mark.parametrize("steps", [50, 27])
def test_variance_types_match_diffusers_where_it_is_defined(variance_type, learned, steps):
    ours, theirs = _run_pair({"variance_type": variance_type}, steps, learned=learned)
    assert max_abs_diff(ours.prev_samples, theirs.prev_samples) <= TOL
    assert max_abs_diff(ours.pred_original_samples, theirs.pred_original_samples) <= TOL


def test_fixed_large_log_adds_the_fixed_large_noise_where_diffusers_gives_nan():
    log, _ = _run_pair({"variance_type": "fixed_large_log"}, 50)
    plain, _ = _run_pair({"variance_type": "fixed_large"}, 50)
    torch.testing.assert_close(log.prev_samples[-1], plain.prev_samples[-1], rtol=1e-5, atol=1e-5)
    _, theirs = _run_pair({"variance_type": "fixed_large_log"}, 50)
    assert torch.isnan(theirs.prev_samples[-1]).all()  # diffusers#14569: sqrt of log(β) < 0


def test_learned_variance_below_zero_is_clamped_where_diffusers_gives_nan():
    ours, theirs = _run_pair({"variance_type": "learned"}, 20, learned="any")
    assert all(torch.isfinite(x).all() for x in ours.prev_samples)
    assert torch.isnan(theirs.prev_samples[-1]).any()


@pytest.mark.parametrize("variance_type", VARIANCE_TYPES)
@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_every_variance_type_gives_finite_samples_for_every_spacing(variance_type, spacing):
    scheduler = DDPMScheduler(variance_type=variance_type, timestep_spacing=spacing, clip_sample=False)
    scheduler.set_timesteps(25)
    learned = variance_type.startswith("learned")
    outputs, x = _learned_outputs(25, "any") if learned else random_model_outputs(25)
    run = run_loop(scheduler, outputs, x, generator_seed=0)
    assert all(s is not None and torch.isfinite(s).all() for s in run.prev_samples + run.pred_original_samples)


def test_the_log_variance_types_equal_their_plain_counterparts():
    for plain, log in (("fixed_small", "fixed_small_log"), ("fixed_large", "fixed_large_log")):
        a, _ = _run_pair({"variance_type": plain}, 50)
        b, _ = _run_pair({"variance_type": log}, 50)
        assert max_abs_diff(a.prev_samples, b.prev_samples) <= 1e-5, plain


def test_learned_range_interpolates_between_the_small_and_large_variances():
    # Output -1 gives σ² = β̃_t (fixed_small), +1 gives σ² = β_t (fixed_large) (Nichol & Dhariwal 2021, Eq. 15).
    for value, fixed in ((-1.0, "fixed_small"), (1.0, "fixed_large")):
        learned = DDPMScheduler(variance_type="learned_range")
        reference = DDPMScheduler(variance_type=fixed)
        learned.set_timesteps(20)
        reference.set_timesteps(20)
        outputs, x = random_model_outputs(20)
        with_variance = torch.cat([outputs, torch.full_like(outputs, value)], dim=2)
        a = run_loop(learned, with_variance, x, generator_seed=0)
        b = run_loop(reference, outputs, x, generator_seed=0)
        assert max_abs_diff(a.prev_samples, b.prev_samples) <= 1e-5, fixed


@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_learned_variance_types_need_twice_the_channels(variance_type):
    scheduler = DDPMScheduler(variance_type=variance_type)
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(1)
    with pytest.raises(ValueError, match=f"variance_type='{variance_type}' needs.*twice the channels"):
        scheduler.step(outputs[0], scheduler.timesteps[0], x)


def test_a_fixed_variance_ignores_the_variance_half_of_a_learned_sigma_output():
    a, b = DDPMScheduler(), DDPMScheduler()
    a.set_timesteps(20)
    b.set_timesteps(20)
    outputs, x = _learned_outputs(20, "any")
    ra = run_loop(a, outputs, x, generator_seed=0)
    rb = run_loop(b, outputs[:, :, :3].contiguous(), x, generator_seed=0)
    assert all(torch.equal(p, q) for p, q in zip(ra.prev_samples, rb.prev_samples))


@pytest.mark.parametrize(
    "config",
    [
        {"thresholding": True},
        {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5, "prediction_type": "sample"},
        {"clip_sample_range": 0.5},
        {"clip_sample_range": 2.0, "prediction_type": "v_prediction"},
        {"clip_sample": False},
    ],
    ids=["threshold", "threshold-0.9-1.5", "clip-0.5", "clip-2.0", "no-clip"],
)
def test_clipping_and_thresholding_match_diffusers(config):
    ours, theirs = _run_pair(config, 50)
    assert max_abs_diff(ours.prev_samples, theirs.prev_samples) <= TOL
    scale = max(1.0, max(x.abs().max().item() for x in theirs.pred_original_samples))
    assert max_abs_diff(ours.pred_original_samples, theirs.pred_original_samples) <= TOL * scale


def test_clip_sample_range_bounds_the_predicted_x0():
    scheduler = DDPMScheduler(clip_sample_range=0.25)
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(10)
    run = run_loop(scheduler, outputs * 10, x, generator_seed=0)
    x0s = [s for s in run.pred_original_samples if s is not None]
    assert len(x0s) == 10 and max(s.abs().max().item() for s in x0s) == 0.25


@pytest.mark.parametrize(
    "config",
    [
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1},
        {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace"},
        {"beta_schedule": "sigmoid"},
        {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"},
    ],
    ids=["scaled_linear-offset", "cosine-linspace", "sigmoid", "zero-snr-trailing"],
)
def test_other_noise_schedules_match_diffusers(config):
    ours, theirs = _run_pair(config, 30)
    assert max_abs_diff(ours.prev_samples, theirs.prev_samples) <= TOL


def test_noise_is_drawn_once_per_step_except_at_t_0_like_diffusers():
    scheduler = DDPMScheduler()
    scheduler.set_timesteps(50)  # leading: the last timestep is 0
    outputs, x = random_model_outputs(50)
    generator = torch.Generator().manual_seed(5)
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(outputs[i], t, x, generator=generator).prev_sample
    expected = torch.Generator().manual_seed(5)
    for _ in range(49):
        torch.randn(outputs[0].shape, generator=expected)
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=expected))


def test_a_list_of_generators_draws_each_sample_from_its_own():
    batched, single = DDPMScheduler(), DDPMScheduler()
    batched.set_timesteps(10)
    outputs, x = random_model_outputs(10)
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    xb = x
    for i, t in enumerate(batched.timesteps):
        xb = batched.step(outputs[i], t, xb, generator=gens).prev_sample
    single.set_timesteps(10)
    x1, g1 = x[1:], torch.Generator().manual_seed(1)
    for i, t in enumerate(single.timesteps):
        single_x = single.step(outputs[i, 1:], t, x1, generator=g1)
        x1 = single_x.prev_sample
    assert torch.equal(xb[1:], x1)
