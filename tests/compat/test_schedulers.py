"""The schedulers' diffusers call forms: the same script against diffusers and ddpm, step outputs within 1e-5 (fp32).

Each test writes its script once as a function of the library (``lib.DDPMScheduler`` ...), runs it against both and
compares: constructor signatures, DDIM's per-call ``eta`` / ``use_clipped_model_output`` / ``variance_noise``,
DDPM's positional ``generator``, custom timesteps, loops that start part-way, DDPM without ``set_timesteps``,
``compatibles``, ``register_to_config``, config keys read as attributes, and config round trips both ways.
"""

from __future__ import annotations

import inspect
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch

import ddpm
from ddpm.schedulers import SCHEDULERS

LIBS = {"diffusers": diffusers, "ddpm": ddpm}
NAMES = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler")
# [euler] the σ-space schedulers of issue 15 are compatibles too
COMPATIBLE_NAMES = (*NAMES, "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler")
ATOL = 1e-5


def both(script: Callable[[types.ModuleType], Any]) -> tuple[Any, Any]:
    """Run ``script(lib)`` against diffusers, then ddpm."""
    return script(diffusers), script(ddpm)


def assert_close(theirs: list[torch.Tensor], ours: list[torch.Tensor]) -> None:
    assert len(theirs) == len(ours) > 0
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=0)


def model(x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for the UNet: depends on x and t."""
    return torch.tanh(x) * (1 + int(t) / 1000)


def x_start(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ constructors


@pytest.mark.parametrize("name", NAMES)
def test_every_diffusers_constructor_key_is_a_named_parameter_with_the_same_default(name: str) -> None:
    theirs = inspect.signature(getattr(diffusers, name).__init__).parameters
    ours = inspect.signature(getattr(ddpm, name).__init__).parameters
    assert "prediction_type" in ours  # diffusers' training script checks this before passing the option
    named = [p for p in ours if ours[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert named[: len(theirs)] == list(theirs)  # the same keys, in diffusers' order (positional calls agree)
    for key in list(theirs)[1:]:
        assert ours[key].default == theirs[key].default, key
    kwargs = {"num_train_timesteps": 500, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}
    a, b = both(lambda lib: getattr(lib, name)(**kwargs).config)
    assert {k: b[k] for k in kwargs} == {k: a[k] for k in kwargs}


# ---------------------------------------------------------------------------------------------------- DDIM step


@pytest.mark.parametrize(
    "form",
    ["positional_eta", "keyword_eta", "clipped", "variance_noise", "attribute_then_call", "tuple"],
)
def test_ddim_step_call_forms_match_diffusers(form: str) -> None:
    def script(lib: types.ModuleType) -> list[torch.Tensor]:
        scheduler = lib.DDIMScheduler(num_train_timesteps=1000, clip_sample=True)
        scheduler.set_timesteps(10)
        x, seen = x_start(), []
        generator = torch.Generator().manual_seed(7)
        for i, t in enumerate(scheduler.timesteps):
            out = model(x, t)
            if form == "positional_eta":
                x = scheduler.step(out, t, x, 0.5, False, generator).prev_sample
            elif form == "keyword_eta":
                x = scheduler.step(out, t, x, eta=1.0, generator=generator).prev_sample
            elif form == "clipped":
                x = scheduler.step(out, t, x, 0.3, use_clipped_model_output=True, generator=generator).prev_sample
            elif form == "variance_noise":
                z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
                x = scheduler.step(out, t, x, eta=0.7, variance_noise=z).prev_sample
            elif form == "attribute_then_call":  # eta=0 per call wins over eta=1 set on the scheduler
                scheduler.eta = 1.0  # an attribute in ddpm; diffusers ignores it (its step's default is 0)
                x = scheduler.step(out, t, x, eta=0.0).prev_sample
            else:
                x = scheduler.step(out, t, x, 0.5, False, generator, None, False)[0]
            seen.append(x)
        return seen

    assert_close(*both(script))


def test_ddim_per_call_eta_is_for_that_call_only() -> None:
    scheduler = ddpm.DDIMScheduler(eta=1.0)
    scheduler.set_timesteps(5)
    x = x_start()
    scheduler.step(model(x, 999), scheduler.timesteps[0], x, eta=0.0)
    assert scheduler.eta == 1.0
    with pytest.raises(ValueError, match="eta must be a number in"):
        scheduler.step(model(x, 799), scheduler.timesteps[1], x, eta=2.0)
    with pytest.raises(ValueError, match="not both"):
        scheduler.step(model(x, 799), scheduler.timesteps[1], x, generator=torch.Generator(), variance_noise=x)


# ---------------------------------------------------------------------------------------------------- DDPM step


def test_ddpm_positional_generator_and_no_set_timesteps_match_diffusers() -> None:
    def script(lib: types.ModuleType) -> list[torch.Tensor]:
        scheduler = lib.DDPMScheduler(num_train_timesteps=40, variance_type="fixed_large")
        x, seen, generator = x_start(), [], torch.Generator().manual_seed(3)
        for t in reversed(range(len(scheduler))):  # the training timesteps, no set_timesteps (diffusers' tests)
            x = scheduler.step(model(x, t), t, x, generator).prev_sample
            seen.append(x)
        return seen

    assert_close(*both(script))


def test_ddpm_a_single_step_at_any_training_timestep_matches_diffusers() -> None:
    # (not t = 1: there 1 - ᾱ_1 / ᾱ_0 cancels, and ddpm's float64-computed ᾱ, rounded once, differs from diffusers'
    # float32 cumulative product by ~1e-4 in the step's weights; the documented precision difference)
    def script(lib: types.ModuleType) -> list[torch.Tensor]:
        x = x_start()
        return [
            lib.DDPMScheduler().step(model(x, t), t, x, generator=torch.Generator().manual_seed(t)).prev_sample
            for t in (999, 500, 250, 0)
        ]

    assert_close(*both(script))


# ----------------------------------------------------------------------------------------- schedules and loops


def test_custom_timesteps_match_diffusers_and_are_checked_like_diffusers() -> None:
    custom = [900, 700, 420, 87, 50, 1, 0]

    def script(lib: types.ModuleType) -> list[torch.Tensor]:
        scheduler = lib.DDPMScheduler()
        scheduler.set_timesteps(timesteps=custom)
        assert scheduler.timesteps.tolist() == custom
        assert [int(scheduler.previous_timestep(t)) for t in scheduler.timesteps] == custom[1:] + [-1]
        x, seen = x_start(), []
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t), t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
            seen.append(x)
        return seen

    assert_close(*both(script))
    for bad in (
        {"timesteps": [100, 87, 50, 51, 0]},
        {"timesteps": [1000]},
        {"num_inference_steps": 2, "timesteps": [5]},
    ):
        for lib in LIBS.values():
            with pytest.raises(ValueError):
                lib.DDPMScheduler().set_timesteps(**bad)


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
@pytest.mark.parametrize("start", ["slice", "set_begin_index"])
def test_a_loop_that_starts_part_way_matches_diffusers(name: str, start: str) -> None:
    # the img2img idiom: noise the input to timesteps[k] with add_noise, then denoise over timesteps[k:]
    k = 6

    def script(lib: types.ModuleType) -> list[torch.Tensor]:
        scheduler = getattr(lib, name)()
        scheduler.set_timesteps(10)
        timesteps = scheduler.timesteps[k * scheduler.order :]
        x = scheduler.add_noise(x_start(1), x_start(2), timesteps[:1])
        if start == "set_begin_index" and lib is ddpm:
            scheduler.set_begin_index(k)  # diffusers' DDPM / DDIM have no set_begin_index: they need none
        seen = [x]
        for t in timesteps:
            x = scheduler.step(model(x, t), t, x, generator=torch.Generator().manual_seed(int(t))).prev_sample
            seen.append(x)
        return seen

    assert_close(*both(script))


def test_pndm_may_start_part_way_at_the_start_of_a_step_only() -> None:
    scheduler = ddpm.PNDMScheduler(skip_prk_steps=True)
    scheduler.set_timesteps(10)
    x = x_start()
    with pytest.raises(ValueError, match="cannot start at position 1"):
        scheduler.step(model(x, 0), scheduler.timesteps[1], x)
    for t in scheduler.timesteps[4:]:
        x = scheduler.step(model(x, t), t, x).prev_sample
    assert torch.isfinite(x).all()


# ------------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("name", NAMES)
def test_use_default_values_is_in_the_config_exactly_when_diffusers_has_it(tmp_path: Path, name: str) -> None:
    def script(lib: types.ModuleType) -> tuple[Any, Any]:
        scheduler = getattr(lib, name)(num_train_timesteps=1000, beta_start=0.0001)
        scheduler.save_pretrained(tmp_path / lib.__name__)
        return dict(scheduler.config), dict(getattr(lib, name).from_pretrained(tmp_path / lib.__name__).config)

    (theirs, theirs_loaded), (ours, ours_loaded) = both(script)
    shared = set(theirs) - {"_use_default_values"}
    assert sorted(k for k in ours["_use_default_values"] if k in shared) == sorted(theirs["_use_default_values"])
    assert "_use_default_values" not in theirs_loaded and "_use_default_values" not in ours_loaded
    del ours["_use_default_values"]
    assert ours == ddpm_config_of(name, tmp_path / "ddpm")  # the mapping equals the reloaded config
    assert {k: ours[k] for k in shared if k in ours} == {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in theirs.items() if k in shared and k in ours
    }


def ddpm_config_of(name: str, folder: Path) -> Any:
    return getattr(ddpm, name).from_pretrained(folder).config


@pytest.mark.parametrize("name", COMPATIBLE_NAMES)
def test_compatibles_load_each_other_and_configs_travel_both_ways(tmp_path: Path, name: str) -> None:
    ours = getattr(ddpm, name)(beta_schedule="scaled_linear", prediction_type="v_prediction")
    assert {c.__name__ for c in ours.compatibles} == {c.__name__ for c in SCHEDULERS.values()} >= set(COMPATIBLE_NAMES)
    for cls in ours.compatibles:
        swapped = cls.from_config(ours.config)
        assert getattr(ddpm, name).from_config(swapped.config).config == ours.config
    ours.save_config(tmp_path / "ours")
    theirs = getattr(diffusers, name).from_pretrained(tmp_path / "ours")
    theirs.save_config(tmp_path / "theirs")
    back = getattr(ddpm, name).from_pretrained(tmp_path / "theirs")
    assert back.config == ours.config == theirs.config  # a ddpm config equals diffusers' FrozenDict key for key


@pytest.mark.parametrize("name", NAMES)
def test_register_to_config_and_config_keys_read_as_attributes_warn_like_diffusers(name: str) -> None:
    def script(lib: types.ModuleType) -> tuple[Any, ...]:
        scheduler = getattr(lib, name)(num_train_timesteps=500)
        scheduler.register_to_config(test_attribute=5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = (scheduler.num_train_timesteps, scheduler.test_attribute)
        future = sum(issubclass(w.category, FutureWarning) for w in caught)
        with pytest.raises(AttributeError, match=f"'{name}' object has no attribute 'does_not_exist'"):
            scheduler.does_not_exist  # noqa: B018
        return (*values, future, hasattr(scheduler, "save_pretrained"))

    theirs, ours = both(script)
    assert ours == theirs == (500, 5, 2, True)


def test_register_to_config_changes_a_key_and_recomputes_the_schedule() -> None:
    ours = ddpm.DDPMScheduler()
    theirs: Any = diffusers.DDPMScheduler()
    ours.register_to_config(prediction_type="v_prediction")
    theirs.register_to_config(prediction_type="v_prediction")
    assert ours.config.prediction_type == theirs.config.prediction_type == "v_prediction"
    ours.register_to_config(beta_end=0.01)
    assert ours.betas[-1].item() == pytest.approx(0.01)
    with pytest.raises(ddpm.ConfigError, match="prediction_type"):
        ours.register_to_config(prediction_type="noise")
