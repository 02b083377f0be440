"""Euler, Euler ancestral and Heun (issue 15): step-for-step parity with diffusers 0.42.1, the paper where diffusers
is wrong, part-way starts, σ-space properties, the pipeline's image against a correct diffusers loop."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import ddpm
from ddpm.errors import ConfigError
from ddpm.schedulers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

from helpers import CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG, TINY_UNET_CONFIG, diffusers_unet
from scheduler_helpers import SHAPE, diffusers_twin

diffusers = pytest.importorskip("diffusers")

E, A, H = EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, HeunDiscreteScheduler
HUB = {"cifar": CIFAR10_SCHEDULER_CONFIG, "celebahq": CELEBAHQ_SCHEDULER_CONFIG}
RTOL = 1e-5  # fp32, relative to the sample's scale (σ_max ≈ 157: absolute 1e-5 is below one float32 ulp there)


def _fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.1 * x + t / 1000  # deterministic, depends on both inputs


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() <= RTOL * (1 + b.abs().max()))


def _parity(cls: Any, hub: str, n: int, churn: dict[str, float] | None = None, **keys: Any) -> None:
    """Run ours and diffusers' scheduler (same ᾱ, same config) side by side and compare every call's outputs."""
    ours = cls.from_config(HUB[hub], **keys)
    theirs = diffusers_twin(ours)
    ours.set_timesteps(n)
    theirs.set_timesteps(n)
    assert torch.equal(ours.timesteps, theirs.timesteps.float()) and torch.equal(ours.sigmas, theirs.sigmas)
    assert len(ours.timesteps) == (2 * n - 1 if cls is H else n)
    assert ours.init_noise_sigma == float(theirs.init_noise_sigma)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(n)) * ours.init_noise_sigma
    y = x.clone()
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    extra = {} if cls is H else {"generator": g_theirs}
    for t in ours.timesteps:
        scaled = ours.scale_model_input(x, t)
        assert _close(scaled, theirs.scale_model_input(y, t))
        out = _fake_model(scaled, t)
        a = ours.step(out, t, x, generator=g_ours, **(churn or {}))
        b = theirs.step(out, t, y, **extra, **(churn or {}))
        assert _close(a.prev_sample, b.prev_sample) and _close(a.pred_original_sample, b.pred_original_sample), t
        x, y = a.prev_sample, b.prev_sample


@pytest.mark.parametrize("cls", [E, A, H])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 25])
def test_each_step_count_matches_diffusers(cls, n):
    _parity(cls, "cifar" if n % 2 else "celebahq", n)


@pytest.mark.parametrize(
    ("cls", "hub", "n", "keys"),
    [
        (E, "celebahq", 7, {"use_karras_sigmas": True}),
        (H, "cifar", 3, {"use_karras_sigmas": True, "prediction_type": "v_prediction"}),
        (H, "celebahq", 1, {"use_karras_sigmas": True}),
        (E, "cifar", 7, {"use_karras_sigmas": True, "sigma_min": 0.05, "sigma_max": 60.0}),
        (E, "cifar", 7, {"use_exponential_sigmas": True, "final_sigmas_type": "sigma_min"}),
        (H, "celebahq", 7, {"use_exponential_sigmas": True, "prediction_type": "sample", "clip_sample": True}),
        (E, "cifar", 7, {"timestep_spacing": "leading", "steps_offset": 1, "prediction_type": "sample"}),
        (E, "celebahq", 25, {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
        (A, "cifar", 7, {"timestep_spacing": "leading", "prediction_type": "v_prediction"}),
        (A, "celebahq", 3, {"timestep_spacing": "trailing", "rescale_betas_zero_snr": True}),
        (H, "cifar", 7, {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
        (E, "cifar", 7, {"timestep_type": "continuous", "prediction_type": "v_prediction", "use_karras_sigmas": True}),
        (
            E,
            "cifar",
            7,
            {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
        ),
        (E, "cifar", 5, {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}),
        (H, "cifar", 5, {"beta_schedule": "squaredcos_cap_v2", "use_karras_sigmas": True}),
    ],
)
def test_options_and_their_risky_combinations_match_diffusers(cls, hub, n, keys):
    _parity(cls, hub, n, **keys)


@pytest.mark.parametrize(
    ("n", "churn", "keys"),
    [
        (7, {"s_churn": 10.0}, {}),
        (3, {"s_churn": 1.0, "s_tmin": 0.5, "s_tmax": 50.0, "s_noise": 1.003}, {"prediction_type": "v_prediction"}),
        (25, {"s_churn": 40.0}, {"use_karras_sigmas": True}),
    ],
)
def test_euler_churn_draws_the_same_noise_as_diffusers(n, churn, keys):
    _parity(E, "celebahq", n, churn, **keys)


def test_defaults_are_diffusers_defaults_and_configs_travel_both_ways():
    for cls in (E, A, H):
        theirs = dict(getattr(diffusers, cls.__name__)().config)
        ours = cls().config.to_dict()
        shared = {k for k in theirs if not k.startswith("_")}
        assert {k: ours.get(k) for k in shared} == {k: theirs[k] for k in shared}, cls
    pipe_config = ddpm.DDPMScheduler.from_config(CELEBAHQ_SCHEDULER_CONFIG).config
    for cls in (E, A, H):
        swapped = cls.from_config(pipe_config, use_karras_sigmas=True) if cls is not A else cls.from_config(pipe_config)
        back = ddpm.DDPMScheduler.from_config(swapped.config)
        assert back.config == pipe_config  # every DDPM key survives the trip (carried along)


def test_sigma_space_properties():
    scheduler = E.from_config(CIFAR10_SCHEDULER_CONFIG, timestep_spacing="leading")  # sqrt(σ_max² + 1) then
    assert scheduler.timesteps.dtype == torch.float32 and scheduler.timesteps[0] == 999.0
    sigma_max = float(scheduler.sigmas.max())
    assert scheduler.init_noise_sigma == pytest.approx((sigma_max**2 + 1) ** 0.5, rel=1e-6)
    assert E().init_noise_sigma == pytest.approx(sigma_max, rel=1e-6) and H.order == 2 and E.order == 1
    scheduler.set_timesteps(4)
    x = torch.randn(SHAPE)
    first = float(scheduler.sigmas[0])  # σ of timestep 750, the first leading timestep of 4
    torch.testing.assert_close(scheduler.scale_model_input(x, scheduler.timesteps[0]), x / (first**2 + 1) ** 0.5)


@pytest.mark.parametrize("cls", [E, H])
def test_a_point_mass_is_recovered_exactly_with_no_leftover_noise(cls):
    # data x_0 = 0: the exact denoiser is D = 0 and ε = x / σ, so each Euler step scales x by σ_{i+1} / σ_i and the
    # last one, to σ = 0 (final_sigmas_type="zero"), lands on 0 exactly (EDM Alg. 1 line 7)
    scheduler = cls.from_config(CELEBAHQ_SCHEDULER_CONFIG, use_karras_sigmas=True)
    scheduler.set_timesteps(5)
    x = torch.randn(SHAPE, dtype=torch.float64) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        eps = (
            scheduler.scale_model_input(x, t)
            * (float(scheduler.sigmas[i]) ** 2 + 1) ** 0.5
            / float(scheduler.sigmas[i])
        )
        x = scheduler.step(eps, t, x).prev_sample
    assert x.abs().max() < 1e-12 * scheduler.init_noise_sigma**5  # float64 rounding only


def test_repeated_timesteps_do_not_make_the_first_step_skip_a_level():
    # karras levels above the largest training σ all map to timestep 999: diffusers' first step looks the timestep
    # up and takes its *second* occurrence (diffusers#12771 for the same lookup), skipping σ_0. Ours steps σ_0 -> σ_1
    # as EDM Alg. 2 does: x_1 = x_0 + (σ_1 - σ_0) ε̂.
    ours = E.from_config(CIFAR10_SCHEDULER_CONFIG, use_karras_sigmas=True, sigma_max=400.0, timestep_spacing="linspace")
    ours.set_timesteps(10)
    assert ours.timesteps[0] == ours.timesteps[1] == 999.0
    x = torch.randn(SHAPE, dtype=torch.float64) * ours.init_noise_sigma
    eps = torch.randn(SHAPE, dtype=torch.float64)
    s = ours.sigmas.double()
    expected = x + (s[1] - s[0]) * eps
    torch.testing.assert_close(ours.step(eps, ours.timesteps[0], x).prev_sample, expected)
    theirs = diffusers_twin(ours)
    theirs.set_timesteps(10)
    theirs.step(eps, theirs.timesteps[0], x)
    assert theirs.step_index == 2  # diffusers jumped over level 0


@pytest.mark.parametrize("cls", [E, A, H])
def test_image_to_image_start_part_way_after_add_noise_matches_diffusers(cls):
    ours = cls.from_config(CELEBAHQ_SCHEDULER_CONFIG)
    theirs = diffusers_twin(ours)
    ours.set_timesteps(6)
    theirs.set_timesteps(6)
    k = 2 * cls.order  # the start of level 2 (Heun: timesteps[4:], diffusers' t_start * order)
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    start = ours.timesteps[k : k + 1].repeat(SHAPE[0])
    x = ours.add_noise(x0, noise, start)
    assert torch.equal(x, theirs.add_noise(x0, noise, theirs.timesteps[k : k + 1].repeat(SHAPE[0])))
    y = x.clone()
    g_ours, g_theirs = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    extra = {} if cls is H else {"generator": g_theirs}
    for t in ours.timesteps[k:]:
        out = _fake_model(ours.scale_model_input(x, t), t)
        x = ours.step(out, t, x, generator=g_ours).prev_sample
        y = theirs.step(_fake_model(theirs.scale_model_input(y, t), t), t, y, **extra).prev_sample
    assert _close(x, y)


def test_heun_refuses_to_start_inside_a_step_and_sigma_space_refuses_to_join_off_schedule():
    heun = H()
    heun.set_timesteps(4)
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="cannot start at position 3 of timesteps.*even position"):
        heun.step(x, heun.timesteps[3:][0], x)
    euler = E()
    euler.set_timesteps(4)
    with pytest.raises(ValueError, match="timestep 500, which is not in the schedule"):
        euler.step(x, 500, x)
    with pytest.raises(ValueError, match="add_noise got timestep 500.0, which is not in the schedule"):
        euler.add_noise(x, x, torch.tensor([500.0]))


def test_unsupported_options_are_refused_with_what_to_use():
    with pytest.raises(ConfigError, match="interpolation_type.*only 'linear' is supported"):
        E(interpolation_type="log_linear")
    with pytest.raises(ConfigError, match="use_beta_sigmas.*not supported.*use_karras_sigmas"):
        H(use_beta_sigmas=True)
    with pytest.raises(ConfigError, match="only one of use_karras_sigmas, use_exponential_sigmas"):
        E(use_karras_sigmas=True, use_exponential_sigmas=True)
    with pytest.raises(ValueError, match="cannot be used with use_karras_sigmas=True"):
        E(use_karras_sigmas=True).set_timesteps(timesteps=[900, 500, 0])
    euler = E()
    euler.set_timesteps(3)
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match="s_churn must be a number ≥ 0, got -1"):
        euler.step(x, euler.timesteps[0], x, s_churn=-1)


def test_ddpm_pipeline_runs_euler_and_heun_like_a_correct_diffusers_loop():
    # diffusers' own DDPMPipeline neither scales the initial noise nor the model input, so it samples these
    # schedulers wrongly; the reference is the loop a diffusers user must write by hand.
    config = {**TINY_UNET_CONFIG, "block_out_channels": [8, 16], "norm_num_groups": 4, "sample_size": 8}
    unet_theirs = diffusers_unet(config, seed=3)
    unet_ours = ddpm.UNet2DModel.from_config(config).eval()
    unet_ours.load_state_dict(unet_theirs.state_dict())
    for cls, keys in ((E, {"use_karras_sigmas": True}), (A, {}), (H, {})):
        scheduler = cls.from_config(CIFAR10_SCHEDULER_CONFIG, **keys)
        pipe = ddpm.DDPMPipeline(unet=unet_ours, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        image = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np").images

        theirs = getattr(diffusers, cls.__name__).from_config(scheduler.config.to_dict())
        theirs.set_timesteps(3)
        g = torch.Generator().manual_seed(0)
        x = torch.randn((1, 3, 8, 8), generator=g) * theirs.init_noise_sigma
        with torch.no_grad():
            for t in theirs.timesteps:
                out = unet_theirs(theirs.scale_model_input(x, t), t).sample
                x = theirs.step(out, t, x, **({} if cls is H else {"generator": g})).prev_sample
        expected = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(image, expected, atol=2e-3)
