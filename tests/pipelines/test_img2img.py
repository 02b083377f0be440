"""ImageToImagePipeline (SDEdit) and part-way sampling loops with every scheduler.

diffusers has no image-to-image pipeline for UNet2DModel, so the reference is diffusers' img2img loop written by hand
(its ``get_timesteps`` rule, ``add_noise`` at the first timestep run) with diffusers' UNet and schedulers.
"""

from __future__ import annotations

import math
import types

import diffusers
import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor as diffusers_randn

from ddpm import DDIMPipeline, DDIMScheduler, DDPMScheduler, ImageError, ImageToImagePipeline, PNDMScheduler
from ddpm.schedulers import SCHEDULERS

from helpers import CIFAR10_SCHEDULER_CONFIG, write_tiny_repo

# ------------------------------------------------------------------------------------ against a hand-written loop


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    return write_tiny_repo(tmp_path_factory.mktemp("tiny-img2img"), seed=3)


@pytest.fixture(scope="module")
def shared_pipe(tiny_repo):
    pipe = ImageToImagePipeline.from_pretrained(tiny_repo)
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.scheduler.config


@pytest.fixture
def pipe(shared_pipe):
    """The module's pipeline, loaded once, with the repo's scheduler (a test may swap it)."""
    pipe, config = shared_pipe
    pipe.scheduler = DDPMScheduler.from_config(config)
    return pipe


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(7)
    return torch.rand(2, 3, 16, 16, generator=g) * 2 - 1  # (B, C, H, W) in [-1, 1]


def _diffusers_img2img(repo, scheduler_name, image, strength, steps, generator, eta):
    """diffusers' img2img loop (StableDiffusionImg2ImgPipeline's timesteps and noise) with its own UNet."""
    unet = diffusers.UNet2DModel.from_pretrained(repo).eval()
    scheduler = getattr(diffusers, scheduler_name).from_pretrained(repo)
    scheduler.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    noise = diffusers_randn(image.shape, generator=generator, dtype=image.dtype)
    x = scheduler.add_noise(image, noise, timesteps[:1].repeat(image.shape[0]))
    kwargs = {"eta": eta} if scheduler_name == "DDIMScheduler" else {}
    with torch.no_grad():
        for t in timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, generator=generator, **kwargs).prev_sample
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


CASES = [  # scheduler, strength, steps, eta, generator kind
    ("DDIMScheduler", 0.5, 10, 0.0, "list"),
    ("DDIMScheduler", 0.75, 7, 1.0, "single"),
    ("DDPMScheduler", 0.3, 10, None, "list"),
]


@pytest.mark.parametrize("scheduler_name,strength,steps,eta,kind", CASES)
def test_matches_diffusers_hand_written_img2img_loop_np_within_1e4(
    tiny_repo, pipe, image, scheduler_name, strength, steps, eta, kind
):
    def generator():
        if kind == "single":
            return torch.Generator().manual_seed(11)
        return [torch.Generator().manual_seed(20 + i) for i in range(len(image))]

    pipe.scheduler = SCHEDULERS[scheduler_name[:4].lower()].from_config(pipe.scheduler.config)
    ours = pipe(image, strength=strength, num_inference_steps=steps, generator=generator(), eta=eta, output_type="np")
    theirs = _diffusers_img2img(tiny_repo, scheduler_name, image, strength, steps, generator(), eta)
    assert pipe.num_timesteps == min(int(steps * strength), steps)
    assert np.abs(ours.images - theirs).max() <= 1e-4


def test_strength_one_is_sampling_from_pure_noise_where_alpha_bar_is_zero(pipe, image):
    # With a zero terminal SNR and trailing spacing the first timestep has ᾱ = 0: x_t = ε, the input is gone, and
    # the call is exactly the unconditional sampler with the same generator.
    pipe.scheduler = DDIMScheduler.from_config(
        pipe.scheduler.config,
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
    )
    edited = pipe(
        image, strength=1.0, num_inference_steps=5, generator=torch.Generator().manual_seed(3), output_type="np"
    )
    sampler = DDIMPipeline(**pipe.components)
    sampler.set_progress_bar_config(disable=True)
    sampled = sampler(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(3), output_type="np")
    np.testing.assert_allclose(edited.images, sampled.images, atol=1e-6)


def test_built_from_another_pipelines_parts_shares_them_and_gives_the_same_images(pipe, image):
    ddim = DDIMPipeline(unet=pipe.unet, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    ddim.set_progress_bar_config(disable=True)
    from_pipe = ImageToImagePipeline.from_pipe(ddim)
    from_parts = ImageToImagePipeline(**ddim.components)
    from_parts.set_progress_bar_config(disable=True)
    assert from_pipe.unet is ddim.unet and from_pipe.scheduler is ddim.scheduler
    a = from_pipe(image[:1], strength=0.4, num_inference_steps=5, generator=torch.Generator().manual_seed(0)).images[0]
    b = from_parts(image[:1], strength=0.4, num_inference_steps=5, generator=torch.Generator().manual_seed(0)).images[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------- part-way loops with every scheduler
def _oracle(scheduler, x0):
    """A model that knows x_0: ε̂ = (x_t - sqrt(ᾱ_t) x_0) / sqrt(1 - ᾱ_t) at the timestep it is called with.

    Every sampler then predicts x_0 exactly at every step and must end on x_0, from any start, unless its state
    disagrees with the timestep it was given (the bug of a loop that starts part-way)."""
    alpha_bar = scheduler.alphas_cumprod.double()

    def eps(model_input, t):
        ab = alpha_bar[round(float(t))]
        return ((model_input.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()).float()

    return eps


#: DDIM and PNDM end at ᾱ_0 < 1 (x at t = 0, not x_0) unless set_alpha_to_one; the others ignore the key.
_ENDS_AT_X0 = {"set_alpha_to_one": True}


def _begin(scheduler, skipped):
    locate = getattr(scheduler, "begin_index_for_step", None)
    return locate(skipped) if locate is not None else skipped * scheduler.order


PART_WAY = [(10, 0), (10, 3), (10, 9), (7, 5), (6, 1), (6, 2)]  # (steps, steps skipped)


@pytest.mark.parametrize("name", list(SCHEDULERS))
@pytest.mark.parametrize("steps,skipped", PART_WAY)
def test_a_loop_over_timesteps_from_k_after_add_noise_works_with_every_scheduler(name, steps, skipped):
    scheduler = SCHEDULERS[name].from_config(CIFAR10_SCHEDULER_CONFIG, **_ENDS_AT_X0)
    g = torch.Generator().manual_seed(steps * 10 + skipped)
    x0 = torch.rand(2, 3, 8, 8, generator=g) * 1.6 - 0.8
    model = _oracle(scheduler, x0)
    scheduler.set_timesteps(steps)
    k = _begin(scheduler, skipped)
    x = scheduler.add_noise(x0, torch.randn(x0.shape, generator=g), scheduler.timesteps[k : k + 1].repeat(2))
    calls = 0
    for t in scheduler.timesteps[k:]:
        x = scheduler.step(model(scheduler.scale_model_input(x, t), t), t, x, generator=g).prev_sample
        calls += 1
    assert calls == len(scheduler.timesteps) - k >= steps - skipped
    torch.testing.assert_close(x, x0, atol=2e-4, rtol=0)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_the_pipeline_ends_on_the_image_with_a_model_that_knows_it_for_every_scheduler(pipe, monkeypatch, name):
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config, **_ENDS_AT_X0)
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    model = _oracle(pipe.scheduler, x0)
    monkeypatch.setattr(pipe.unet, "forward", lambda x, t: types.SimpleNamespace(sample=model(x, t)))
    for strength in (0.3, 0.9):
        generator = torch.Generator().manual_seed(0)
        out = pipe(x0, strength=strength, num_inference_steps=10, generator=generator, output_type="latent")
        torch.testing.assert_close(out.images, x0, atol=2e-4, rtol=0)


def test_begin_index_for_step_is_past_pndms_runge_kutta_calls():
    ddim = DDIMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG)
    ddim.set_timesteps(10)
    assert [ddim.begin_index_for_step(k) for k in range(10)] == list(range(10))
    prk = PNDMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG)
    prk.set_timesteps(10)  # 3 Runge-Kutta steps of 4 calls, then one call per step
    assert [prk.begin_index_for_step(k) for k in (0, 1, 2, 3, 4, 9)] == [0, 4, 8, 12, 13, 18]
    assert [int(prk.timesteps[prk.begin_index_for_step(k)]) for k in range(10)] == prk._spaced
    plms = PNDMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG, skip_prk_steps=True)
    plms.set_timesteps(10)  # s0, s1, s1, s2, ...: the second call at s1 completes the first step
    assert [plms.begin_index_for_step(k) for k in (0, 1, 2, 9)] == [0, 2, 3, 10]
    with pytest.raises(ValueError, match="step must be an int from 0 to 9"):
        ddim.begin_index_for_step(10)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("strength", [0, 0.0, -0.5, 1.0001, 2, math.nan, math.inf, True, "0.5", None])
def test_a_strength_outside_0_1_is_refused_before_any_work(pipe, monkeypatch, image, strength):
    monkeypatch.setattr(pipe.unet, "forward", None)  # any UNet call would fail differently
    with pytest.raises(ValueError, match=r"strength must be a number in \(0, 1\]"):
        pipe(image, strength=strength)


def test_a_strength_that_runs_no_step_says_how_to_fix_it(pipe, monkeypatch, image):
    monkeypatch.setattr(pipe.unet, "forward", None)
    with pytest.raises(
        ValueError,
        match=r"strength=0.01 with num_inference_steps=50 runs int\(50 \* 0.01\) = 0 "
        r"denoising steps; use strength >= 0.02 or num_inference_steps >= 100",
    ):
        pipe(image, strength=0.01, num_inference_steps=50)


def test_an_image_of_the_wrong_channels_or_size_is_refused(pipe):
    with pytest.raises(ImageError, match="has 2 channels; the model takes 3"):
        pipe(torch.zeros(1, 2, 16, 16))
    with pytest.raises(ImageError, match="is 8x8 .* 16x16 is needed"):
        pipe(torch.zeros(1, 3, 8, 8))


# ------------------------------------------------------------------------------------------- the bundled model
def test_a_small_strength_keeps_a_digit_and_a_large_one_redraws_it():
    from PIL import Image

    pipe = ImageToImagePipeline.from_pretrained("ddpm-mnist")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    digit = np.zeros((32, 32), dtype=np.uint8)
    digit[6:26, 14:18] = 255  # a "1"
    image = Image.fromarray(digit)
    target = np.asarray(image, dtype=np.float64) / 255
    errors = {}
    for strength in (0.2, 1.0):
        out = pipe(image, strength=strength, num_inference_steps=10, generator=torch.Generator().manual_seed(0))
        errors[strength] = np.abs(np.asarray(out.images[0], dtype=np.float64) / 255 - target).mean()
    assert errors[0.2] < 0.05 < errors[1.0]
