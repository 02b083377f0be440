"""Fuzzing the config loaders with hypothesis: whatever a config file holds, the loaders either succeed or raise
one of our own exceptions (``DDPMError`` subclasses), never a ``TypeError``, ``KeyError``, ``ZeroDivisionError``...

And what they accept really works: an accepted UNet config builds a network that runs a forward pass (on the
``meta`` device, which checks every shape without computing anything), and an accepted scheduler config builds a
scheduler whose ``set_timesteps`` either works or explains why not.

The runs are derandomized (the same examples every time) and small enough to take seconds; set
``DDPM_FUZZ_EXAMPLES=5000`` for a long random search.
"""

from __future__ import annotations

import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddpm.config import read_json
from ddpm.errors import ConfigError, DDPMError
from ddpm.models import UNet2DConfig, UNet2DModel
from ddpm.models.unet_blocks import BLOCK_TYPES
from ddpm.pipelines import DDIMPipeline, DDPMPipeline, DiffusionPipeline, parse_model_index
from ddpm.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler
from ddpm.schedulers.base import scheduler_config_keys

from bad_inputs import build_template
from helpers import CIFAR10_SCHEDULER_CONFIG, MODEL_INDEX, TINY_UNET_CONFIG

#: ``DDPM_FUZZ_EXAMPLES=5000`` runs a long, random (not derandomized) search, e.g. after changing a config class.
_LONG_RUN = int(os.environ.get("DDPM_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=_LONG_RUN or 150,
    derandomize=not _LONG_RUN,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# ---------------------------------------------------------------------------------------------- JSON-like values

_EDGE_NUMBERS = [0, 1, -1, 2, 3, 31, 32, 64, 2**31, 2**63, 10**30, -(10**30), 0.5, 1e-320, 1e300, -0.0]
_WORDS = [
    *BLOCK_TYPES, "UNetMidBlock2D", "positional", "fourier", "learned", "default", "scale_shift", "conv", "resnet",
    "silu", "swish", "gelu", "mish", "relu", "linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "epsilon",
    "sample", "v_prediction", "leading", "linspace", "trailing", "fixed_small", "fixed_large", "learned_range",
    "UNet2DModel", "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DDPMPipeline", "diffusers", "",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-8, max_value=300),
    st.integers(),
    st.sampled_from(_EDGE_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=1e-6, max_value=1.0),
    st.sampled_from(_WORDS),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Lists that look right (ints, block names) reach the cross-key checks more often than arbitrary lists.
plausible_lists = st.one_of(
    st.lists(st.sampled_from([1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128]), min_size=0, max_size=5),
    st.lists(st.sampled_from(list(BLOCK_TYPES)), min_size=0, max_size=5),
    st.lists(st.floats(min_value=1e-4, max_value=1.0), min_size=1, max_size=4),
)
values = st.one_of(json_values, plausible_lists)
_DELETE = object()  # a change that removes the key
_PRIVATE = ["_class_name", "_diffusers_version", "_use_default_values", "_name_or_path"]


def typed_values(tp: Any) -> st.SearchStrategy[Any]:
    """Values of the annotated type with arbitrary magnitudes: these get past the type check to the range and
    cross-key checks, and to building the model."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(typed_values(arg) for arg in typing.get_args(tp)))
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin is tuple:
        return st.lists(typed_values(typing.get_args(tp)[0]), max_size=5)
    if tp is type(None):
        return st.none()
    if tp is bool:
        return st.booleans()
    if tp is int:
        edges = [v for v in _EDGE_NUMBERS if isinstance(v, int)]
        return st.one_of(st.integers(min_value=-2, max_value=130), st.sampled_from(edges))
    if tp is float:
        return st.one_of(st.floats(min_value=-1.0, max_value=2.0), st.sampled_from([0.0, 1e-320, 1e300, 1.0, 0.02]))
    if tp is str:
        return st.sampled_from(_WORDS)
    return values


def configs(
    base: dict[str, Any], extra_keys: list[str], hints: dict[str, Any] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Mostly ``base`` with 1 to 4 keys (its own, others the loader knows, private ones, now and then a random name)
    set to arbitrary or well-typed values, or deleted; sometimes a completely arbitrary object."""
    hints = hints or {}
    known = sorted(set(base) | set(extra_keys))

    def value_for(key: str) -> st.SearchStrategy[Any]:
        typed = [typed_values(hints[key])] * 2 if key in hints else []
        return st.one_of(*typed, values, st.just(_DELETE))

    key = st.one_of(st.sampled_from(known), st.sampled_from(known), st.sampled_from(known), st.text(max_size=10))
    changes = st.lists(key.flatmap(lambda k: st.tuples(st.just(k), value_for(k))), min_size=1, max_size=4).map(dict)

    def apply(delta: dict[str, Any]) -> dict[str, Any]:
        out = {**base, **delta}
        return {k: v for k, v in out.items() if v is not _DELETE}

    arbitrary = st.dictionaries(st.one_of(st.sampled_from(known), st.text(max_size=10)), values, max_size=6)
    return st.one_of(changes.map(apply), changes.map(apply), changes.map(apply), arbitrary)


def _ours_or_success(call: Any, *args: Any, **kwargs: Any) -> Any:
    """The result of ``call``, or None if it raised a DDPMError; any other exception fails the test."""
    try:
        return call(*args, **kwargs)
    except DDPMError as exc:
        assert str(exc), "an error without a message"
        return None


# ---------------------------------------------------------------------------------------------- UNet2DConfig


_UNET_KEYS = [*UNet2DConfig._field_names(), *_PRIVATE]
_UNET_HINTS = typing.get_type_hints(UNet2DConfig)


@FUZZ
@given(configs(TINY_UNET_CONFIG, _UNET_KEYS, _UNET_HINTS))
def test_unet_config_loader_raises_only_our_errors_and_accepted_configs_run(data: dict[str, Any]) -> None:
    config = _ours_or_success(UNet2DConfig.from_dict, data, source="config.json")
    if config is None or config == UNet2DConfig():  # the defaults (no known key given) are tested elsewhere
        return
    assert UNet2DConfig.from_dict(json.loads(config.to_json_string())) == config  # round trip
    with torch.device("meta"):
        model = UNet2DModel(config)
        size = 2**config.num_downsamplers * 2
        labels = None  # a class-conditional model needs class labels
        if config.class_embed_type == "identity":
            labels = torch.empty(2, config.temb_channels)
        elif config.class_embed_type == "timestep" or config.num_class_embeds is not None:
            labels = torch.zeros(2, dtype=torch.long)
        out = model(torch.empty(2, config.in_channels, size, size), 10, class_labels=labels).sample
    assert out.shape == (2, config.out_channels, size, size)


# ---------------------------------------------------------------------------------------------- schedulers


@pytest.mark.parametrize("cls", [DDPMScheduler, DDIMScheduler, PNDMScheduler], ids=lambda c: c.__name__)
def test_scheduler_config_loader_raises_only_our_errors_and_accepted_configs_build(
    cls: type[DDPMScheduler | DDIMScheduler | PNDMScheduler],
) -> None:
    extra = [*scheduler_config_keys(), *_PRIVATE]
    hints = typing.get_type_hints(cls.config_class)

    @FUZZ
    @given(configs(CIFAR10_SCHEDULER_CONFIG, extra, hints), st.sampled_from([1, 2, 4, 10, 50]))
    def check(data: dict[str, Any], steps: int) -> None:
        config = _ours_or_success(cls.config_class.from_dict, data, source="scheduler_config.json")
        if config is None:
            return
        scheduler = cls(config=config)  # an accepted config always builds
        assert torch.isfinite(scheduler.alphas_cumprod).all()
        try:
            scheduler.set_timesteps(steps)
        except ValueError as exc:  # too many or too few steps for this config: explained, never a crash
            assert "num_inference_steps" in str(exc) or "timestep" in str(exc)
            return
        x = torch.zeros(1, 1, 2, 2)
        # Twice the channels: learned-variance configs need the variance half, the others drop it.
        scheduler.step(torch.zeros(1, 2, 2, 2), scheduler.timesteps[0], x)

    check()


# ---------------------------------------------------------------------------------------------- model_index.json


@FUZZ
@given(configs(MODEL_INDEX, ["unet", "scheduler", "vae", "_class_name"]))
def test_model_index_parser_raises_only_config_errors(data: dict[str, Any]) -> None:
    index = _ours_or_success(parse_model_index, data, "model_index.json")
    if index is not None:
        assert all(isinstance(v, str) for v in (index.pipeline, index.unet, index.scheduler))


def test_pipeline_loading_with_any_model_index_raises_only_our_errors(tmp_path: Path) -> None:
    """The whole path: parse, pick the pipeline and scheduler classes, load (the tiny template repo)."""
    repo = build_template(tmp_path / "repo")
    index_keys = ["unet", "scheduler", "vae", "_class_name"]

    @settings(FUZZ, max_examples=min(FUZZ.max_examples, 60))
    @given(configs(MODEL_INDEX, index_keys), st.sampled_from([DiffusionPipeline, DDPMPipeline, DDIMPipeline]))
    def check(data: dict[str, Any], cls: type[DiffusionPipeline]) -> None:
        (repo / "model_index.json").write_text(json.dumps(data))
        pipe = _ours_or_success(cls.from_pretrained, repo)
        if pipe is not None:
            assert isinstance(pipe, DiffusionPipeline)

    check()


@FUZZ
@given(st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode()),
                 st.text(max_size=64).map(str.encode)))  # fmt: skip
def test_read_json_raises_only_config_errors(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_bytes(content)
        try:
            data = read_json(path)
        except ConfigError as exc:
            assert str(path) in str(exc)
            return
    assert isinstance(data, dict)


def test_fuzzing_reaches_both_outcomes() -> None:
    """The strategies are not degenerate: they produce accepted and refused UNet configs alike."""
    seen: set[bool] = set()

    @settings(FUZZ, max_examples=60)
    @given(configs(TINY_UNET_CONFIG, _UNET_KEYS, _UNET_HINTS))
    def collect(data: dict[str, Any]) -> None:
        seen.add(_ours_or_success(UNet2DConfig.from_dict, data) is not None)

    collect()
    assert seen == {True, False}
