"""Whole-run parity with diffusers 0.42.1 for the google/ddpm-* scheduler configs (offline).

Every case runs a full sampling loop on pre-generated random model outputs with ddpm and with diffusers' scheduler of
the same name (given ddpm's ᾱ, see scheduler_helpers), and compares every step's ``prev_sample`` and
``pred_original_sample``: max |difference| ≤ 1e-5 over the run.

Where diffusers' previous-timestep stride disagrees with the schedule (DDIM/PNDM ``linspace``; ``trailing`` with
n ∤ T), the reference is diffusers' step math driven with the schedule's previous timestep. Where diffusers' PNDM
combines v / x_0 outputs before converting them (diffusers#14816), the reference feeds diffusers' ε path with ε
converted at each evaluation point; diffusers itself is compared on the first step, where it is right.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from ddpm.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler

from helpers import CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG
from scheduler_helpers import (
    corrected_ddim,
    corrected_pndm,
    diffusers_twin,
    max_abs_diff,
    random_model_outputs,
    run_loop,
    stride_is_right,
)

pytest.importorskip("diffusers")

TOL = 1e-5
HUB_CONFIGS = {"celebahq-fixed_small": CELEBAHQ_SCHEDULER_CONFIG, "cifar10-fixed_large": CIFAR10_SCHEDULER_CONFIG}
SPACINGS = ("leading", "trailing", "linspace")
PREDICTIONS = ("epsilon", "sample", "v_prediction")


def _config(hub: str, spacing: str, prediction: str) -> dict:
    return {**HUB_CONFIGS[hub], "timestep_spacing": spacing, "prediction_type": prediction}


@pytest.mark.parametrize("hub", HUB_CONFIGS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [1000, 50, 27])
def test_ddpm_runs_match_diffusers_with_seeded_noise(hub, spacing, steps):
    for prediction in PREDICTIONS:
        ours = DDPMScheduler.from_config(_config(hub, spacing, prediction))
        theirs = diffusers_twin(ours)
        ours.set_timesteps(steps)
        theirs.set_timesteps(steps)
        outputs, x_t = random_model_outputs(len(ours.timesteps), seed=steps)
        a = run_loop(ours, outputs, x_t, generator_seed=1)
        b = run_loop(theirs, outputs, x_t, generator_seed=1)
        assert max_abs_diff(a.prev_samples, b.prev_samples) <= TOL, prediction
        assert max_abs_diff(a.pred_original_samples, b.pred_original_samples) <= TOL, prediction
        assert not torch.equal(a.prev_samples[-1], x_t)


@pytest.mark.parametrize("hub", HUB_CONFIGS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [50, 27, 1])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_runs_match_diffusers_where_its_stride_is_right_and_its_corrected_math_elsewhere(hub, spacing, steps, eta):
    for prediction in PREDICTIONS:
        ours = DDIMScheduler.from_config(_config(hub, spacing, prediction), eta=eta)
        theirs = diffusers_twin(ours)
        ours.set_timesteps(steps)
        theirs.set_timesteps(steps)
        outputs, x_t = random_model_outputs(len(ours.timesteps), seed=steps)
        hook = None if stride_is_right(ours) else corrected_ddim(theirs, ours)
        a = run_loop(ours, outputs, x_t, generator_seed=1)
        b = run_loop(theirs, outputs, x_t, generator_seed=1, before_step=hook, step_kwargs={"eta": eta})
        assert max_abs_diff(a.prev_samples, b.prev_samples) <= TOL, prediction
        assert max_abs_diff(a.pred_original_samples, b.pred_original_samples) <= TOL, prediction


def test_ddim_stride_rule_is_wrong_exactly_for_linspace_and_non_dividing_trailing():
    # The cases above that use the corrected reference, and why: diffusers' prev_t = t - T // n.
    wrong = set()
    for spacing, steps in itertools.product(SPACINGS, [50, 27, 1]):
        scheduler = DDIMScheduler(timestep_spacing=spacing)
        scheduler.set_timesteps(steps)
        if not stride_is_right(scheduler):
            wrong.add((spacing, steps))
    assert wrong == {("linspace", 50), ("linspace", 27), ("trailing", 27)}


def test_ddim_linspace_differs_from_diffusers_stride_rule_by_far_more_than_rounding():
    ours = DDIMScheduler.from_config({**CELEBAHQ_SCHEDULER_CONFIG, "timestep_spacing": "linspace"})
    theirs = diffusers_twin(ours)
    ours.set_timesteps(50)
    theirs.set_timesteps(50)
    outputs, x_t = random_model_outputs(50)
    a = run_loop(ours, outputs, x_t)
    b = run_loop(theirs, outputs, x_t)
    assert max_abs_diff(a.prev_samples, b.prev_samples) > 1e-3


def _eps_feeder(ours: PNDMScheduler, prediction: str):
    """An independent reference for v / x_0 models: ε converted where each output was evaluated, for diffusers."""
    schedule = ours.timesteps.tolist()

    def to_eps(i: int, output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        alpha_bar = ours.alphas_cumprod[schedule[i]]
        sqrt_ab, sqrt_1m_ab = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
        if prediction == "v_prediction":
            return sqrt_ab * output + sqrt_1m_ab * x
        if prediction == "sample":
            return (x - sqrt_ab * output) / sqrt_1m_ab
        return output

    return to_eps


@pytest.mark.parametrize("hub", HUB_CONFIGS)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("steps", [50, 10])
@pytest.mark.parametrize("skip_prk_steps", [False, True])
def test_pndm_runs_match_diffusers_for_every_prediction_type(hub, spacing, steps, skip_prk_steps):
    for prediction in PREDICTIONS:
        ours = PNDMScheduler.from_config(_config(hub, spacing, prediction), skip_prk_steps=skip_prk_steps)
        # diffusers runs its ε path; v / x_0 outputs are converted to ε at their evaluation point first.
        theirs = diffusers_twin(ours, prediction_type="epsilon")
        ours.set_timesteps(steps)
        theirs.set_timesteps(steps)
        assert len(ours.timesteps) == (steps + 1 if skip_prk_steps else steps + 9)
        if not stride_is_right(ours):
            corrected_pndm(theirs, ours)
        outputs, x_t = random_model_outputs(len(ours.timesteps), seed=steps)
        a = run_loop(ours, outputs, x_t)
        b = run_loop(theirs, outputs, x_t, to_model_output=_eps_feeder(ours, prediction))
        assert max_abs_diff(a.prev_samples, b.prev_samples) <= TOL, prediction


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("skip_prk_steps", [False, True])
def test_pndm_first_step_matches_diffusers_own_conversion_of_the_model_output(prediction, skip_prk_steps):
    # On the first call diffusers converts the one output it has at the right point, so it is right there.
    config = {**CIFAR10_SCHEDULER_CONFIG, "prediction_type": prediction, "skip_prk_steps": skip_prk_steps}
    ours = PNDMScheduler.from_config(config)
    theirs = diffusers_twin(ours)
    ours.set_timesteps(50)
    theirs.set_timesteps(50)
    outputs, x_t = random_model_outputs(1)
    t = ours.timesteps[0]
    assert torch.equal(ours.step(outputs[0], t, x_t).prev_sample, theirs.step(outputs[0], t, x_t).prev_sample)


def test_pndm_v_prediction_differs_from_diffusers_combining_raw_v_outputs():
    ours = PNDMScheduler.from_config({**CIFAR10_SCHEDULER_CONFIG, "prediction_type": "v_prediction"})
    theirs = diffusers_twin(ours)
    ours.set_timesteps(50)
    theirs.set_timesteps(50)
    outputs, x_t = random_model_outputs(len(ours.timesteps))
    a = run_loop(ours, outputs, x_t)
    b = run_loop(theirs, outputs, x_t)
    assert max_abs_diff(a.prev_samples[:1], b.prev_samples[:1]) == 0.0
    assert max_abs_diff(a.prev_samples, b.prev_samples) > 1e-2


@pytest.mark.parametrize("name, cls", [("ddpm", DDPMScheduler), ("ddim", DDIMScheduler), ("pndm", PNDMScheduler)])
def test_runs_with_diffusers_own_float32_schedule_stay_within_its_rounding(name, cls):
    # Without handing diffusers our ᾱ: the float32-vs-float64 product differs by ≲4e-7 relative, which a reverse
    # chain amplifies; on the Hub configs with ε-prediction the runs still agree closely.
    import diffusers

    steps = {"ddpm": 50, "ddim": 50, "pndm": 10}[name]
    ours = cls.from_config(CELEBAHQ_SCHEDULER_CONFIG)
    theirs = getattr(diffusers, cls.__name__).from_config(CELEBAHQ_SCHEDULER_CONFIG)
    ours.set_timesteps(steps)
    theirs.set_timesteps(steps)
    outputs, x_t = random_model_outputs(len(ours.timesteps))
    a = run_loop(ours, outputs, x_t, generator_seed=3 if name != "pndm" else None)
    b = run_loop(theirs, outputs, x_t, generator_seed=3 if name != "pndm" else None)
    scale = max(1.0, max(x.abs().max().item() for x in b.prev_samples))
    assert max_abs_diff(a.prev_samples, b.prev_samples) <= 5e-5 * scale
