"""What every scheduler of ``SCHEDULERS`` shares, tested over the registry (so a new class is covered on merge).

One ``step()`` signature; any scheduler in any pipeline; a loop that starts part-way; the ``from_config`` swap in
both directions keeps every key. The per-class behaviour and the parity with diffusers live in the class's own tests.
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch

from ddpm import DDIMPipeline, DDPMPipeline, PNDMPipeline, UNet2DModel
from ddpm.schedulers import SCHEDULERS
from ddpm.schedulers.presets import SAMPLER_PRESETS, sampler_preset

from helpers import CIFAR10_SCHEDULER_CONFIG, TINY_UNET_CONFIG
from scheduler_helpers import SHAPE

NAMES = list(SCHEDULERS)
#: The parameters of ``step()`` that every scheduler has, with their defaults (None: no default).
COMMON = {"model_output": None, "timestep": None, "sample": None, "generator": None, "return_dict": True}
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
EMPTY = inspect.Parameter.empty


def test_the_registry_holds_every_class_the_samplers_name():
    """The ten ``--scheduler`` names need the eight classes: a branch that lacks one fails here, not at run time."""
    assert {p.scheduler for p in SAMPLER_PRESETS.values()} <= set(SCHEDULERS)
    assert len(SCHEDULERS) >= 8
    assert list(SAMPLER_PRESETS) == [
        "ddpm",
        "ddim",
        "pndm",
        "dpm++2m",
        "dpm++3m",
        "dpm++2m-sde",
        "unipc",
        "euler",
        "euler-a",
        "heun",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_one_step_signature(name):
    """``step(model_output, timestep, sample, [own options with defaults], generator=None, ..., return_dict=True)``.

    The first three are positional, in that order and without defaults; ``generator`` and ``return_dict`` come
    after them with diffusers' defaults, generator first; every other parameter has a default (a call with the
    common ones alone works), and a positional call that diffusers' class of the same name accepts means the
    same here (one positional list is a prefix of the other).
    """
    params = list(inspect.signature(SCHEDULERS[name].step).parameters.values())[1:]  # without self
    by_name = {p.name: p for p in params}
    assert [p.name for p in params[:3]] == ["model_output", "timestep", "sample"]
    assert all(p.kind in POSITIONAL and p.default is EMPTY for p in params[:3])
    for key, default in COMMON.items():
        assert key in by_name, f"{name}.step has no {key}"
        if default is not None or key == "generator":
            assert by_name[key].default == default, f"{name}.step: {key} defaults to {by_name[key].default!r}"
        assert by_name[key].kind is not inspect.Parameter.POSITIONAL_ONLY
    order = [p.name for p in params]
    assert order.index("generator") < order.index("return_dict")
    assert all(p.default is not EMPTY for p in params[3:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params), "no catch-all *args/**kwargs"
    import diffusers

    theirs = [
        p.name
        for p in list(inspect.signature(getattr(diffusers, SCHEDULERS[name].__name__).step).parameters.values())[1:]
        if p.kind in POSITIONAL
    ]
    ours = [p.name for p in params if p.kind in POSITIONAL]
    shorter = min(len(ours), len(theirs))
    assert ours[:shorter] == theirs[:shorter], f"positional calls mean something else: {ours} vs diffusers {theirs}"


def _oracle_scheduler(name: str) -> tuple[Any, str]:
    """The scheduler on the google/ddpm config, predicting x_0 where it can (else ε); returns it and the type."""
    cls = SCHEDULERS[name]
    try:
        return cls.from_config(CIFAR10_SCHEDULER_CONFIG, prediction_type="sample", clip_sample=False), "sample"
    except (ValueError, NotImplementedError):  # a sampler without x_0 prediction (as in diffusers)
        return cls.from_config(CIFAR10_SCHEDULER_CONFIG, clip_sample=False), "epsilon"


def _perfect_model(scheduler, x0: torch.Tensor, prediction_type: str):
    """The exact denoiser of a one-point data set {x0}: x̂_0 = x0 always, or the ε that x0 implies at (x_t, t)."""
    sigmas = np.sqrt((1 - scheduler.alphas_cumprod.double().numpy()) / scheduler.alphas_cumprod.double().numpy())

    def model(model_input: torch.Tensor, t) -> torch.Tensor:
        if prediction_type == "sample":
            return x0.expand_as(model_input).clone()
        sigma = float(np.interp(float(t), np.arange(len(sigmas)), sigmas))  # σ at a fractional t, as in diffusers
        alpha_bar = 1 / (1 + sigma**2)
        return (model_input - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)

    return model


@pytest.mark.parametrize(("name", "steps", "start"), [(n, s, k) for n in NAMES for s, k in ((3, 0), (7, 2))])
def test_a_loop_from_part_way_with_the_perfect_denoiser_ends_at_the_data(name, steps, start):
    """``add_noise`` at ``timesteps[k]`` then ``for t in timesteps[k:]`` (k = j * order, diffusers' img2img rule):
    every scheduler, deterministic or not, lands on x0 when the model is the exact denoiser of {x0}."""
    scheduler, prediction_type = _oracle_scheduler(name)
    if name == "pndm" and steps < 4:
        scheduler = SCHEDULERS[name].from_config(scheduler.config, skip_prk_steps=True)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(SHAPE, generator=g) * 2 - 1
    noise = torch.randn(SHAPE, generator=g)
    scheduler.set_timesteps(steps)
    k = start * scheduler.order
    if name == "pndm" and not scheduler.config.skip_prk_steps:
        k = 4 * start  # a Runge-Kutta step spans 4 calls
    timesteps = scheduler.timesteps[k:]
    if k == 0:
        x = noise * scheduler.init_noise_sigma
    else:
        x = scheduler.add_noise(x0, noise, timesteps[:1])
    assert (x - x0).abs().max() > 0.1  # the loop has work to do
    model = _perfect_model(scheduler, x0, prediction_type)
    calls = 0
    for t in timesteps:
        out = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=g).prev_sample
        calls += 1
    assert calls == len(scheduler.timesteps) - k
    assert torch.isfinite(x).all()
    assert (x - x0).abs().max() < 0.05, f"{name} ends {(x - x0).abs().max():.3g} from the data"


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    return UNet2DModel.from_config({k: v for k, v in TINY_UNET_CONFIG.items() if not k.startswith("_")}).eval()


@pytest.mark.parametrize("name", NAMES)
def test_every_scheduler_runs_in_every_pipeline_with_one_unet_call_per_timestep(name, tiny_unet):
    """The pipeline class only picks defaults: the same scheduler gives the same images in all three."""
    # 2 steps (3 calls for Heun and for PNDM's improved-Euler start; its Runge-Kutta warm-up needs 4 steps and 13
    # calls, tested with the pipelines)
    extra = {"skip_prk_steps": True} if name == "pndm" else {}
    base = SCHEDULERS[name].from_config(CIFAR10_SCHEDULER_CONFIG, **extra)
    steps = 2
    images = []
    for pipeline_class in (DDPMPipeline, DDIMPipeline, PNDMPipeline):
        scheduler = SCHEDULERS[name].from_config(base.config)
        pipe = pipeline_class(unet=tiny_unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        calls: list[int] = []

        def count(pipe, i, t, kwargs, calls=calls):
            calls.append(i)
            return kwargs

        out = pipe(
            batch_size=1,
            generator=torch.Generator().manual_seed(0),
            num_inference_steps=steps,
            output_type="pt",
            callback_on_step_end=count,
        ).images
        assert calls == list(range(len(scheduler.timesteps))) and pipe.num_timesteps == len(scheduler.timesteps)
        assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
        images.append(out)
    torch.testing.assert_close(images[1], images[0], rtol=0, atol=0)
    torch.testing.assert_close(images[2], images[0], rtol=0, atol=0)


@pytest.mark.parametrize(("a", "b"), list(itertools.product(NAMES, NAMES)))
def test_from_config_there_and_back_keeps_every_key(a, b):
    """``B.from_config(A.config)`` and back: A's config unchanged, and every key of the Hub file still there."""
    first = SCHEDULERS[a].from_config(CIFAR10_SCHEDULER_CONFIG)
    there = SCHEDULERS[b].from_config(first.config)
    back = SCHEDULERS[a].from_config(there.config)
    assert back.config.to_dict() == first.config.to_dict()
    kept, returned = there.config.to_dict(), back.config.to_dict()  # with the keys carried for other classes
    for key, value in CIFAR10_SCHEDULER_CONFIG.items():
        if not key.startswith("_"):
            assert kept.get(key) == value, f"{b}.from_config({a}.config) lost {key}"
            assert returned.get(key) == value


@pytest.mark.parametrize("name", list(SAMPLER_PRESETS))
def test_each_preset_builds_its_class_with_its_overrides_on_the_model_schedule(name):
    preset = sampler_preset(name)
    pipe_config = SCHEDULERS["ddpm"].from_config(CIFAR10_SCHEDULER_CONFIG).config
    scheduler = preset.build(pipe_config)
    assert type(scheduler) is SCHEDULERS[preset.scheduler]
    for key, value in preset.overrides.items():
        assert scheduler.config[key] == value
    for key in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "prediction_type"):
        assert scheduler.config[key] == pipe_config[key]  # the model's noise schedule, not the class defaults
    scheduler.set_timesteps(preset.default_steps)
    assert len(scheduler.timesteps) >= preset.default_steps
