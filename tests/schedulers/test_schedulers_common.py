"""What all three schedulers share: the interface, configs and swapping, loading and saving, errors, host syncs."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, cast

import numpy as np
import pytest
import torch

import ddpm
from ddpm.errors import CheckpointNotFoundError, ConfigError
from ddpm.schedulers import (
    SCHEDULERS,
    DDIMScheduler,
    DDIMSchedulerConfig,
    DDPMScheduler,
    DDPMSchedulerConfig,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    PNDMSchedulerConfig,
    Scheduler,
    SchedulerConfig,
    SchedulerOutput,
    UniPCMultistepScheduler,
)
from ddpm.schedulers.base import StepInput, per_step
from ddpm.schedulers.multistep import MultistepScheduler

from helpers import CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG, install_in_hf_cache
from scheduler_helpers import SHAPE, random_model_outputs, run_loop

ALL: list[type[Scheduler]] = list(SCHEDULERS.values())  # every registered scheduler goes through these checks
# The 283-byte scheduler_config.json of older google/ddpm-* revisions, with its stale key.
LEGACY_SCHEDULER_CONFIG = {**CELEBAHQ_SCHEDULER_CONFIG, "_diffusers_version": "0.0.4", "timestep_values": None}


def _meta_free(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------------- the interface


def test_step_has_one_signature_shape_for_all_schedulers():
    # Every scheduler takes the base call: (model_output, timestep, sample) positionally, then generator,
    # variance_noise and return_dict by keyword with the same defaults; a scheduler's own per-call options sit
    # between sample and generator, have defaults, and may be positional where diffusers takes them so.
    base = inspect.signature(Scheduler.step).parameters
    assert list(base) == ["self", "model_output", "timestep", "sample", "generator", "variance_noise", "return_dict"]
    assert all(base[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("generator", "variance_noise", "return_dict"))
    for cls in ALL:
        params = inspect.signature(cls.step).parameters
        assert list(params)[:4] == ["self", "model_output", "timestep", "sample"], cls
        assert [params[k].annotation for k in list(params)[1:4]] == [base[k].annotation for k in list(base)[1:4]]
        for name in ("generator", "variance_noise", "return_dict"):
            assert params[name].kind is not inspect.Parameter.POSITIONAL_ONLY, (cls, name)
            assert params[name].default == base[name].default, (cls, name)
        assert all(p.default is not inspect.Parameter.empty for p in list(params.values())[4:]), cls
    assert list(inspect.signature(DDPMScheduler.step).parameters)[4:6] == ["generator", "return_dict"]
    ddim = list(inspect.signature(DDIMScheduler.step).parameters)[4:]
    assert ddim == ["eta", "use_clipped_model_output", "generator", "variance_noise", "return_dict"]


def test_the_rest_of_the_loop_interface_is_shared_too():
    shared = ("set_timesteps", "add_noise", "get_velocity", "scale_model_input", "from_pretrained", "save_pretrained")
    for name in shared:
        assert len({inspect.signature(getattr(cls, name)) for cls in ALL}) == 1, name
    params = list(inspect.signature(DDPMScheduler.set_timesteps).parameters)
    assert params == ["self", "num_inference_steps", "device", "timesteps"]


@pytest.mark.parametrize("cls", ALL)
def test_constructor_parameters_are_the_config_keys_with_the_configs_defaults(cls):
    # one source of truth: the constructor's named parameters cannot drift from the config dataclass
    params = inspect.signature(cls.__init__).parameters.values()
    named = {p.name: p.default for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}
    del named["self"]
    fields = {f.name: f.default for f in cls.config_class._key_fields()}
    assert named == fields
    keyword_only = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keyword_only == [*cls._constructor_only, "config"]


def test_only_the_keys_a_caller_gives_override_config_and_count_as_chosen():
    base = DDIMScheduler(beta_end=0.012, set_alpha_to_one=False)
    assert DDIMScheduler(config=base.config).config.beta_end == 0.012  # defaults do not override config=
    again = DDIMScheduler(1000, config=base.config, beta_end=0.02)  # given (positionally too), though defaults
    assert again.config.beta_end == 0.02 and again.config.set_alpha_to_one is False
    chosen = {"num_train_timesteps", "beta_end", "set_alpha_to_one"}
    assert set(dict(again.config)["_use_default_values"]) == set(DDIMSchedulerConfig._field_names()) - chosen
    written = json.loads(again.config.to_json_string())  # the file holds every key: none is a default any more
    assert "_use_default_values" not in DDIMScheduler.from_config(written).config
    with pytest.raises(TypeError, match="unexpected keyword argument.*'bogus'"):
        DDPMScheduler(bogus=1)
    assert DDPMScheduler(set_alpha_to_one=False).config.to_dict()["set_alpha_to_one"] is False  # carried along


def test_package_exports_and_the_name_registry():
    # the first three in their order; later issues append theirs (issue 15 [dpm]: "dpmsolver")
    assert list(SCHEDULERS.items())[:3] == [("ddpm", DDPMScheduler), ("ddim", DDIMScheduler), ("pndm", PNDMScheduler)]
    assert SCHEDULERS["dpmsolver"] is ddpm.DPMSolverMultistepScheduler
    assert SCHEDULERS["euler"] is EulerDiscreteScheduler  # [euler] issue 15
    assert SCHEDULERS["euler-a"] is EulerAncestralDiscreteScheduler
    assert SCHEDULERS["heun"] is HeunDiscreteScheduler
    assert SCHEDULERS["unipc"] is UniPCMultistepScheduler  # [unipc] issue 15
    assert ddpm.DDIMScheduler is DDIMScheduler and ddpm.SchedulerOutput is SchedulerOutput


@dataclasses.dataclass(frozen=True)
class _PlainDDIMConfig(SchedulerConfig):
    _class_name: ClassVar[str] = "PlainDDIMScheduler"


class _PlainDDIMStep(NamedTuple):
    sqrt_alpha_bar_prev: float
    sqrt_one_minus_alpha_bar_prev: float


class _PlainDDIMScheduler(Scheduler):
    """DDIM with η = 0 and no clipping, written against base.py's extension points as a new scheduler would be."""

    config_class = _PlainDDIMConfig

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        super().set_timesteps(num_inference_steps, device, timesteps)
        alpha_bar_prev = self._alpha_bar_at(self._prev_timesteps())
        self._coefficients = per_step(
            _PlainDDIMStep,
            sqrt_alpha_bar_prev=alpha_bar_prev.sqrt(),
            sqrt_one_minus_alpha_bar_prev=(1 - alpha_bar_prev).clamp(min=0).sqrt(),
        )

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        c = self._coefficients[step.i]
        x0, eps = step.predicted_x0(), step.predicted_eps()
        return c.sqrt_alpha_bar_prev * x0 + c.sqrt_one_minus_alpha_bar_prev * eps, x0  # Eq. (12) with σ_t = 0


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_a_new_scheduler_is_a_config_a_set_timesteps_and_a_step_body(prediction):
    ours = _PlainDDIMScheduler(prediction_type=prediction, timestep_spacing="trailing")
    reference = DDIMScheduler.from_config(ours.config, clip_sample=False)
    assert inspect.signature(_PlainDDIMScheduler.set_timesteps) == inspect.signature(DDIMScheduler.set_timesteps)
    ours.set_timesteps(13)
    reference.set_timesteps(13)
    outputs, x = random_model_outputs(13)
    a, b = run_loop(ours, outputs, x), run_loop(reference, outputs, x)
    pairs = zip(a.prev_samples + a.pred_original_samples, b.prev_samples + b.pred_original_samples)
    assert all(p is not None and q is not None and torch.equal(p, q) for p, q in pairs)


@pytest.mark.parametrize("cls", ALL)
def test_constant_properties_match_diffusers_defaults(cls):
    if cls._fractional_timesteps:  # [euler] σ-space: tests/schedulers/test_euler_heun.py checks these properties
        pytest.skip("σ-space schedulers scale the input and the initial noise")
    scheduler = cls.from_config(CELEBAHQ_SCHEDULER_CONFIG)
    x = torch.randn(SHAPE)
    assert scheduler.init_noise_sigma == 1.0 and scheduler.order == 1 and len(scheduler) == 1000
    assert scheduler.scale_model_input(x, 5) is x and scheduler.scale_model_input(x) is x
    assert scheduler.config.num_train_timesteps == 1000 and scheduler.config.prediction_type == "epsilon"
    # before set_timesteps: the training chain, as diffusers shows it, and no step index
    assert scheduler.timesteps.tolist() == list(range(999, -1, -1)) and scheduler.num_inference_steps is None
    assert scheduler.step_index is None
    scheduler.set_timesteps(10)
    assert scheduler.step_index == 0 and scheduler.num_inference_steps == 10


@pytest.mark.parametrize("cls", ALL)
def test_return_dict_false_gives_the_same_two_tensors_as_a_tuple(cls):
    outputs, x = random_model_outputs(1)
    a, b = cls(), cls()
    a.set_timesteps(10)
    b.set_timesteps(10)
    out = a.step(outputs[0], a.timesteps[0], x, generator=torch.Generator().manual_seed(0))
    tup = b.step(outputs[0], b.timesteps[0], x, generator=torch.Generator().manual_seed(0), return_dict=False)
    assert isinstance(out, SchedulerOutput) and isinstance(tup, tuple) and len(tup) == 2
    assert torch.equal(out.prev_sample, tup[0]) and torch.equal(out.pred_original_sample, tup[1])
    assert out.prev_sample.shape == x.shape and out[0] is out.prev_sample


# ------------------------------------------------------------------------------------------- one config, 3 schedulers


@pytest.mark.parametrize("cls", ALL)
def test_hub_configs_with_stale_keys_load_quietly_in_every_scheduler(cls, caplog):
    with caplog.at_level(logging.INFO):
        scheduler = cls.from_config(LEGACY_SCHEDULER_CONFIG)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    spacing = cls.config_class.timestep_spacing  # diffusers' defaults: "leading"; "linspace" for the newer samplers
    assert spacing == ("leading" if cls in (DDPMScheduler, DDIMScheduler, PNDMScheduler) else "linspace")
    assert scheduler.config.beta_schedule == "linear" and scheduler.config.timestep_spacing == spacing
    assert "timestep_values" not in scheduler.config.to_dict()


@pytest.mark.parametrize("cls", ALL)
def test_from_config_accepts_our_configs_diffusers_configs_dicts_and_schedulers(cls):
    diffusers = pytest.importorskip("diffusers")
    expected = _meta_free(cls.from_config(CIFAR10_SCHEDULER_CONFIG).config)
    sources = [
        dict(CIFAR10_SCHEDULER_CONFIG),
        DDPMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG).config,
        DDPMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG),
        diffusers.DDPMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG).config,  # a FrozenDict
    ]
    for source in sources:
        assert _meta_free(cls.from_config(source).config) == expected, type(source)


def test_from_config_overrides_win_and_typos_are_errors():
    scheduler = DDIMScheduler.from_config(CELEBAHQ_SCHEDULER_CONFIG, timestep_spacing="trailing", eta=0.5)
    assert scheduler.config.timestep_spacing == "trailing" and scheduler.eta == 0.5
    with pytest.raises(TypeError, match="'timestep_spacin'"):
        DDIMScheduler.from_config(CELEBAHQ_SCHEDULER_CONFIG, timestep_spacin="trailing")
    with pytest.raises(TypeError, match="'beta_scheduel'"):
        DDPMScheduler(beta_scheduel="linear")


def test_config_reads_by_attribute_and_as_a_mapping():
    config = DDPMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG).config
    assert config.variance_type == config["variance_type"] == dict(config)["variance_type"] == "fixed_large"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cast(Any, config).variance_type = "fixed_small"  # what a type checker refuses, refused at run time too
    for cls, config_cls in zip(ALL, (DDPMSchedulerConfig, DDIMSchedulerConfig, PNDMSchedulerConfig)):
        assert cls.config_class is config_cls and isinstance(cls().config, config_cls)
        assert config_cls.config_name == "scheduler_config.json" and config_cls._class_name == cls.__name__


def test_keys_another_scheduler_uses_survive_a_trip_through_a_scheduler_that_ignores_them():
    pndm = PNDMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG)
    assert not hasattr(pndm.config, "variance_type")  # PNDM does not use it...
    back = DDPMScheduler.from_config(pndm.config)
    assert back.config.variance_type == "fixed_large" and back.config.clip_sample is True  # ...but carries it


def test_side_state_is_not_compared_printed_or_saved_and_survives_dataclasses_replace(tmp_path):
    (tmp_path / "scheduler_config.json").write_text(json.dumps(CIFAR10_SCHEDULER_CONFIG))
    config = PNDMScheduler.from_pretrained(tmp_path).config  # carries variance_type, defaulted set_alpha_to_one
    assert config._carried == {"clip_sample": True, "variance_type": "fixed_large"}
    assert "set_alpha_to_one" in config._defaulted and config._source() == str(tmp_path / "scheduler_config.json")
    assert config == PNDMSchedulerConfig.from_dict(_meta_free(config))  # side state is not compared...
    for hidden in ("_carried", "_defaulted", "_source_file", "fixed_large"):
        assert hidden not in repr(config) and hidden not in dict(config)  # ...not printed, not a mapping key...
    assert config.to_dict()["variance_type"] == "fixed_large"  # ...but written back, with the defaulted keys
    assert "set_alpha_to_one" in config.to_dict()["_use_default_values"]
    copy = dataclasses.replace(config, steps_offset=1)
    assert copy._carried == config._carried and copy._source() == config._source()
    assert DDPMScheduler.from_config(copy).config.variance_type == "fixed_large"
    chosen = dataclasses.replace(config, set_alpha_to_one=True)  # a defaulted key given a value is a choice
    assert "set_alpha_to_one" not in chosen._defaulted
    assert (
        DDIMScheduler.from_config(dataclasses.replace(chosen, set_alpha_to_one=False)).config.set_alpha_to_one is False
    )
    with pytest.raises(ConfigError, match=r"scheduler_config\.json: config key 'steps_offset'"):
        dataclasses.replace(config, steps_offset=-1)  # validated, and the error still names the file


def test_names_moved_out_of_base_are_still_importable_from_it():
    from ddpm.schedulers import base, config, math

    for module in (config, math):
        for name in module.__all__:
            assert getattr(base, name) is getattr(module, name) and name in base.__all__, name


def test_defaults_of_one_scheduler_do_not_stick_to_the_next_like_in_diffusers():
    diffusers = pytest.importorskip("diffusers")
    # PNDM defaults set_alpha_to_one to False, DDIM to True; a default is not a choice the next scheduler inherits.
    ours = DDIMScheduler.from_config(PNDMScheduler.from_config(CELEBAHQ_SCHEDULER_CONFIG).config)
    theirs = diffusers.DDIMScheduler.from_config(diffusers.PNDMScheduler.from_config(CELEBAHQ_SCHEDULER_CONFIG).config)
    assert ours.config.set_alpha_to_one is True is theirs.config.set_alpha_to_one
    chosen = PNDMScheduler.from_config(CELEBAHQ_SCHEDULER_CONFIG, set_alpha_to_one=False)
    assert DDIMScheduler.from_config(chosen.config).config.set_alpha_to_one is False


def _install_repo(hf_cache, tmp_path, repo_id: str, config: dict, *, subfolder: str | None) -> None:
    folder = tmp_path / repo_id.replace("/", "--")
    target = folder / subfolder if subfolder else folder
    target.mkdir(parents=True)
    (target / "scheduler_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    install_in_hf_cache(hf_cache, repo_id, folder)


@pytest.mark.parametrize("layout", ["flat", "subfolder"])
@pytest.mark.parametrize(
    "hub_config", [CELEBAHQ_SCHEDULER_CONFIG, CIFAR10_SCHEDULER_CONFIG], ids=["celebahq", "cifar10"]
)
def test_swap_idiom_works_for_all_nine_pairs_from_a_hub_id(hf_cache, tmp_path, layout, hub_config):
    diffusers = pytest.importorskip("diffusers")
    repo = f"ddpm-sched-tests/{layout}-{hub_config['variance_type']}"
    subfolder = "scheduler" if layout == "subfolder" else None
    _install_repo(hf_cache, tmp_path, repo, hub_config, subfolder=subfolder)
    for source_cls in ALL:
        source = source_cls.from_pretrained(repo, subfolder=subfolder)
        for target_cls in ALL:
            swapped = target_cls.from_config(source.config)
            direct = target_cls.from_pretrained(repo, subfolder="scheduler")  # falls back to the root when flat
            assert type(swapped) is target_cls
            assert _meta_free(swapped.config) == _meta_free(direct.config), (source_cls, target_cls)
            # and the same as diffusers' own swap, key for key
            theirs_source = getattr(diffusers, source_cls.__name__).from_config(hub_config)
            theirs = getattr(diffusers, target_cls.__name__).from_config(theirs_source.config)
            for key, value in dict(swapped.config).items():
                if key == "_use_default_values":  # a set (diffusers' list order comes from a set), of shared keys
                    shared = sorted(k for k in value if k in theirs.config)
                    assert shared == sorted(theirs.config[key]), (source_cls, target_cls)
                elif key in theirs.config:
                    expected = theirs.config[key]
                    assert value == (tuple(expected) if isinstance(expected, list) else expected), (key, source_cls)
            swapped.set_timesteps(10)
            outputs, x = random_model_outputs(len(swapped.timesteps))
            assert torch.isfinite(run_loop(swapped, outputs, x, generator_seed=0).prev_samples[-1]).all()


def test_from_pretrained_reads_a_local_folder_and_names_the_file_in_errors(tmp_path):
    (tmp_path / "scheduler_config.json").write_text(json.dumps({**CELEBAHQ_SCHEDULER_CONFIG, "variance_type": "tiny"}))
    with pytest.raises(ConfigError, match=r"scheduler_config\.json.*variance_type.*'tiny'.*fixed_small"):
        DDPMScheduler.from_pretrained(tmp_path)
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"scheduler_config\.json is not valid JSON"):
        DDIMScheduler.from_pretrained(tmp_path)


def test_from_pretrained_without_a_scheduler_config_says_where_it_looked(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no scheduler_config.json.*scheduler/ or the root"):
        PNDMScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    with pytest.raises(CheckpointNotFoundError, match="not in the Hugging Face cache"):
        PNDMScheduler.from_pretrained("ddpm-sched-tests/not-installed")


# ------------------------------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("cls", ALL)
def test_save_then_load_gives_an_identical_scheduler(cls, tmp_path):
    original = cls.from_config(CIFAR10_SCHEDULER_CONFIG, timestep_spacing="trailing", prediction_type="v_prediction")
    path = original.save_pretrained(tmp_path)
    assert path == tmp_path / "scheduler_config.json" and not list(tmp_path.glob(".*tmp"))
    saved = json.loads(path.read_text())
    assert saved["_class_name"] == cls.__name__ and "_use_default_values" not in saved
    loaded = cls.from_pretrained(tmp_path)
    assert loaded.config == original.config and _meta_free(loaded.config) == _meta_free(original.config)
    for a, b in ((original, loaded),):
        a.set_timesteps(20)
        b.set_timesteps(20)
        outputs, x = random_model_outputs(len(a.timesteps))
        ra = run_loop(a, outputs, x, generator_seed=0)
        rb = run_loop(b, outputs, x, generator_seed=0)
        assert all(torch.equal(p, q) for p, q in zip(ra.prev_samples, rb.prev_samples))


def test_ddim_eta_is_an_attribute_not_a_saved_config_key(tmp_path):
    DDIMScheduler(eta=1.0, use_clipped_model_output=True).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert "eta" not in saved and "use_clipped_model_output" not in saved
    loaded = DDIMScheduler.from_pretrained(tmp_path)
    assert loaded.eta == 0.0 and loaded.use_clipped_model_output is False
    assert DDIMScheduler.from_pretrained(tmp_path, eta=0.3).eta == 0.3


@pytest.mark.parametrize("cls", ALL)
def test_configs_saved_by_ddpm_load_in_diffusers_and_the_other_way_round(cls, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    theirs_cls = getattr(diffusers, cls.__name__)
    ours = cls.from_config(CIFAR10_SCHEDULER_CONFIG, steps_offset=1, timestep_spacing="linspace")
    ours.save_pretrained(tmp_path / "ours")
    theirs = theirs_cls.from_pretrained(tmp_path / "ours")
    written = ours.config.to_dict()  # JSON values: lists where the config holds tuples (UniPC's disable_corrector)
    for key, value in theirs.config.items():
        if not key.startswith("_") and key in ours.config:
            assert written[key] == value, key
    theirs.save_pretrained(tmp_path / "theirs")
    back = cls.from_pretrained(tmp_path / "theirs")
    assert _meta_free(back.config) == {k: v for k, v in _meta_free(ours.config).items() if k in _meta_free(back.config)}
    assert back.config == ours.config


# ------------------------------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    "cls, key, value, allowed",
    [
        (DDPMScheduler, "beta_schedule", "laplace", "linear"),
        (DDPMScheduler, "variance_type", "other", "fixed_small"),
        (DDIMScheduler, "prediction_type", "noise", "v_prediction"),
        (PNDMScheduler, "timestep_spacing", "uniform", "trailing"),
        (DDPMScheduler, "num_train_timesteps", 0, "at least 1"),
        (DDIMScheduler, "trained_betas", [0.1, 0.2], "1000 values"),
        (DDPMScheduler, "beta_start", 1.5, r"\(0, 1\)"),
        (DDIMScheduler, "clip_sample_range", -1.0, "> 0"),
        (DDPMScheduler, "dynamic_thresholding_ratio", 0.0, r"\(0, 1\]"),
        (PNDMScheduler, "steps_offset", -1, "0 or more"),
        (PNDMScheduler, "skip_prk_steps", "yes", "true or false"),
    ],
)
def test_invalid_config_values_raise_config_error_naming_key_value_and_allowed(cls, key, value, allowed):
    with pytest.raises(ConfigError, match=rf"{key}.*{value!r}.*{allowed}" if not isinstance(value, list) else key):
        cls.from_config({**CELEBAHQ_SCHEDULER_CONFIG, key: value})


@pytest.mark.parametrize("cls", ALL)
def test_set_timesteps_rejects_step_counts_outside_the_limits(cls):
    scheduler = cls(skip_prk_steps=True) if cls is PNDMScheduler else cls()
    for bad in (0, -3):
        with pytest.raises(ValueError, match=f"num_inference_steps={bad} is too small.*at least 1"):
            scheduler.set_timesteps(bad)
    with pytest.raises(ValueError, match="num_inference_steps=1001 is larger than num_train_timesteps=1000"):
        scheduler.set_timesteps(1001)
    not_ints: tuple[Any, ...] = (2.5, True, "50")  # wrong on purpose, as a caller without a type checker
    for bad in not_ints:
        with pytest.raises(TypeError, match="num_inference_steps must be an int"):
            scheduler.set_timesteps(bad)
    # the multistep samplers spread n + 1 points over the T timesteps (the last, t = 0, is where they land)
    most = 999 if issubclass(cls, MultistepScheduler) else 1000
    if issubclass(cls, MultistepScheduler) and cls is not UniPCMultistepScheduler:  # UniPC words it its way, below
        with pytest.raises(ValueError, match="num_inference_steps=1000 is too large.*use at most 999 steps"):
            scheduler.set_timesteps(1000)
    if cls is UniPCMultistepScheduler:  # [unipc] its n + 1 grid points on T timesteps: two share a noise level
        with pytest.raises(ValueError, match="steps 499 and 500 of 1000 are both at"):
            scheduler.set_timesteps(1000)
    numpy_int: Any = np.int64(most)  # any integral number is accepted, though the annotation says int
    scheduler.set_timesteps(numpy_int)
    # PNDM's warm-up adds a call; Heun's 2nd-order steps take two calls each but the last
    assert len(scheduler.timesteps) == (1001 if cls is PNDMScheduler else 2 * most - 1 if cls.order == 2 else most)


def test_pndm_with_runge_kutta_warm_up_needs_four_steps_and_says_how_to_use_fewer():
    scheduler = PNDMScheduler()
    for n in (1, 2, 3):
        with pytest.raises(ValueError, match=f"num_inference_steps={n} is too small.*at least 4.*skip_prk_steps=True"):
            scheduler.set_timesteps(n)
    scheduler.set_timesteps(4)
    assert len(scheduler.timesteps) == 13


def test_leading_steps_offset_too_large_for_the_step_count_is_an_error():
    with pytest.raises(ValueError, match="steps_offset=1"):
        DDIMScheduler(steps_offset=1).set_timesteps(1000)


@pytest.mark.parametrize("cls", [c for c in ALL if not c._steps_without_set_timesteps])
def test_step_before_set_timesteps_and_after_the_last_step_are_runtime_errors(cls):
    scheduler = cls()
    outputs, x = random_model_outputs(2)
    with pytest.raises(RuntimeError, match=r"before set_timesteps\(\)"):
        scheduler.step(outputs[0], 999, x)
    scheduler.set_timesteps(4 if cls is PNDMScheduler else 1)
    for t in scheduler.timesteps:
        x = scheduler.step(outputs[0], t, x).prev_sample
    with pytest.raises(RuntimeError, match="is finished; call set_timesteps"):
        scheduler.step(outputs[0], 0, x)


def test_ddpm_steps_over_the_training_timesteps_without_set_timesteps():
    # diffusers allows it: t -> t - 1 at any training timestep, loop after loop; the same steps as set_timesteps(T)
    free, planned = DDPMScheduler(num_train_timesteps=50), DDPMScheduler(num_train_timesteps=50)
    planned.set_timesteps(50)
    outputs, x = random_model_outputs(50)
    a = b = x
    for i, t in enumerate(range(49, -1, -1)):
        a = free.step(outputs[i], t, a, generator=torch.Generator().manual_seed(i)).prev_sample
        b = planned.step(outputs[i], t, b, generator=torch.Generator().manual_seed(i)).prev_sample
    assert torch.equal(a, b)
    again = free.step(outputs[0], 49, x, generator=torch.Generator().manual_seed(0)).prev_sample  # a second loop
    planned.set_timesteps(50)
    assert torch.equal(again, planned.step(outputs[0], 49, x, generator=torch.Generator().manual_seed(0)).prev_sample)
    assert free.num_inference_steps is None and free.step(outputs[1], 20, x).prev_sample.shape == x.shape  # any t


@pytest.mark.parametrize("cls", ALL)
def test_a_timestep_out_of_order_or_outside_the_schedule_is_rejected(cls):
    scheduler = cls()
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(2)
    scheduler.step(outputs[0], scheduler.timesteps[0], x)  # the loop has started: from now on, in order
    second = scheduler.timesteps[-1]  # in the schedule, not next
    with pytest.raises(ValueError, match=rf"timestep {second.item()}, which is not the next one.*expects timestep"):
        scheduler.step(outputs[1], second, x)
    with pytest.raises(ValueError, match="timestep 901, which is not in the schedule"):
        scheduler.step(outputs[1], 901, x)
    with pytest.raises(ValueError, match="one timestep for the whole batch"):
        scheduler.step(outputs[1], torch.tensor([900, 800]), x)
    with pytest.raises(TypeError, match="not a bool"):
        scheduler.step(outputs[1], True, x)
    scheduler.step(outputs[1], int(scheduler.timesteps[1]), x)  # the errors did not advance the schedule


@pytest.mark.parametrize("cls", ALL)
def test_a_first_step_off_the_schedule_joins_it(cls):
    """diffusers steps at any t; ddpm's first step at an unscheduled t continues on the schedule below t."""
    if cls._fractional_timesteps:  # [euler] σ-space refuses it: tests/schedulers/test_euler_heun.py
        pytest.skip("a σ-space loop starts only at one of its own timesteps")
    scheduler = cls()
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(3)

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(0)

    below = [t for t in scheduler.timesteps.tolist() if t < 450]
    first = scheduler.step(outputs[0], 450, x, generator=seeded()).prev_sample
    spaced = [450, *below]
    # [450, 400, ..., 0]; the multistep samplers' linspace grids end elsewhere (UniPC's at 100)
    assert (
        issubclass(cls, MultistepScheduler) or cls is UniPCMultistepScheduler or spaced == [450, 400, 300, 200, 100, 0]
    )
    reference = cls()
    reference.set_timesteps(timesteps=spaced)
    assert scheduler.timesteps.tolist() == reference.timesteps.tolist()
    assert scheduler.num_inference_steps == len(spaced)
    expected = reference.step(outputs[0], 450, x, generator=seeded()).prev_sample
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    second = scheduler.timesteps[1]
    torch.testing.assert_close(
        scheduler.step(outputs[1], second, x, generator=seeded()).prev_sample,
        reference.step(outputs[1], second, x, generator=seeded()).prev_sample,
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match="timestep 451, which is not in the schedule"):  # only a first step joins
        scheduler.step(outputs[2], 451, x)
    with pytest.raises(ValueError, match="timestep 1000, which is not in the schedule"):
        fresh = cls()
        fresh.set_timesteps(10)
        fresh.step(outputs[0], 1000, x)  # outside [0, T): never joined


def test_a_first_step_that_cannot_join_keeps_the_schedule():
    scheduler = PNDMScheduler()
    custom = [900, 700, 500, 300, 100]
    scheduler.set_timesteps(timesteps=custom)
    before = scheduler.timesteps.tolist()
    _, x = random_model_outputs(1)
    with pytest.raises(ValueError, match="timestep 50, which is not in the schedule"):
        scheduler.step(torch.zeros_like(x), 50, x)  # [50] is too short for PNDM's Runge-Kutta warm-up
    assert scheduler.timesteps.tolist() == before and scheduler.num_inference_steps == len(custom)


@pytest.mark.parametrize("cls", ALL)
def test_model_output_must_have_the_sample_shape_or_twice_its_channels(cls):
    scheduler = cls()
    scheduler.set_timesteps(10)
    x = torch.randn(SHAPE)
    with pytest.raises(ValueError, match=r"model_output has shape \(2, 4, 8, 8\) but sample has shape \(2, 3, 8, 8\)"):
        scheduler.step(torch.randn(2, 4, 8, 8), scheduler.timesteps[0], x)


@pytest.mark.parametrize("cls", ALL)
def test_set_timesteps_restarts_the_loop(cls):
    scheduler = cls()
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(len(scheduler.timesteps))
    first = run_loop(scheduler, outputs, x, generator_seed=0)
    scheduler.set_timesteps(10)
    for i, t in enumerate(scheduler.timesteps[:5]):  # abandon a loop halfway...
        scheduler.step(outputs[i], t, x, generator=torch.Generator().manual_seed(9))
    scheduler.set_timesteps(10)  # ...and start again: no state leaks from the abandoned loop
    again = run_loop(scheduler, outputs, x, generator_seed=0)
    assert all(torch.equal(a, b) for a, b in zip(first.prev_samples, again.prev_samples))


# ---------------------------------------------------------------------------------------- timesteps, dtypes, syncs


@pytest.mark.parametrize("cls", ALL)
def test_timestep_may_be_an_int_a_numpy_int_or_a_0d_or_1d_tensor(cls):
    results = []
    forms = [
        lambda s, i: s.timesteps[i],
        lambda s, i: int(s.timesteps[i]),
        lambda s, i: np.int64(s.timesteps[i]),
        lambda s, i: s.timesteps[i].reshape(1),
        lambda s, i: s.timesteps[i].expand(SHAPE[0]),  # a pipeline broadcasting t to the batch
        lambda s, i: s.timesteps[i].clone().to(torch.int32),
        lambda s, i: float(s.timesteps[i]),
    ]
    for form in forms:
        scheduler = cls()
        scheduler.set_timesteps(10)
        outputs, x = random_model_outputs(len(scheduler.timesteps))
        generator = torch.Generator().manual_seed(0)
        for i in range(len(scheduler.timesteps)):
            x = scheduler.step(outputs[i], form(scheduler, i), x, generator=generator).prev_sample
        results.append(x)
    assert all(torch.equal(results[0], r) for r in results[1:])


_SYNCING = ["item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "cpu"]


def _forbid_host_reads(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError("step() read a tensor value on the host")

    for name in _SYNCING:
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize(
    "cls, config, kwargs",
    [
        (DDPMScheduler, {"variance_type": "fixed_large"}, {}),
        (DDPMScheduler, {"variance_type": "learned_range", "thresholding": True}, {}),
        (DDIMScheduler, {"prediction_type": "v_prediction"}, {"eta": 1.0, "use_clipped_model_output": True}),
        (DDIMScheduler, {"timestep_spacing": "linspace", "prediction_type": "sample"}, {}),
        (PNDMScheduler, {"prediction_type": "v_prediction"}, {}),
        (PNDMScheduler, {"skip_prk_steps": True, "prediction_type": "sample"}, {}),
    ],
)
def test_step_never_reads_a_tensor_value_on_the_host(cls, config, kwargs, monkeypatch):
    # item(), tolist(), bool(tensor), ... are what force a device-to-host sync on CUDA; step() must use none.
    scheduler = cls.from_config({**CELEBAHQ_SCHEDULER_CONFIG, **config}, **kwargs)
    scheduler.set_timesteps(10)
    channels = 2 * SHAPE[1] if config.get("variance_type", "").startswith("learned") else SHAPE[1]
    outputs = torch.randn(len(scheduler.timesteps), SHAPE[0], channels, *SHAPE[2:])
    x = torch.randn(SHAPE)
    schedule = [int(t) for t in scheduler.timesteps]
    generator = torch.Generator().manual_seed(0)
    _forbid_host_reads(monkeypatch)
    for i, t in enumerate(scheduler.timesteps):  # tensor timesteps from the schedule...
        x = scheduler.step(outputs[i], t, x, generator=generator).prev_sample
    monkeypatch.undo()
    assert torch.isfinite(x).all()
    scheduler.set_timesteps(10)
    _forbid_host_reads(monkeypatch)
    for i, t in enumerate(schedule):  # ...and Python ints
        x = scheduler.step(outputs[i], t, x, generator=generator).prev_sample


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32_and_returned_in_their_dtype(cls, dtype):
    config = {**CELEBAHQ_SCHEDULER_CONFIG, "clip_sample": False}
    half, full = cls.from_config(config), cls.from_config(config)
    half.set_timesteps(10)
    full.set_timesteps(10)
    outputs, x = random_model_outputs(len(half.timesteps))
    outputs, x = outputs.to(dtype), x.to(dtype)
    for i, t in enumerate(half.timesteps):
        out = half.step(outputs[i], t, x, generator=torch.Generator().manual_seed(i))
        # the float32 reference: same inputs upcast, and the same (half-precision) noise draw
        noise_generator = torch.Generator().manual_seed(i)
        ref = full.step(outputs[i].float(), t, x.float(), generator=noise_generator)
        assert out.prev_sample.dtype == dtype and out.pred_original_sample.dtype == dtype
        if cls not in (DDPMScheduler, EulerAncestralDiscreteScheduler) or int(t) == 0:  # [euler] noise each step
            assert torch.equal(out.prev_sample, ref.prev_sample.to(dtype)), i
        x = out.prev_sample


@pytest.mark.parametrize("cls", ALL)
def test_add_noise_and_get_velocity_equal_diffusers_and_accept_any_integer_timesteps(cls):
    if cls._fractional_timesteps:  # [euler] x_0 + σ ε there: tests/schedulers/test_euler_heun.py
        pytest.skip("σ-space add_noise is x_0 + σ ε")
    if (
        cls is UniPCMultistepScheduler
    ):  # [unipc] diffusers' is wrong before set_timesteps: tests/schedulers/test_unipc.py
        pytest.skip("diffusers' UniPC add_noise reads its σ table in reverse before set_timesteps")
    diffusers = pytest.importorskip("diffusers")
    ours = cls.from_config(CELEBAHQ_SCHEDULER_CONFIG)
    # the multistep samplers' add_noise is q(x_t | x_0) at the training timestep, DDPM's (diffusers' DPM-Solver reads
    # a level of its schedule instead, and before set_timesteps the wrong one: docs/schedulers.md)
    name = "DDPMScheduler" if issubclass(cls, MultistepScheduler) else cls.__name__
    theirs = getattr(diffusers, name).from_config(CELEBAHQ_SCHEDULER_CONFIG)
    theirs.alphas_cumprod = ours.alphas_cumprod.clone()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    t = torch.tensor([999, 3])
    expected = theirs.add_noise(x0, noise, t)
    for timesteps in (t, t.to(torch.int32), t.to(torch.int16)):
        assert torch.equal(ours.add_noise(x0, noise, timesteps), expected)
    assert torch.equal(ours.add_noise(x0, noise, 999)[0], theirs.add_noise(x0, noise, torch.tensor([999, 999]))[0])
    if hasattr(theirs, "get_velocity"):
        assert torch.equal(ours.get_velocity(x0, noise, t), theirs.get_velocity(x0, noise, t))
    # x_t = sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε and v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0 are a rotation of (x_0, ε):
    # |x_t|² + |v|² = |x_0|² + |ε|²
    x_t, v = ours.add_noise(x0, noise, t), ours.get_velocity(x0, noise, t)
    torch.testing.assert_close(x_t**2 + v**2, x0**2 + noise**2, rtol=1e-5, atol=1e-5)


def test_add_noise_computes_half_precision_in_float32_and_caches_the_tables():
    scheduler = DDPMScheduler()
    x0, noise = torch.randn(SHAPE, dtype=torch.float16), torch.randn(SHAPE, dtype=torch.float16)
    t = torch.tensor([10, 990])
    out = scheduler.add_noise(x0, noise, t)
    assert out.dtype == torch.float16
    assert torch.equal(out, scheduler.add_noise(x0.float(), noise.float(), t).half())
    tables = scheduler._tables(torch.device("cpu"), torch.float32)
    assert scheduler._tables(torch.device("cpu"), torch.float32) is tables  # moved once, then reused
    x64 = scheduler.add_noise(x0.double(), noise.double(), t)
    assert x64.dtype == torch.float64
    with pytest.raises(TypeError, match="integer tensor"):
        scheduler.add_noise(x0, noise, t.float())


@pytest.mark.parametrize("cls", [DDIMScheduler, PNDMScheduler])
def test_ode_schedulers_drop_the_variance_half_of_a_learned_sigma_output(cls):
    a, b = cls(), cls()
    a.set_timesteps(10)
    b.set_timesteps(10)
    outputs, x = random_model_outputs(len(a.timesteps), shape=(2, 6, 8, 8))
    ra = run_loop(a, outputs, x[:, :3])
    rb = run_loop(b, outputs[:, :, :3].contiguous(), x[:, :3])
    assert all(torch.equal(p, q) for p, q in zip(ra.prev_samples, rb.prev_samples))


@pytest.mark.parametrize("cls", ALL)
def test_the_last_step_lands_on_the_clean_sample_estimate(cls):
    # With ᾱ = 1 after the last step the result is x̂_0 itself (DDIM and PNDM: set_alpha_to_one; DDPM: always).
    scheduler = cls.from_config({**CELEBAHQ_SCHEDULER_CONFIG, "set_alpha_to_one": True})
    if cls is DDIMScheduler:
        scheduler.eta = 1.0
    scheduler.set_timesteps(10)
    outputs, x = random_model_outputs(len(scheduler.timesteps))
    if cls is PNDMScheduler:
        # PNDM steps with a combination ε' of several outputs; with one constant ε the combination is ε itself (the
        # weights sum to 1), and the last transfer must land on the x̂_0 that ε implies.
        outputs = outputs[:1].expand_as(outputs)
    run = run_loop(scheduler, outputs, x, generator_seed=0)
    x0 = run.pred_original_samples[-1]
    assert x0 is not None
    torch.testing.assert_close(run.prev_samples[-1], x0, rtol=1e-6, atol=1e-5)
    if cls is not PNDMScheduler:
        assert torch.equal(run.prev_samples[-1], x0)
