"""UNet2DModel.from_pretrained / save_pretrained: layouts, formats, round trips with diffusers, and every error.

All Hub ids resolve from the temporary HF cache (HF_HUB_OFFLINE=1, set by conftest.py).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from ddpm import UNet2DModel
from ddpm.errors import CheckpointNotFoundError, ConfigError, UnsafeCheckpointError, WeightsError
from ddpm.models.loading import (
    add_variant,
    load_state_dict_file,
    rename_legacy_keys,
    resolve_device_map,
    resolve_load_dtype,
)
from ddpm.pipelines.pretrained import component_dtype

from helpers import (
    MODEL_INDEX,
    TINY_UNET_CONFIG,
    damage_file,
    diffusers_unet,
    install_in_hf_cache,
    to_legacy_keys,
    write_flat_repo,
)

ATOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> Any:
    """The oracle: a tiny diffusers UNet with perturbed random weights."""
    return diffusers_unet(TINY_UNET_CONFIG, seed=21)


def _assert_same_outputs(ours: UNet2DModel, reference: Any) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for t in (0, torch.tensor([7, 999])):
            assert (ours(x, t).sample - reference(x, t).sample).abs().max().item() <= ATOL


def _repo(tmp_path: Path, reference: Any, **kwargs: Any) -> Path:
    return write_flat_repo(tmp_path / "repo", reference, TINY_UNET_CONFIG, **kwargs)


# ---------------------------------------------------------------------------------------------- layouts and formats


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
@pytest.mark.parametrize("legacy_keys", [True, False], ids=["legacy-names", "current-names"])
def test_loads_by_hub_id_from_the_offline_cache(
    weights: str, legacy_keys: bool, reference: Any, hf_cache: str, tmp_path: Path
) -> None:
    repo_id = f"ddpm-tests/flat-{weights}-{legacy_keys}"
    install_in_hf_cache(hf_cache, repo_id, _repo(tmp_path, reference, weights=weights, legacy_keys=legacy_keys))
    ours = UNet2DModel.from_pretrained(repo_id)
    assert not ours.training and ours.dtype == torch.float32
    _assert_same_outputs(ours, reference)


def test_loads_from_a_local_folder_as_str_or_path(reference: Any, tmp_path: Path) -> None:
    folder = _repo(tmp_path, reference)
    _assert_same_outputs(UNet2DModel.from_pretrained(str(folder)), reference)
    _assert_same_outputs(UNet2DModel.from_pretrained(folder), reference)


def test_prefers_safetensors_and_never_reads_the_bin_then(reference: Any, tmp_path: Path) -> None:
    folder = _repo(tmp_path, reference, weights="both")
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"not a pickle")  # would fail if it were read
    _assert_same_outputs(UNet2DModel.from_pretrained(folder), reference)


def test_use_safetensors_true_refuses_to_fall_back_to_bin(reference: Any, tmp_path: Path) -> None:
    folder = _repo(tmp_path, reference, weights="bin")
    with pytest.raises(CheckpointNotFoundError, match="use_safetensors=True forbids falling back"):
        UNet2DModel.from_pretrained(folder, use_safetensors=True)
    _assert_same_outputs(UNet2DModel.from_pretrained(folder, use_safetensors=False), reference)


@pytest.mark.parametrize("source", ["hub-id", "local"])
def test_unet_subfolder_layout(source: str, reference: Any, hf_cache: str, tmp_path: Path) -> None:
    root = tmp_path / "pipeline"
    write_flat_repo(root / "unet", reference, TINY_UNET_CONFIG, weights="safetensors", model_index=False)
    (root / "model_index.json").write_text(json.dumps(MODEL_INDEX))
    where: str | Path = root
    if source == "hub-id":
        where = "ddpm-tests/pipeline-layout"
        install_in_hf_cache(hf_cache, where, root)
    _assert_same_outputs(UNet2DModel.from_pretrained(where, subfolder="unet"), reference)


def test_subfolder_falls_back_to_the_flat_root(reference: Any, hf_cache: str, tmp_path: Path) -> None:
    install_in_hf_cache(hf_cache, "ddpm-tests/flat-root", _repo(tmp_path, reference))
    _assert_same_outputs(UNet2DModel.from_pretrained("ddpm-tests/flat-root", subfolder="unet"), reference)


def test_torch_dtype(reference: Any, tmp_path: Path) -> None:
    folder = _repo(tmp_path, reference)
    for dtype in (torch.float16, torch.bfloat16, "bfloat16", "float32"):
        model = UNet2DModel.from_pretrained(folder, torch_dtype=dtype)
        assert model.dtype == (getattr(torch, dtype) if isinstance(dtype, str) else dtype)
        assert all(p.dtype == model.dtype for p in model.parameters())
    with pytest.raises(ValueError, match="torch_dtype='int8'"):
        UNet2DModel.from_pretrained(folder, torch_dtype="int8")


def test_loaded_parameters_are_real_and_trainable(reference: Any, tmp_path: Path) -> None:
    model = UNet2DModel.from_pretrained(_repo(tmp_path, reference, weights="safetensors"))
    assert all(p.device.type == "cpu" and p.requires_grad for p in model.parameters())
    assert model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_attention_weights_stored_as_1x1_convs_are_squeezed(reference: Any, tmp_path: Path) -> None:
    folder = tmp_path / "conv-attention"
    write_flat_repo(folder, reference, TINY_UNET_CONFIG, weights="bin")
    state = torch.load(folder / "diffusion_pytorch_model.bin", weights_only=True)
    for key in list(state):
        if ".attentions." in key and key.endswith(("query.weight", "key.weight", "value.weight", "proj_attn.weight")):
            state[key] = state[key][:, :, None, None].contiguous()  # (C, C) -> (C, C, 1, 1)
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    _assert_same_outputs(UNet2DModel.from_pretrained(folder), reference)


def test_legacy_and_current_names_for_the_same_tensor_conflict(reference: Any) -> None:
    state = dict(reference.state_dict())
    state.update({k: v for k, v in to_legacy_keys(state).items() if k not in state})
    with pytest.raises(WeightsError, match="twice"):
        rename_legacy_keys(state)


# ---------------------------------------------------------------------------------------------- round trips


def test_save_pretrained_is_read_by_diffusers(reference: Any, tmp_path: Path) -> None:
    from diffusers import UNet2DModel as DiffusersUNet

    ours = UNet2DModel.from_config(TINY_UNET_CONFIG).eval()
    ours.load_state_dict(reference.state_dict())
    folder = ours.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(folder)) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "UNet2DModel"
    _assert_same_outputs(ours, DiffusersUNet.from_pretrained(folder).eval())
    _assert_same_outputs(UNet2DModel.from_pretrained(folder), reference)


def test_folder_saved_by_diffusers_loads(reference: Any, tmp_path: Path) -> None:
    reference.save_pretrained(tmp_path / "by-diffusers")
    _assert_same_outputs(UNet2DModel.from_pretrained(tmp_path / "by-diffusers"), reference)


def test_unknown_config_keys_in_config_json_are_ignored_silently(
    reference: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _repo(tmp_path, reference)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_name_or_path": "x", "future_option": [1, 2]}))
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same_outputs(UNet2DModel.from_pretrained(folder), reference)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


# ---------------------------------------------------------------------------------------------- errors


def test_strict_loading_lists_missing_unexpected_and_misshaped_tensors_in_one_error(
    reference: Any, tmp_path: Path
) -> None:
    folder = _repo(tmp_path, reference, weights="safetensors", legacy_keys=False)
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    del state["conv_out.bias"]
    state["extra.weight"] = torch.zeros(2, 2)
    state["conv_in.weight"] = torch.zeros(32, 3, 5, 5)
    save_file(state, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightsError) as info:
        UNet2DModel.from_pretrained(folder)
    message = str(info.value)
    assert "diffusion_pytorch_model.safetensors" in message
    assert "missing (1): conv_out.bias (3,)" in message
    assert "unexpected (1): extra.weight (2, 2)" in message
    assert "wrong shape (1): conv_in.weight: file (32, 3, 5, 5), model (32, 3, 3, 3)" in message


def test_weights_of_another_config_are_reported(reference: Any, tmp_path: Path) -> None:
    folder = _repo(tmp_path, reference)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layers_per_block": 2}))
    with pytest.raises(WeightsError, match=r"missing \(\d+\): down_blocks.0.resnets.1"):
        UNet2DModel.from_pretrained(folder)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_damaged_weights_files_raise_weights_error_naming_the_file(
    weights: str, how: str, reference: Any, tmp_path: Path
) -> None:
    folder = _repo(tmp_path, reference, weights=weights)
    path = folder / f"diffusion_pytorch_model.{weights}"
    damage_file(path, how)
    with pytest.raises(WeightsError) as info:
        UNet2DModel.from_pretrained(folder)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert str(path) in str(info.value)


class _Payload:
    """Unpickling this runs ``touch(marker)``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_UNET_CONFIG))
    path = folder / "diffusion_pytorch_model.bin"
    with open(path, "wb") as f:
        pickle.dump({"conv_in.weight": _Payload(marker)}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError) as info:
        UNet2DModel.from_pretrained(folder)
    assert str(path) in str(info.value) and "safetensors" in str(info.value)
    assert not marker.exists()
    for zip_container in (True, False):  # torch.save's current and legacy formats
        torch.save({"conv_in.weight": _Payload(marker)}, path, _use_new_zipfile_serialization=zip_container)
        with pytest.raises(UnsafeCheckpointError):
            load_state_dict_file(path)
        assert not marker.exists()


def test_damaged_legacy_format_pickle_is_not_called_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "diffusion_pytorch_model.bin"
    torch.save({"conv_in.weight": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=False)
    assert load_state_dict_file(path)["conv_in.weight"].shape == (64, 64)
    damage_file(path, "truncated")
    with pytest.raises(WeightsError, match="damaged") as info:
        load_state_dict_file(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_pickle_with_non_tensor_values_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "diffusion_pytorch_model.bin"
    torch.save({"conv_in.weight": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(WeightsError, match="'epoch' \\(int\\)"):
        load_state_dict_file(path)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="holds a list"):
        load_state_dict_file(path)


def test_missing_files_raise_checkpoint_not_found(reference: Any, tmp_path: Path) -> None:
    folder = _repo(tmp_path, reference)
    (folder / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors or diffusion_pytorch_model.bin"):
        UNet2DModel.from_pretrained(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="config.json"):
        UNet2DModel.from_pretrained(folder)
    with pytest.raises(CheckpointNotFoundError, match="HF_HUB_OFFLINE=1"):
        UNet2DModel.from_pretrained("ddpm-tests/not-in-the-cache")


def test_bad_config_json_names_the_file(reference: Any, tmp_path: Path) -> None:
    folder = _repo(tmp_path, reference)
    (folder / "config.json").write_text(json.dumps({**TINY_UNET_CONFIG, "resnet_time_scale_shift": "spatial"}))
    with pytest.raises(ConfigError) as info:
        UNet2DModel.from_pretrained(folder)
    assert str(folder / "config.json") in str(info.value) and "'spatial'" in str(info.value)


# ---------------------------------------------------------------------------------------------- call forms (issue 12)


def test_resolve_device_map_accepts_one_device_and_refuses_a_split() -> None:
    one = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device_map(None) is None
    assert resolve_device_map("cpu") == resolve_device_map(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device_map({"": "cpu", "conv_in": torch.device("cpu")}) == torch.device("cpu")
    assert resolve_device_map("auto") == resolve_device_map("balanced") == one
    with pytest.raises(NotImplementedError, match="spreads the model over 2 devices"):
        resolve_device_map({"conv_in": "cpu", "": "mps"})
    for bad, words in [(-1, "cannot be negative"), ("meta", "real device"), (True, "pass a device"), ({}, "empty")]:
        with pytest.raises(ValueError, match=words):
            resolve_device_map(bad)


def test_dtype_options_resolve_once_for_models_and_pipelines() -> None:
    assert resolve_load_dtype("fp16", torch.float16) == torch.float16
    assert resolve_load_dtype(None, "bfloat16") == torch.bfloat16 and resolve_load_dtype(None, None) is None
    assert component_dtype({"unet": torch.float16, "default": torch.float32}, None) == torch.float16
    assert component_dtype(None, {"vae": torch.float16, "default": torch.bfloat16}) == torch.bfloat16
    assert component_dtype({"vae": torch.float16}, None) is None
    with pytest.raises(ValueError, match="disagree"):
        component_dtype({"unet": torch.float16}, torch.bfloat16)


def test_variant_names_are_diffusers_names() -> None:
    assert add_variant("diffusion_pytorch_model.safetensors", "fp16") == "diffusion_pytorch_model.fp16.safetensors"
    assert add_variant("diffusion_pytorch_model.bin.index.json", "ema") == "diffusion_pytorch_model.bin.index.ema.json"
    assert add_variant("diffusion_pytorch_model.bin", None) == "diffusion_pytorch_model.bin"


def test_a_failed_sharded_save_leaves_the_previous_model_intact(
    reference: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    model = UNet2DModel.from_pretrained(_repo(tmp_path, reference, weights="safetensors", model_index=False))
    folder = tmp_path / "saved"
    model.save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    calls: list[str] = []
    real_save_file = safetensors.torch.save_file

    def failing_save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(folder, max_shard_size=1_000_000)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no shard, no index, no temporary file
    _assert_same_outputs(UNet2DModel.from_pretrained(folder), reference)


def test_a_sharded_hub_repo_with_a_shard_missing_from_the_cache(reference: Any, hf_cache: str, tmp_path: Path) -> None:
    model = UNet2DModel.from_pretrained(_repo(tmp_path, reference, weights="safetensors", model_index=False))
    model.save_pretrained(tmp_path / "sharded", max_shard_size=1_000_000)
    snapshot = install_in_hf_cache(hf_cache, "ddpm-tests/sharded-unet", tmp_path / "sharded")
    _assert_same_outputs(UNet2DModel.from_pretrained("ddpm-tests/sharded-unet"), reference)
    index = json.loads((snapshot / "diffusion_pytorch_model.safetensors.index.json").read_text())
    second = sorted(set(index["weight_map"].values()))[1]
    (snapshot / second).unlink()
    with pytest.raises(
        CheckpointNotFoundError, match=f"lists the shard {second}, which is not in ddpm-tests/sharded-unet"
    ):
        UNet2DModel.from_pretrained("ddpm-tests/sharded-unet")


def test_save_pretrained_refuses_unknown_keywords_and_bad_sizes(reference: Any, tmp_path: Path) -> None:
    model = UNet2DModel.from_pretrained(_repo(tmp_path, reference, weights="safetensors", model_index=False))
    with pytest.raises(TypeError, match="safe_serialisation"):
        model.save_pretrained(tmp_path / "a", safe_serialisation=False)
    for size in (0, "big", True):
        with pytest.raises(ValueError):
            model.save_pretrained(tmp_path / "b", max_shard_size=size)
    assert not (tmp_path / "a").exists()
