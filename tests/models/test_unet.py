"""UNet2DModel against diffusers (the oracle): forward parity, timestep handling, input errors, dtypes, configs.

Every parity model is written the way the google/ddpm-* repos store it (legacy attention names, a pickled
``diffusion_pytorch_model.bin``), installed in the temporary HF cache and loaded by Hub id with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from ddpm import UNet2DConfig, UNet2DModel
from ddpm.errors import ConfigError, UnsupportedConfigError
from ddpm.outputs import UNet2DOutput

from helpers import (
    CELEBAHQ_UNET_CONFIG,
    CIFAR10_UNET_CONFIG,
    TINY_UNET_CONFIG,
    diffusers_unet,
    install_in_hf_cache,
    write_flat_repo,
)

ATOL = 1e-4  # the project's fp32 parity budget for the UNet

# Tiny configs that together cover every block type and every implemented option.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "hub-options": TINY_UNET_CONFIG,  # flip False, freq_shift 1, downsample_padding 0, one head, 1 layer
    "diffusers-defaults": {
        # flip True, freq_shift 0, downsample_padding 1, attention_head_dim 8 (several heads), 2 layers,
        # mid_block_scale_factor != 1, centred input, explicit time_embedding_dim, legacy "UNetRes" block names.
        "block_out_channels": [16, 32, 32],
        "down_block_types": ["AttnDownBlock2D", "UNetResDownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"],
        "norm_num_groups": 8,
        "mid_block_scale_factor": 1.4142135623730951,
        "center_input_sample": True,
        "time_embedding_dim": 48,
        "sample_size": 16,
    },
    "acts-and-mid-options": {
        **TINY_UNET_CONFIG,
        "act_fn": "mish",
        "attn_norm_num_groups": 4,
        "attention_head_dim": 16,
        "layers_per_block": 2,
        "in_channels": 1,
        "out_channels": 2,
        "dropout": 0.1,  # inactive in eval mode, as in diffusers
    },
    "no-mid-attention-gelu": {**TINY_UNET_CONFIG, "add_attention": False, "act_fn": "gelu"},
    "no-mid-block-relu": {**TINY_UNET_CONFIG, "mid_block_type": None, "act_fn": "relu", "flip_sin_to_cos": True},
    "odd-embedding-swish": {
        # block_out_channels[0] = 9: an odd number of sinusoidal features (zero-padded) and 3 groups.
        **TINY_UNET_CONFIG,
        "block_out_channels": [9, 18],
        "norm_num_groups": 3,
        "act_fn": "swish",
        "freq_shift": 0,
    },
    "single-level": {
        **TINY_UNET_CONFIG,
        "block_out_channels": [32],
        "down_block_types": ["AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D"],
        "sample_size": [7, 5],
    },
}
TINY_SIZES = {"single-level": (7, 5)}
NCSNPP_BLOCKS = {
    "down_block_types": ["SkipDownBlock2D", "AttnSkipDownBlock2D"],
    "up_block_types": ["AttnSkipUpBlock2D", "SkipUpBlock2D"],
}


def _load_by_hub_id(
    hf_cache: str, folder: Path, repo_id: str, config: dict[str, Any], seed: int = 0
) -> tuple[Any, UNet2DModel]:
    """diffusers' model (the oracle) and ddpm's, loaded by Hub id from the legacy .bin in the HF cache."""
    reference = diffusers_unet(config, seed=seed)
    write_flat_repo(folder, reference, config, weights="bin", legacy_keys=True)
    install_in_hf_cache(hf_cache, repo_id, folder)
    return reference, UNet2DModel.from_pretrained(repo_id)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _forwards(model: Any, x: torch.Tensor, timesteps: list[Any]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(x, t).sample for t in timesteps]


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_tiny_configs_match_diffusers_within_atol(name: str, hf_cache: str, tmp_path: Path) -> None:
    config = TINY_CONFIGS[name]
    reference, ours = _load_by_hub_id(hf_cache, tmp_path / name, f"ddpm-tests/tiny-{name}", config)
    height, width = TINY_SIZES.get(name, (16, 16))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, config.get("in_channels", 3), height, width, generator=gen)
    timesteps = [0, 999, torch.tensor(417), torch.tensor([3, 950])]
    assert set(ours.state_dict()) == set(reference.state_dict())
    for got, want in zip(_forwards(ours, x, timesteps), _forwards(reference, x, timesteps)):
        assert got.shape == want.shape == (2, config.get("out_channels", 3), height, width)
        assert got.abs().max() > 0.1  # a real, non-degenerate output
        assert _max_diff(got, want) <= ATOL


@pytest.fixture(scope="module")
def cifar10(hf_cache: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, UNet2DModel]:
    folder = tmp_path_factory.mktemp("cifar10")
    return _load_by_hub_id(hf_cache, folder, "google/ddpm-cifar10-32", CIFAR10_UNET_CONFIG, seed=3)


@pytest.fixture(scope="module")
def celebahq(hf_cache: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, UNet2DModel]:
    folder = tmp_path_factory.mktemp("celebahq")
    return _load_by_hub_id(hf_cache, folder, "google/ddpm-ema-celebahq-256", CELEBAHQ_UNET_CONFIG, seed=4)


def test_exact_cifar10_config_matches_diffusers_at_32px(cifar10: tuple[Any, UNet2DModel]) -> None:
    reference, ours = cifar10
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    timesteps = [torch.tensor([10, 999])]
    for got, want in zip(_forwards(ours, x, timesteps), _forwards(reference, x, timesteps)):
        assert _max_diff(got, want) <= ATOL


def test_exact_celebahq_config_matches_diffusers(celebahq: tuple[Any, UNet2DModel]) -> None:
    # The exact 256 px config and weights, run at 64x64 (divisible by 2**5) and batch 1 to keep CI fast.
    reference, ours = celebahq
    assert sum(p.numel() for p in ours.parameters()) == 113_673_219
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    timesteps = [torch.tensor(999)]
    for got, want in zip(_forwards(ours, x, timesteps), _forwards(reference, x, timesteps)):
        assert _max_diff(got, want) <= ATOL


# ---------------------------------------------------------------------------------------------- timesteps


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, UNet2DModel]:
    reference = diffusers_unet(TINY_UNET_CONFIG, seed=5)
    ours = UNet2DModel.from_config(TINY_UNET_CONFIG).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _x(batch: int = 2, size: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7)).to(dtype)


@pytest.mark.parametrize(
    "timestep",
    [
        500,
        500.0,
        torch.tensor(500),
        torch.tensor(500.0),
        torch.tensor(500, dtype=torch.float64),
        torch.tensor([500]),
        torch.tensor([500, 500]),
        torch.tensor([500.0, 500.0]),
    ],
    ids=["int", "float", "0d-int", "0d-float", "0d-float64", "1d-len1", "1d-batch", "1d-batch-float"],
)
def test_every_timestep_form_gives_the_same_output(tiny: tuple[Any, UNet2DModel], timestep: Any) -> None:
    _, ours = tiny
    x = _x()
    with torch.no_grad():
        expected = ours(x, torch.tensor([500, 500])).sample
        assert _max_diff(ours(x, timestep).sample, expected) <= 1e-5


def test_per_sample_timesteps_equal_separate_calls(tiny: tuple[Any, UNet2DModel]) -> None:
    _, ours = tiny
    x = _x()
    with torch.no_grad():
        both = ours(x, torch.tensor([3, 900])).sample
        first = ours(x[:1], 3).sample
        second = ours(x[1:], 900).sample
    assert _max_diff(both, torch.cat([first, second])) <= 1e-5


def test_float_timesteps_are_used_as_given_not_truncated(tiny: tuple[Any, UNet2DModel]) -> None:
    reference, ours = tiny
    x = _x()
    with torch.no_grad():
        fractional = ours(x, 500.5).sample
        truncated = ours(x, 500).sample
        # diffusers keeps float *tensors* (it only truncates Python floats), so it is the oracle here.
        oracle = reference(x, torch.tensor([500.5, 500.5])).sample
    assert _max_diff(fractional, truncated) > 1e-4
    assert _max_diff(fractional, oracle) <= ATOL


def test_return_dict_false_gives_a_tuple(tiny: tuple[Any, UNet2DModel]) -> None:
    _, ours = tiny
    with torch.no_grad():
        out = ours(_x(), 10)
        plain = ours(_x(), 10, return_dict=False)
    assert isinstance(out, UNet2DOutput) and isinstance(plain, tuple) and len(plain) == 1
    assert torch.equal(out.sample, plain[0]) and torch.equal(out[0], out.sample)
    assert out.sample.is_contiguous()


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("sample_shape", "timestep", "error", "words"),
    [
        ((2, 3, 15, 16), 1, ValueError, ["15x16", "divisible by 2"]),
        ((2, 3, 16, 17), 1, ValueError, ["16x17", "divisible by 2"]),
        ((2, 4, 16, 16), 1, ValueError, ["4 channels", "in_channels=3"]),
        ((3, 16, 16), 1, ValueError, ["(B, C, H, W)", "(3, 16, 16)"]),
        ((2, 3, 16, 16), float("nan"), ValueError, ["finite"]),
        ((2, 3, 16, 16), torch.tensor([1.0, float("inf")]), ValueError, ["non-finite"]),
        ((2, 3, 16, 16), torch.tensor([1, 2, 3]), ValueError, ["(3,)", "batch of 2"]),
        ((2, 3, 16, 16), torch.ones(2, 1), ValueError, ["(2, 1)"]),
        ((2, 3, 16, 16), torch.tensor(True), ValueError, ["torch.bool"]),
        ((2, 3, 16, 16), "10", TypeError, ["number or a tensor"]),
        ((2, 3, 16, 16), True, TypeError, ["number or a tensor"]),
    ],
)
def test_bad_input_raises_a_clear_error(
    tiny: tuple[Any, UNet2DModel], sample_shape: tuple[int, ...], timestep: Any, error: type, words: list[str]
) -> None:
    _, ours = tiny
    with pytest.raises(error) as info, torch.no_grad():
        ours(torch.zeros(sample_shape), timestep)
    for word in words:
        assert word in str(info.value)


def test_sample_dtype_must_match_the_model_unless_autocast(tiny: tuple[Any, UNet2DModel]) -> None:
    _, ours = tiny
    with pytest.raises(ValueError, match="dtype torch.bfloat16 but the model's parameters are torch.float32"):
        ours(_x(dtype=torch.bfloat16), 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(ours(_x(), 1).sample).all()


# ---------------------------------------------------------------------------------------------- dtypes, devices


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_and_stays_close_to_fp32(dtype: torch.dtype) -> None:
    reference = diffusers_unet(TINY_UNET_CONFIG, seed=6)
    ours = UNet2DModel.from_config(TINY_UNET_CONFIG).eval()
    ours.load_state_dict(reference.state_dict())
    x = _x()
    with torch.no_grad():
        full = ours(x, 600).sample
        low = ours.to(dtype)(x.to(dtype), 600).sample
    assert ours.dtype == dtype and low.dtype == dtype
    assert torch.isfinite(low).all()
    assert _max_diff(low, full) <= 0.05 * full.abs().max().item()


def test_device_and_dtype_follow_to() -> None:
    model = UNet2DModel.from_config(TINY_UNET_CONFIG)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    model.to(torch.float64)
    assert model.dtype == torch.float64
    with torch.no_grad():
        assert model(_x(dtype=torch.float64), 3).sample.dtype == torch.float64


def test_convolution_layout_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """channels_last on the CPU; moving to another device re-lays the convolutions out in its preferred layout (the
    standard one on CUDA, where PyTorch's GroupNorm has no channels_last kernel); dtype changes and an explicit
    memory_format on the same device keep what they give."""
    import ddpm.models.optimizations as optimizations
    import ddpm.models.unet_2d as unet_2d

    assert unet_2d.preferred_memory_format("cpu") == unet_2d.preferred_memory_format("meta") == torch.channels_last
    assert unet_2d.preferred_memory_format("cuda") == torch.contiguous_format
    convs = lambda m: [mod.weight for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]  # noqa: E731
    model = UNet2DModel.from_config(TINY_UNET_CONFIG)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs(model))
    model.to(torch.bfloat16)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs(model))
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    assert all(w.is_contiguous() for w in convs(model))
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (as above)
    # Without a GPU: "meta" stands in for CUDA (same preferred layout as CUDA's for this test).
    preferred = unet_2d.preferred_memory_format
    monkeypatch.setattr(
        optimizations, "preferred_memory_format", lambda d: preferred("cuda" if d.type == "meta" else d)
    )
    moved = model.to("meta")
    assert all(w.device.type == "meta" and w.is_contiguous() for w in convs(moved))
    back = moved.to_empty(device="cpu")
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs(back))


def test_weight_changes_in_place_reach_the_folded_upsampler_weights(tiny: tuple[Any, UNet2DModel]) -> None:
    _, ours = tiny
    other = diffusers_unet(TINY_UNET_CONFIG, seed=11)
    model = UNet2DModel.from_config(TINY_UNET_CONFIG).eval()
    model.load_state_dict(ours.state_dict())
    x = _x()
    with torch.no_grad():
        model(x, 5)  # caches the upsampler's folded weights
        model.load_state_dict(other.state_dict())  # copies into the same tensors
        assert _max_diff(model(x, 5).sample, other(x, 5).sample) <= ATOL


def test_training_gradients_match_diffusers() -> None:
    reference = diffusers_unet(TINY_UNET_CONFIG, seed=8).train()
    ours = UNet2DModel.from_config(TINY_UNET_CONFIG).train()
    ours.load_state_dict(reference.state_dict())
    x = _x()
    t = torch.tensor([10, 700])
    reference(x, t).sample.square().mean().backward()
    ours(x, t).sample.square().mean().backward()
    ref_grads = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        want = ref_grads[name].grad
        assert p.grad is not None and want is not None, name
        assert _max_diff(p.grad, want) <= 1e-4 * max(1.0, want.abs().max().item()), name


# ---------------------------------------------------------------------------------------------- config


def test_missing_keys_take_diffusers_defaults() -> None:
    from diffusers import UNet2DModel as DiffusersUNet

    signature = inspect.signature(DiffusersUNet.__init__)
    defaults = {k: p.default for k, p in signature.parameters.items() if k != "self"}
    ours = UNet2DConfig()
    assert set(defaults) == set(ours)

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    for key, value in defaults.items():
        assert plain(ours[key]) == plain(value), key


def test_hub_config_differs_from_the_defaults_where_the_docs_say() -> None:
    config = UNet2DConfig.from_dict(CELEBAHQ_UNET_CONFIG)
    assert (config.flip_sin_to_cos, config.freq_shift, config.downsample_padding) == (False, 1, 0)
    assert (config.norm_eps, config.attention_head_dim) == (1e-6, None)
    assert config.mid_block_type == "UNetMidBlock2D" and config.temb_channels == 512


def test_unknown_config_keys_are_ignored_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("error")
        model = UNet2DModel.from_config({**TINY_UNET_CONFIG, "_diffusers_version": "0.0.4", "some_future_key": 1})
    assert model.config.block_out_channels == (32, 64)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_constructor_forms_agree() -> None:
    kwargs = {k: v for k, v in TINY_UNET_CONFIG.items() if not k.startswith("_")}
    by_kwargs = UNet2DModel(**kwargs)
    by_config = UNet2DModel(UNet2DConfig.from_dict(TINY_UNET_CONFIG))
    by_dict = UNet2DModel(TINY_UNET_CONFIG)
    from_diffusers_config = UNet2DModel.from_config(diffusers_unet(TINY_UNET_CONFIG).config)
    overridden = UNet2DModel.from_config(TINY_UNET_CONFIG, out_channels=6)
    assert by_kwargs.config == by_config.config == by_dict.config == from_diffusers_config.config
    assert by_kwargs.config.sample_size == 16 and by_kwargs.config["in_channels"] == 3
    assert overridden.config.out_channels == 6 and overridden.conv_out.out_channels == 6
    with pytest.raises(TypeError):
        UNet2DModel(not_a_key=1)


@pytest.mark.parametrize(
    ("key", "value"),
    [("resnet_time_scale_shift", "spatial")],  # diffusers' UNet2DModel itself cannot build it (ResnetBlock2D)
)
def test_unimplemented_values_raise_naming_key_and_value(key: str, value: Any) -> None:
    with pytest.raises(UnsupportedConfigError) as info:
        UNet2DConfig.from_dict({**TINY_UNET_CONFIG, key: value}, source="repo/config.json")
    assert isinstance(info.value, NotImplementedError) and isinstance(info.value, ConfigError)
    message = str(info.value)
    assert repr(key) in message and repr(value) in message and "repo/config.json" in message


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}, ["'CrossAttnDownBlock2D'", "AttnDownBlock2D"]),
        ({"up_block_types": ["AttnUpBlock2D", "DownBlock2D"]}, ["'DownBlock2D'", "UpBlock2D, AttnUpBlock2D"]),
        ({"up_block_types": ["UpBlock2D"]}, ["'up_block_types'", "one entry per level"]),
        ({"block_out_channels": [32, 64, 64]}, ["'down_block_types'", "one entry per level"]),
        ({"block_out_channels": [32, 48]}, ["'norm_num_groups'", "[32, 48]"]),
        ({"block_out_channels": [32, 0]}, ["'block_out_channels'", "positive"]),
        ({"layers_per_block": 0}, ["'layers_per_block'", "positive"]),
        ({"downsample_padding": 2}, ["'downsample_padding'", "0 or 1"]),
        ({"act_fn": "tanh"}, ["'act_fn'", "'tanh'", "'silu'"]),
        ({"mid_block_type": "UNetMidBlock2DCrossAttn"}, ["'mid_block_type'", "UNetMidBlock2D"]),
        ({"attention_head_dim": 128}, ["'attention_head_dim'", "128"]),
        ({"attn_norm_num_groups": 5}, ["'attn_norm_num_groups'", "5"]),
        ({"dropout": 1.5}, ["'dropout'", "[0, 1)"]),
        ({"freq_shift": 16}, ["'freq_shift'", "16"]),
        ({"time_embedding_type": "sinusoidal"}, ["'time_embedding_type'", "'positional'"]),
        ({"sample_size": [16, 16, 16]}, ["'sample_size'"]),
        ({"norm_eps": 0.0}, ["'norm_eps'", "positive"]),
        ({"block_out_channels": "32,64"}, ["'block_out_channels'", "a list of integers"]),
        ({"time_embedding_type": "learned"}, ["'num_train_timesteps'", "'learned'"]),
        ({"norm_num_groups": None}, ["'norm_num_groups'", "null", "SkipDownBlock2D"]),
        ({"class_embed_type": "projection"}, ["'class_embed_type'", "'projection'", "'identity'"]),
        ({"resnet_time_scale_shift": "shift"}, ["'resnet_time_scale_shift'", "'scale_shift'"]),
        ({"downsample_type": "pool"}, ["'downsample_type'", "'resnet'"]),
        ({"block_out_channels": [32, 48], "norm_num_groups": None, **NCSNPP_BLOCKS}, ["48 channels", "32 groups"]),
    ],
)
def test_invalid_configs_name_key_value_and_what_is_allowed(changes: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        UNet2DModel.from_config({**TINY_UNET_CONFIG, **changes})
    for word in words:
        assert word in str(info.value)


def test_benchmark_script_runs_small(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "unet_forward.py"
    spec = importlib.util.spec_from_file_location("unet_forward_benchmark", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--config", "cifar10-32", "--size", "16", "--repeats", "1", "--warmup", "0", "--dtypes", "fp32"])
    out = capsys.readouterr().out
    assert "ratio to diffusers" in out and "ddpm" in out


def _upfirdn2d_reference(
    x: torch.Tensor, kernel: torch.Tensor, up: int, down: int, pad: tuple[int, int]
) -> torch.Tensor:
    """StyleGAN2's upfirdn2d, step by step: zero insertion, padding, FIR filtering, subsampling (per channel)."""
    b, c, h, w = x.shape
    up_x = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    up_x[:, :, ::up, ::up] = x
    padded = torch.nn.functional.pad(up_x, (pad[0], pad[1], pad[0], pad[1]))
    k = kernel.flip(0, 1)[None, None].repeat(c, 1, 1, 1)
    return torch.nn.functional.conv2d(padded, k, groups=c)[:, :, ::down, ::down]


def test_fir_resampling_is_upfirdn2d_with_the_binomial_kernel() -> None:
    from ddpm.models.resnet import fir_downsample2d, fir_upsample2d

    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    kernel = torch.outer(taps, taps) / 64
    assert torch.allclose(fir_downsample2d(x), _upfirdn2d_reference(x, kernel, 1, 2, (1, 1)))
    assert torch.allclose(fir_upsample2d(x), _upfirdn2d_reference(x, 4 * kernel, 2, 1, (2, 1)))
    assert fir_upsample2d(x).shape == (2, 3, 12, 16) and fir_downsample2d(x).shape == (2, 3, 3, 4)
    # Away from the zero-padded border a constant image keeps its value.
    ones = torch.ones(1, 1, 8, 8)
    assert torch.allclose(fir_downsample2d(ones)[..., 1:-1, 1:-1], torch.ones(1, 1, 2, 2))
    assert torch.allclose(fir_upsample2d(ones)[..., 2:-2, 2:-2], torch.ones(1, 1, 12, 12))


CLASS_CONFIG = {**TINY_UNET_CONFIG, "num_class_embeds": 4}


@pytest.mark.parametrize(
    ("config", "labels", "error", "words"),
    [
        (CLASS_CONFIG, None, ValueError, ["class_labels are required", "num_class_embeds=4"]),
        (TINY_UNET_CONFIG, torch.tensor([0, 1]), ValueError, ["not class-conditional", "num_class_embeds"]),
        (CLASS_CONFIG, torch.tensor([0.0, 1.0]), ValueError, ["integer labels", "torch.float32"]),
        (CLASS_CONFIG, torch.tensor([0, 1, 2]), ValueError, ["shape (3,)", "batch of 2"]),
        (CLASS_CONFIG, [0, 1], TypeError, ["torch.Tensor", "list"]),
        ({**TINY_UNET_CONFIG, "class_embed_type": "identity"}, torch.zeros(2), ValueError, ["time_embedding_dim"]),
    ],
)
def test_class_labels_errors_say_what_to_pass(
    config: dict[str, Any], labels: Any, error: type[Exception], words: list[str]
) -> None:
    model = UNet2DModel.from_config(config).eval()
    with pytest.raises(error) as info, torch.no_grad():
        model(torch.zeros(2, 3, 16, 16), 10, class_labels=labels)
    for word in words:
        assert word in str(info.value)


def test_class_labels_change_the_output_and_one_label_serves_the_batch() -> None:
    model = UNet2DModel.from_config(CLASS_CONFIG).eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x, 10, class_labels=torch.tensor([1, 1])).sample, model(x, 10, torch.tensor([2, 2])).sample
        shared = model(x, 10, class_labels=torch.tensor([1])).sample
    assert not torch.allclose(a, b) and torch.allclose(a, shared, atol=1e-5)


def test_gradient_checkpointing_switches_and_uses_the_given_function() -> None:
    model = UNet2DModel.from_config(TINY_UNET_CONFIG).train()
    assert UNet2DModel._supports_gradient_checkpointing and not model.is_gradient_checkpointing
    calls: list[str] = []

    def spy(module: torch.nn.Module, *args: torch.Tensor) -> torch.Tensor:
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module, *args, use_reentrant=False)

    model.enable_gradient_checkpointing(spy)
    assert model.is_gradient_checkpointing
    x = torch.randn(1, 3, 16, 16)
    model(x, 10).sample.sum().backward()
    assert calls and set(calls) == {"ResnetBlock2D"}
    with torch.no_grad():  # not while autograd is off
        calls.clear()
        model(x, 10)
        assert calls == []
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing
    model(x, 10).sample.sum().backward()
    assert calls == []
