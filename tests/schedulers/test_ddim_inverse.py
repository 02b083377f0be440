"""DDIMInverseScheduler: step for step against diffusers 0.42.1 where diffusers is right, against the DDIM paper's
update (Song et al. 2021, Eq. (13) run upwards) where it is not (see the class docstring and docs/editing.md)."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from ddpm import DDIMInverseScheduler, DDIMScheduler

from helpers import CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG
from scheduler_helpers import SHAPE, diffusers_twin, max_abs_diff, random_model_outputs, run_loop

diffusers = pytest.importorskip("diffusers")


def _twin(ours: DDIMInverseScheduler) -> Any:
    """diffusers' DDIMInverseScheduler on the same config and ᾱ (its initial ᾱ set the way its constructor does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = diffusers_twin(ours)
    theirs.initial_alpha_cumprod = torch.tensor(1.0) if ours.config.set_alpha_to_one else theirs.alphas_cumprod[0]
    return theirs


CASES = [
    # (config, n): every step count class on the default config, each option, both google/ddpm configs
    ({}, 1),
    ({}, 2),
    ({}, 3),
    ({}, 7),
    ({}, 50),
    ({"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 2),
    ({"prediction_type": "v_prediction", "set_alpha_to_one": False}, 50),
    ({"prediction_type": "sample", "set_alpha_to_one": False}, 3),
    ({"prediction_type": "sample", "set_alpha_to_one": False, "timestep_spacing": "trailing"}, 50),
    ({"timestep_spacing": "trailing"}, 1),
    ({"timestep_spacing": "trailing", "rescale_betas_zero_snr": True}, 50),
    ({"steps_offset": 1, "beta_schedule": "scaled_linear"}, 7),
    ({"clip_sample": True, "clip_sample_range": 0.5}, 50),
    ({**CIFAR10_SCHEDULER_CONFIG}, 50),
    ({**CELEBAHQ_SCHEDULER_CONFIG}, 3),
]


@pytest.mark.parametrize(("config", "n"), CASES, ids=[f"{i}-n{n}" for i, (_, n) in enumerate(CASES)])
def test_steps_match_diffusers_where_its_stride_is_the_schedule(config: dict[str, Any], n: int) -> None:
    ours = DDIMInverseScheduler.from_config({"clip_sample": False, **config})
    theirs = _twin(ours)
    ours.set_timesteps(n)
    theirs.set_timesteps(n)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    ddim = DDIMScheduler.from_config(ours.config)
    ddim.set_timesteps(n)
    assert ours.timesteps.tolist() == ddim.timesteps.tolist()[::-1]  # DDIM's levels, upwards
    outputs, x = random_model_outputs(n)
    a, b = run_loop(ours, outputs, x), run_loop(theirs, outputs, x)
    assert max_abs_diff(a.prev_samples, b.prev_samples) <= 1e-5
    assert max_abs_diff(a.pred_original_samples, b.pred_original_samples) <= 1e-5


def _paper_step(x_s: torch.Tensor, eps: torch.Tensor, alpha_bar_s: float, alpha_bar_t: float) -> torch.Tensor:
    """Eq. (13) of Song et al. 2021 from level s up to level t, in float64: x̄_t = x̄_s + (σ_t - σ_s) ε."""
    sigma = lambda a: ((1 - a) / a) ** 0.5  # noqa: E731
    x_bar = x_s.double() / alpha_bar_s**0.5 + (sigma(alpha_bar_t) - sigma(alpha_bar_s)) * eps.double()
    return x_bar * alpha_bar_t**0.5


@pytest.mark.parametrize(
    ("config", "n"),
    [({"timestep_spacing": "trailing"}, 7), ({"timestep_spacing": "linspace"}, 3), ({"steps_offset": 333}, 3)],
)
def test_each_step_is_the_papers_update_from_the_previous_timestep_where_diffusers_strides_elsewhere(
    config: dict[str, Any], n: int
) -> None:
    # trailing with n not dividing T, linspace (refused by diffusers) and leading with steps_offset >= T // n: diffusers
    # starts a step at t - T // n, a level the chain never reached. Ours starts at the previous timestep.
    ours = DDIMInverseScheduler(clip_sample=False, **config)
    ours.set_timesteps(n)
    schedule = ours.timesteps.tolist()
    assert schedule == sorted(schedule) and len(schedule) == n
    alpha_bar = ours.alphas_cumprod.double()
    outputs, x = random_model_outputs(n)
    start = x
    for i, t in enumerate(schedule):
        alpha_bar_s = 1.0 if i == 0 else float(alpha_bar[schedule[i - 1]])
        expected = _paper_step(x, outputs[i], alpha_bar_s, float(alpha_bar[t]))
        x = ours.step(outputs[i], t, x).prev_sample
        torch.testing.assert_close(x.double(), expected, atol=2e-5, rtol=2e-5)
    if config.get("timestep_spacing") != "linspace":  # diffusers refuses linspace; elsewhere it reads another level
        theirs = _twin(DDIMInverseScheduler(clip_sample=False, **config))
        theirs.set_timesteps(n)
        assert (run_loop(theirs, outputs, start).prev_samples[-1] - x).abs().max() > 1e-4  # (parity: 1e-5)


def test_the_chain_goes_up_to_the_first_sampling_timestep_and_ddim_brings_it_back_down() -> None:
    # A point mass x0: its exact ε is constant along the ODE, so both directions are exact for any step count. The
    # inversion must end at level max(timesteps) (diffusers#10695's proposed t + T // n would step downwards) and
    # DDIM over the same levels must give x0 back.
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(SHAPE, generator=g) * 2 - 1, torch.randn(SHAPE, generator=g)
    for spacing, n in (("leading", 50), ("trailing", 7), ("linspace", 10)):
        inverse = DDIMInverseScheduler(clip_sample=False, timestep_spacing=spacing)
        ddim = DDIMScheduler(clip_sample=False, timestep_spacing=spacing)
        inverse.set_timesteps(n)
        ddim.set_timesteps(n)
        x = x0
        for t in inverse.timesteps:
            x = inverse.step(eps, t, x).prev_sample
        top = float(inverse.alphas_cumprod[int(ddim.timesteps[0])])
        torch.testing.assert_close(x, top**0.5 * x0 + (1 - top) ** 0.5 * eps, atol=1e-5, rtol=1e-5)
        for t in ddim.timesteps:
            x = ddim.step(eps, t, x).prev_sample
        torch.testing.assert_close(x, x0, atol=1e-4, rtol=0)  # float32 rounding over 2n steps


def test_x0_prediction_from_the_clean_image_stays_finite_where_diffusers_divides_by_zero() -> None:
    ours = DDIMInverseScheduler(clip_sample=False, prediction_type="sample")
    theirs = _twin(ours)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    outputs, x = random_model_outputs(1)
    t = int(ours.timesteps[0])
    assert not torch.isfinite(theirs.step(outputs[0], t, x).prev_sample).all()  # sqrt(1 - ᾱ) = 0 in a division
    got = ours.step(outputs[0], t, x).prev_sample
    alpha_bar_t = float(ours.alphas_cumprod[t])
    eps = (x - alpha_bar_t**0.5 * outputs[0]) / (1 - alpha_bar_t) ** 0.5  # ε of the model's x̂_0 at its level t
    torch.testing.assert_close(got, alpha_bar_t**0.5 * outputs[0] + (1 - alpha_bar_t) ** 0.5 * eps)


def test_config_keys_and_defaults_are_diffusers() -> None:
    ours = dict(DDIMInverseScheduler().config.to_dict())
    theirs = dict(diffusers.DDIMInverseScheduler().config)
    private = lambda d: {k: v for k, v in d.items() if not k.startswith("_")}  # noqa: E731
    assert private(ours) == private(theirs)
    assert DDIMInverseScheduler().config.to_dict()["_class_name"] == "DDIMInverseScheduler"


def test_set_alpha_to_zero_is_read_as_set_alpha_to_one_with_a_warning_as_in_diffusers() -> None:
    with pytest.warns(FutureWarning, match="set_alpha_to_one"):
        assert DDIMInverseScheduler(set_alpha_to_zero=False).config.set_alpha_to_one is False
    with pytest.warns(FutureWarning):
        loaded = DDIMInverseScheduler.from_config({"set_alpha_to_zero": False})
    assert loaded.config.set_alpha_to_one is False


def test_custom_schedules_ascend_and_a_loop_cannot_start_elsewhere() -> None:
    scheduler = DDIMInverseScheduler(clip_sample=False)
    scheduler.set_timesteps(timesteps=[0, 10, 500, 999])
    assert scheduler.timesteps.tolist() == [0, 10, 500, 999]
    with pytest.raises(ValueError, match="ascending"):
        scheduler.set_timesteps(timesteps=[999, 500])
    scheduler.set_timesteps(5)
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="not in the schedule"):
        scheduler.step(x, 7, x)
