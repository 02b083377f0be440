"""DPMSolverMultistepScheduler: step for step against diffusers 0.42.1, and against the paper where diffusers is wrong.

The sweeps run the scheduler alone on a (2, 3, 8, 8) sample with a deterministic fake model output, on both
google/ddpm scheduler configs; diffusers gets our ᾱ_t (see tests/scheduler_helpers.py). One test per risky
combination rather than the full product of options.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import ddpm
from ddpm import DPMSolverMultistepScheduler
from ddpm.errors import UnsupportedConfigError
from ddpm.schedulers.sigmas import timesteps_from_sigmas, training_sigmas

from helpers import CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG, TINY_UNET_CONFIG, diffusers_unet
from scheduler_helpers import SHAPE

diffusers = pytest.importorskip("diffusers")

C, H = CIFAR10_SCHEDULER_CONFIG, CELEBAHQ_SCHEDULER_CONFIG
SDE: dict[str, Any] = {"algorithm_type": "sde-dpmsolver++"}
TOL = 1e-5


def twin(ours: DPMSolverMultistepScheduler) -> Any:
    """diffusers' DPMSolverMultistepScheduler with our config and our ᾱ_t (and the λ_t its clipping reads)."""
    theirs = diffusers.DPMSolverMultistepScheduler.from_config(ours.config.to_dict())
    theirs.alphas_cumprod = ours.alphas_cumprod.clone()
    theirs.lambda_t = torch.log(theirs.alphas_cumprod.sqrt()) - torch.log((1 - theirs.alphas_cumprod).sqrt())
    return theirs


def fake_model(x: torch.Tensor, t: int, learned: bool = False) -> torch.Tensor:
    out = 0.1 * x + t / 1000
    return torch.cat([out, 0.5 * out], dim=1) if learned else out


def run_both(config: dict, n: int, start: int = 0, **kwargs: Any) -> float:
    """Sample with both schedulers over timesteps[start:] (same seeds); the largest relative difference of a step."""
    ours = DPMSolverMultistepScheduler.from_config(config, **kwargs)
    theirs = twin(ours)
    ours.set_timesteps(n)
    theirs.set_timesteps(n)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    assert len(ours.timesteps) == n  # one model call per timestep
    learned = ours.config.variance_type in ("learned", "learned_range")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    worst = 0.0
    for t in ours.timesteps[start:]:
        a = ours.step(fake_model(x, int(t), learned), t, x, generator=g_ours).prev_sample
        b = theirs.step(fake_model(y, int(t), learned), t, y, generator=g_theirs).prev_sample
        worst = max(worst, float((a - b).abs().max()) / max(1.0, float(b.abs().max())))
        x, y = a, b
    return worst


# Each option, each step-count class (1, 2, 3, odd, large), both Hub configs, and the risky combinations:
# full third order into the last step (sigma_min, lower_order_final off), Karras levels with every order, the SDE
# with every final level, thresholding on x_0 predictions, learned-variance outputs, λ clipping.
CASES: list[tuple[dict, int, dict]] = [
    (C, 1, {}),
    (H, 2, {}),
    (C, 3, {}),
    (H, 7, {}),
    (C, 25, {}),
    (C, 3, {"solver_order": 1}),
    (H, 7, {"solver_order": 3}),
    (C, 25, {"solver_order": 3, "lower_order_final": False}),
    (H, 7, {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}),
    (C, 25, {"final_sigmas_type": "sigma_min"}),
    (H, 7, {"euler_at_final": True, "final_sigmas_type": "sigma_min", "solver_order": 3}),
    (C, 7, {"use_karras_sigmas": True}),
    (H, 25, {"use_karras_sigmas": True, "solver_order": 3, "prediction_type": "v_prediction"}),
    (C, 2, {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}),
    (C, 7, {"timestep_spacing": "leading", "steps_offset": 1}),
    (H, 25, {"timestep_spacing": "leading", "solver_order": 3}),
    (H, 25, {"timestep_spacing": "trailing"}),
    (C, 3, {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
    (C, 7, {"prediction_type": "v_prediction", "solver_type": "heun"}),
    (H, 7, {"prediction_type": "sample", "solver_order": 3, "thresholding": True, "sample_max_value": 1.5}),
    (C, 7, {"prediction_type": "sample", "solver_type": "heun", "lower_order_final": False}),
    (H, 7, {"variance_type": "learned_range"}),
    (H, 25, {"lambda_min_clipped": -5.0, "timestep_spacing": "trailing"}),
    (C, 1, SDE),
    (H, 2, SDE),
    (C, 3, {**SDE, "prediction_type": "v_prediction"}),
    (H, 7, {**SDE, "solver_type": "heun", "prediction_type": "sample"}),
    (C, 25, {**SDE, "use_karras_sigmas": True}),
    (C, 7, {**SDE, "final_sigmas_type": "sigma_min", "lower_order_final": False}),
    (H, 7, {**SDE, "solver_order": 1, "timestep_spacing": "leading"}),
]


@pytest.mark.parametrize(("config", "n", "kwargs"), CASES, ids=[f"{n}-{kw}" for _, n, kw in CASES])
def test_steps_equal_diffusers(config: dict, n: int, kwargs: dict) -> None:
    assert run_both(config, n, **kwargs) <= TOL


@pytest.mark.parametrize("kwargs", [{"solver_order": 3}, SDE])
def test_a_loop_that_starts_part_way_starts_a_fresh_history_as_diffusers_does(kwargs: dict) -> None:
    # image-to-image: set_timesteps(n), add noise to level k, `for t in scheduler.timesteps[k:]`
    assert run_both(H, 10, start=4, **kwargs) <= TOL
    ours = DPMSolverMultistepScheduler(**kwargs)
    ours.set_timesteps(10)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in ours.timesteps[:6]:
        ours.step(fake_model(x, int(t)), t, x, generator=torch.Generator().manual_seed(0))
    assert len(ours._history) == ours.config.solver_order
    ours.set_timesteps(10)
    assert len(ours._history) == 0  # a new schedule starts a new history
    ours.step(fake_model(x, int(ours.timesteps[4])), ours.timesteps[4], x, generator=torch.Generator())
    assert len(ours._history) == 1
    assert ours.previous_timestep(ours.timesteps[4]) == ours.timesteps[5]  # from the schedule, not a stride


def test_variance_noise_is_used_instead_of_drawing() -> None:
    ours = DPMSolverMultistepScheduler(**SDE)
    theirs = twin(ours)
    ours.set_timesteps(5)
    theirs.set_timesteps(5)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for i, t in enumerate(ours.timesteps):
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(10 + i))
        a = ours.step(fake_model(x, int(t)), t, x, variance_noise=z).prev_sample
        b = theirs.step(fake_model(x, int(t)), t, x, variance_noise=z).prev_sample
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)
        x = a


def test_sde_third_order_uses_the_ode_weights_at_2h_where_diffusers_flips_a_sign() -> None:
    """The SDE's kernel is e^{-2(λ_t - λ)}: each weight of the SDE step is the ODE step's weight at 2h. diffusers'
    third-order SDE step subtracts 1/2 in the D_2 weight (diffusers#9104), so its step differs from the paper's by
    exactly α_t D_2."""
    ours = DPMSolverMultistepScheduler.from_config(H, solver_order=3, **SDE)
    theirs = twin(ours)
    ours.set_timesteps(7)
    theirs.set_timesteps(7)
    h = (ours._lambda[1:] - ours._lambda[:-1]).double().tolist()
    alpha = ours._alpha.double().tolist()
    for i, c in enumerate(ours._coefficients[:-1]):  # the last step lands at σ = 0 (h = inf)
        big_h, a_t = 2 * h[i], alpha[i + 1]  # the ODE's weights (module docstring) at 2h
        assert c.d0 == pytest.approx(a_t * (1 - math.exp(-big_h)), rel=1e-5)
        assert c.d1_heun == pytest.approx(a_t * ((math.exp(-big_h) - 1) / big_h + 1), rel=1e-4)
        assert c.d2 == pytest.approx(a_t * (0.5 - (math.exp(-big_h) - 1 + big_h) / big_h**2), abs=1e-5)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    predictions = []
    for i, t in enumerate(ours.timesteps[:-1]):
        z = torch.randn(SHAPE, generator=torch.Generator().manual_seed(10 + i))
        out = ours.step(fake_model(x, int(t)), t, x, variance_noise=z)
        b = theirs.step(fake_model(x, int(t)), t, x, variance_noise=z).prev_sample
        predictions.append(out.pred_original_sample)
        if min(i + 1, ours._highest_order[i]) < 3:  # orders 1 and 2 (warm-up, lower_order_final): the same step
            torch.testing.assert_close(out.prev_sample, b, rtol=TOL, atol=TOL)
        else:
            c = ours._coefficients[i]
            m0, m1, m2 = predictions[-1], predictions[-2], predictions[-3]
            d2 = ((m0 - m1) / c.r0 - (m1 - m2) / c.r1) / (c.r0 + c.r1)
            # the difference of two O(|x|) samples: compared relative to |x| (the samples grow to ~100 here)
            scale = float(b.abs().max())
            torch.testing.assert_close(out.prev_sample - b, alpha[i + 1] * d2, rtol=0, atol=TOL * scale)
            assert float((alpha[i + 1] * d2).abs().max()) > 100 * TOL * scale  # the difference is really there
        x = out.prev_sample


def test_karras_levels_on_a_cosine_schedule_keep_every_level_where_diffusers_fails() -> None:
    # diffusers#12771: its unrounded timesteps collapse to repeated ints, the step index drifts, IndexError
    ours = DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True)
    ours.set_timesteps(20)
    training = training_sigmas(ours.alphas_cumprod)
    fractional = timesteps_from_sigmas(ours.sigmas[:-1].double().numpy(), np.log(training))
    assert ours.timesteps.tolist() == np.round(fractional).astype(int).tolist()  # the nearest training timestep
    assert len(ours.timesteps) == 20 and len(set(ours.timesteps.tolist())) < 20  # repeats are fine: one call each
    assert bool((ours.sigmas[1:] < ours.sigmas[:-1]).all())  # 20 distinct, decreasing levels, then 0
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in ours.timesteps:
        x = ours.step(fake_model(x, int(t)), t, x).prev_sample
    assert bool(torch.isfinite(x).all())
    theirs = diffusers.DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", use_karras_sigmas=True)
    theirs.set_timesteps(20)
    with pytest.raises(IndexError):
        y = torch.zeros(SHAPE)
        for t in theirs.timesteps:
            y = theirs.step(fake_model(y, int(t)), t, y).prev_sample


def test_hub_configs_load_unchanged_and_configs_travel_both_ways(tmp_path) -> None:
    for config in (C, H):
        ours = DPMSolverMultistepScheduler.from_config(config)
        assert ours.config.variance_type == config["variance_type"]  # a DDPM value, read and ignored as in diffusers
        assert ours.config.timestep_spacing == "linspace" and ours.config.solver_order == 2
        back = ddpm.DDPMScheduler.from_config(ours.config)
        assert back.config == ddpm.DDPMScheduler.from_config(config).config  # DDPM -> DPM -> DDPM keeps every key
    ours = DPMSolverMultistepScheduler(use_karras_sigmas=True, solver_order=3, **SDE)
    ours.save_pretrained(tmp_path / "ours")
    theirs = diffusers.DPMSolverMultistepScheduler.from_pretrained(tmp_path / "ours")
    theirs.save_config(tmp_path / "theirs")
    again = DPMSolverMultistepScheduler.from_pretrained(tmp_path / "theirs")
    assert again.config == ours.config == theirs.config  # lambda_min_clipped=-inf survives JSON both ways
    assert DPMSolverMultistepScheduler.from_config(theirs.config).config == ours.config
    # UniPC's solver types and DEIS's algorithm read as diffusers reads them
    assert DPMSolverMultistepScheduler(solver_type="bh2", algorithm_type="deis").config.solver_type == "midpoint"
    with pytest.raises(UnsupportedConfigError, match="'sde-dpmsolver'.*use one of 'dpmsolver\\+\\+'"):
        DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver")
    with pytest.raises(UnsupportedConfigError, match="'use_exponential_sigmas' has value True"):
        DPMSolverMultistepScheduler(use_exponential_sigmas=True)


@pytest.fixture(scope="module")
def unets() -> tuple[ddpm.UNet2DModel, Any]:
    config = {**TINY_UNET_CONFIG, "block_out_channels": [8, 16], "norm_num_groups": 4, "sample_size": 8}
    theirs = diffusers_unet(config, seed=3)
    ours = ddpm.UNet2DModel.from_config(config).eval()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("kwargs", [{}, {**SDE, "solver_order": 2}, {"solver_order": 3, "use_karras_sigmas": True}])
def test_ddpm_pipeline_with_the_scheduler_swapped_makes_diffusers_images(unets, kwargs: dict) -> None:
    ours = ddpm.DDPMPipeline(unet=unets[0], scheduler=ddpm.DDPMScheduler.from_config(C))
    theirs = diffusers.DDPMPipeline(unet=unets[1], scheduler=diffusers.DDPMScheduler.from_config(C))
    ours.scheduler = DPMSolverMultistepScheduler.from_config(ours.scheduler.config, **kwargs)
    theirs.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(theirs.scheduler.config, **kwargs)
    images = []
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        images.append(pipe(batch_size=2, generator=generator, num_inference_steps=6, output_type="np").images)
    np.testing.assert_allclose(images[0], images[1], rtol=0, atol=1e-4)
