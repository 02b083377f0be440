"""UniPCMultistepScheduler: step-for-step parity with diffusers 0.42.1, and the paper's update where diffusers is wrong.

Scheduler-only loops on a (2, 3, 8, 8) sample with a deterministic fake model (0.1 x + t / 1000 plus a little fixed
noise). Where diffusers' last step is finite, every step agrees to 1e-5 (it agrees to the bit: the coefficients are
rounded as diffusers rounds them). Where diffusers' step into σ = 0 is NaN (``bh1``, noise prediction, or an order
above 1 there), the earlier steps are compared with diffusers and the last one with the paper's limit, x̂_0.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pytest
import torch

import ddpm
from ddpm.errors import ConfigError
from ddpm.schedulers import SCHEDULERS, DDIMScheduler, DDPMScheduler, Scheduler, UniPCMultistepScheduler

from helpers import CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG, TINY_UNET_CONFIG, diffusers_unet
from scheduler_helpers import SHAPE, diffusers_twin, random_model_outputs

diffusers = pytest.importorskip("diffusers")

ATOL = 1e-5
CONFIGS = {"cifar10": CIFAR10_SCHEDULER_CONFIG, "celebahq": CELEBAHQ_SCHEDULER_CONFIG}


def _fake_output(i: int, t: Any, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return 0.1 * x + int(t) / 1000 + 0.05 * noise[i]


def _loop(scheduler: Any, n: int, start: int = 0) -> tuple[list[torch.Tensor], list[Any]]:
    """Run the fake model over ``timesteps[start:]``; (every prev_sample, every x̂_0 where the scheduler gives it)."""
    noise, x = random_model_outputs(n)
    samples, x0s = [], []
    for i, t in enumerate(scheduler.timesteps[start:], start=start):
        try:
            out = scheduler.step(_fake_output(i, t, x, noise), t, x)
        except RuntimeError:  # diffusers' solve of a singular system (r_k = 0 into σ = 0): a NaN step
            samples.append(torch.full_like(x, math.nan))
            continue
        x = out.prev_sample
        samples.append(x)
        x0s.append(getattr(out, "pred_original_sample", None))
    return samples, x0s


# (config, n, keys): each option, each step-count class (1, 2, 3, odd, 25) and the risky combinations
CASES: list[tuple[str, int, dict[str, Any]]] = [
    ("celebahq", 1, {}),
    ("cifar10", 2, {}),
    ("celebahq", 3, {"solver_order": 3}),
    ("cifar10", 7, {"solver_order": 3, "timestep_spacing": "trailing"}),
    ("celebahq", 25, {"solver_order": 3}),
    ("cifar10", 25, {"solver_order": 1, "timestep_spacing": "leading", "steps_offset": 1}),
    ("celebahq", 7, {"solver_type": "bh1"}),
    ("cifar10", 25, {"solver_type": "bh1", "solver_order": 3, "timestep_spacing": "trailing"}),
    ("celebahq", 7, {"predict_x0": False}),
    ("cifar10", 3, {"predict_x0": False, "solver_type": "bh1", "prediction_type": "v_prediction"}),
    ("celebahq", 7, {"prediction_type": "v_prediction", "solver_order": 3}),
    ("cifar10", 7, {"prediction_type": "sample", "timestep_spacing": "leading"}),
    ("celebahq", 25, {"predict_x0": False, "prediction_type": "sample", "use_karras_sigmas": True}),
    ("cifar10", 7, {"use_karras_sigmas": True, "solver_order": 3}),
    ("celebahq", 2, {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}),
    ("cifar10", 7, {"final_sigmas_type": "sigma_min", "solver_order": 3, "lower_order_final": False}),
    ("celebahq", 7, {"lower_order_final": False}),
    ("cifar10", 3, {"lower_order_final": False, "solver_order": 3, "solver_type": "bh1"}),
    ("celebahq", 7, {"disable_corrector": [0, 3]}),
    ("cifar10", 25, {"thresholding": True, "sample_max_value": 1.5, "prediction_type": "sample"}),
    ("celebahq", 7, {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}),
]


@pytest.mark.parametrize(("config", "n", "keys"), CASES, ids=[f"{c}-{n}-{k}" for c, n, k in CASES])
def test_every_step_equals_diffusers_or_the_papers_limit_into_sigma_zero(config, n, keys):
    ours = UniPCMultistepScheduler.from_config(CONFIGS[config], **keys)
    theirs = diffusers_twin(ours)
    if ours.config.rescale_betas_zero_snr:  # diffusers' UniPC reads the zero-SNR ᾱ_{T-1} = 0 as 2^-24, as ours does
        theirs.alphas_cumprod[-1] = 2.0**-24
    ours.set_timesteps(n)
    theirs.set_timesteps(n)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist() and len(ours.timesteps) == n
    with np.errstate(all="ignore"):
        (mine, x0s), (reference, _) = _loop(ours, n), _loop(theirs, n)
    for i, (a, b) in enumerate(zip(mine, reference)):
        assert torch.isfinite(a).all(), i
        if i < n - 1 or torch.isfinite(b).all():
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
    if ours._sigmas[-1] == 0 and ours.config.predict_x0:  # the step into σ = 0 ends at x̂_0 (λ = ∞: e^{-h} = 0)
        torch.testing.assert_close(mine[-1], x0s[-1], rtol=0, atol=ATOL)


def test_diffusers_bh1_ends_in_nan_on_the_google_configs_and_ours_at_the_last_x0():
    """B(h) = h is infinite at σ = 0; diffusers multiplies it by the empty residual (∞ · 0)."""
    for config in CONFIGS.values():
        ours = UniPCMultistepScheduler.from_config(config, solver_type="bh1")
        theirs = diffusers_twin(ours)
        ours.set_timesteps(5)
        theirs.set_timesteps(5)
        with np.errstate(all="ignore"):
            (mine, x0s), (reference, _) = _loop(ours, 5), _loop(theirs, 5)
        assert torch.isnan(reference[-1]).all()  # documented in docs/schedulers.md; update if diffusers fixes it
        assert torch.equal(mine[-1], x0s[-1])
        torch.testing.assert_close(mine[-2], reference[-2], rtol=0, atol=ATOL)


def test_order_one_without_corrector_is_ddim_in_closed_form():
    """UniP-1 with data prediction is DDIM's deterministic step (Zhao et al. 2023 Sec. 3; Lu et al. 2022)."""
    n = 10
    ours = UniPCMultistepScheduler(solver_order=1, disable_corrector=list(range(n)), final_sigmas_type="sigma_min")
    ours.set_timesteps(n)
    ddim = DDIMScheduler(clip_sample=False, set_alpha_to_one=False)
    ddim.set_timesteps(timesteps=ours.timesteps.tolist())
    (mine, _), (reference, _) = _loop(ours, n), _loop(ddim, n)
    for a, b in zip(mine, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_noise_prediction_and_data_prediction_agree_at_order_one():
    """Both parameterisations of UniP-1 are the same exact step of the linear ODE part (DDIM)."""
    data, noise = (
        UniPCMultistepScheduler(solver_order=1, predict_x0=p, disable_corrector=[0, 1, 2]) for p in (True, False)
    )
    for s in (data, noise):
        s.set_timesteps(4)
    (a, _), (b, _) = _loop(data, 4), _loop(noise, 4)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)


def test_a_part_way_loop_and_a_second_loop_start_fresh_like_diffusers():
    """img2img: add_noise at timesteps[k], then ``for t in timesteps[k:]``; and set_timesteps resets the history."""
    ours = UniPCMultistepScheduler(solver_order=3)
    theirs = diffusers_twin(ours)
    ours.set_timesteps(10)
    first, _ = _loop(ours, 10)
    ours.set_timesteps(10)
    again, _ = _loop(ours, 10)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    ours.set_timesteps(10)
    _loop(ours, 10)  # a full loop first: its history must not leak into the next part-way loop
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    mine, _ = _loop(ours, 10, start=4)
    reference, _ = _loop(theirs, 10, start=4)
    for a, b in zip(mine, reference):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
    x0, noise = random_model_outputs(1)
    t = ours.timesteps[4:5]
    torch.testing.assert_close(ours.add_noise(x0[0], noise, t), theirs.add_noise(x0[0], noise, t), rtol=0, atol=1e-6)


def test_step_takes_the_shared_signature_and_ignores_a_generator():
    assert inspect.signature(UniPCMultistepScheduler.step) == inspect.signature(Scheduler.step)
    a, b = UniPCMultistepScheduler(), UniPCMultistepScheduler()
    for s in (a, b):
        s.set_timesteps(3)
    noise, x = random_model_outputs(3)
    for i, t in enumerate(a.timesteps):
        out = _fake_output(i, t, x, noise)
        left = a.step(out, t, x, generator=torch.Generator().manual_seed(i)).prev_sample
        right = b.step(out, t, x).prev_sample
        assert torch.equal(left, right)
        x = left
    assert SCHEDULERS["unipc"] is UniPCMultistepScheduler is ddpm.UniPCMultistepScheduler


def test_configs_travel_both_ways_and_keep_every_key(tmp_path):
    ddpm_scheduler = DDPMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG)
    unipc = UniPCMultistepScheduler.from_config(ddpm_scheduler.config)
    assert unipc.config.timestep_spacing == "linspace" and unipc.config.solver_type == "bh2"  # UniPC's defaults
    back = DDPMScheduler.from_config(unipc.config)
    assert back.config == ddpm_scheduler.config and back.config.to_dict() == ddpm_scheduler.config.to_dict()
    theirs = diffusers.UniPCMultistepScheduler(solver_order=3, solver_type="bh1", disable_corrector=[1])
    theirs.save_pretrained(tmp_path / "theirs")
    loaded = UniPCMultistepScheduler.from_pretrained(tmp_path / "theirs")
    for key, value in theirs.config.items():
        if not key.startswith("_"):
            assert loaded.config.to_dict()[key] == value, key
    assert UniPCMultistepScheduler.from_config({"solver_type": "midpoint"}).config.solver_type == "bh2"  # DPM's


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({"use_beta_sigmas": True}, "use_beta_sigmas' has value True; UniPCMultistepScheduler here implements"),
        ({"use_flow_sigmas": True}, "use_flow_sigmas' has value True"),
        ({"solver_order": 4}, "solver_order' has value 4; use 1 to 3"),
        ({"solver_type": "bh3"}, "solver_type' has value 'bh3'; use 'bh1'"),
        ({"final_sigmas_type": "one"}, "final_sigmas_type' has value 'one'; expected one of 'zero', 'sigma_min'"),
        ({"shift_terminal": 0.1}, "shift_terminal' has value 0.1; it only applies to flow-matching sigmas"),
    ],
)
def test_unsupported_and_invalid_keys_are_config_errors(keys, match):
    with pytest.raises(ConfigError, match=match):
        UniPCMultistepScheduler(**keys)


def test_solver_p_karras_with_custom_timesteps_and_colliding_levels_are_refused():
    with pytest.raises(ConfigError, match="solver_p=DDIMScheduler.*is not supported"):
        UniPCMultistepScheduler(solver_p=DDIMScheduler())
    with pytest.raises(ValueError, match="custom timesteps cannot be combined with use_karras_sigmas"):
        UniPCMultistepScheduler(use_karras_sigmas=True).set_timesteps(timesteps=[900, 500])
    with pytest.raises(ValueError, match="strictly decreasing noise level"):
        UniPCMultistepScheduler().set_timesteps(1000)
    custom = UniPCMultistepScheduler()
    custom.set_timesteps(timesteps=[900, 500, 100])
    assert custom._sigmas[-1] == 0 and len(custom.timesteps) == 3
    assert math.isclose(
        custom._sigmas[1], float(((1 - custom.alphas_cumprod[500]) / custom.alphas_cumprod[500]).sqrt())
    )


def test_our_ddpm_pipeline_runs_unipc_and_matches_diffusers_driven_by_hand():
    """diffusers' DDPMPipeline passes a generator to step(), which its UniPC does not take: a hand loop instead."""
    config = {**TINY_UNET_CONFIG, "block_out_channels": [8, 16], "norm_num_groups": 4, "sample_size": 8}
    theirs_unet = diffusers_unet(config, seed=3)
    ours_unet = ddpm.UNet2DModel.from_config(config).eval()
    ours_unet.load_state_dict(theirs_unet.state_dict())
    ours_scheduler = UniPCMultistepScheduler.from_config(CIFAR10_SCHEDULER_CONFIG)
    pipe = ddpm.DDPMPipeline(unet=ours_unet, scheduler=ours_scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    images = pipe(batch_size=2, generator=generator, num_inference_steps=4, output_type="np").images

    scheduler = diffusers.UniPCMultistepScheduler.from_config(CIFAR10_SCHEDULER_CONFIG)
    scheduler.alphas_cumprod = ours_scheduler.alphas_cumprod.clone()
    scheduler.set_timesteps(4)
    x = torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(theirs_unet(x, t).sample, t, x).prev_sample
    expected = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert images.shape == expected.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(images, expected, rtol=0, atol=2e-3)
    assert SHAPE == (2, 3, 8, 8)
