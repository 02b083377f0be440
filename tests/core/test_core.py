"""Tests of the shared core: typed configs, atomic writes, Hub file resolution and noise drawing."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import torch

from ddpm.config import ConfigBase, read_json
from ddpm.errors import CheckpointNotFoundError, ConfigError
from ddpm.hub import HubOptions, find_file, require_file
from ddpm.io import atomic_write, atomic_write_text
from ddpm.utils import extract, randn_tensor

from helpers import install_in_hf_cache


@dataclasses.dataclass(frozen=True)
class _ToyConfig(ConfigBase):
    _class_name: ClassVar[str] = "Toy"
    channels: tuple[int, ...] = (4, 8)
    eps: float = 1e-6
    kind: Literal["a", "b"] = "a"
    flag: bool = False
    head_dim: int | None = None


def test_config_reads_like_diffusers_configs() -> None:
    cfg = _ToyConfig.from_dict({"channels": [1, 2], "_diffusers_version": "0.0.4", "unknown_key": 3})
    assert cfg.channels == (1, 2)
    assert cfg["kind"] == "a"
    assert dict(cfg)["eps"] == 1e-6
    assert cfg.to_dict() == {
        "_class_name": "Toy",
        "channels": [1, 2],
        "eps": 1e-6,
        "kind": "a",
        "flag": False,
        "head_dim": None,
    }
    assert _ToyConfig.from_dict(cfg) == cfg
    assert _ToyConfig.from_dict(cfg, kind="b").kind == "b"


def test_unknown_keys_are_ignored_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        _ToyConfig.from_dict({"timestep_values": None, "eps": 1e-5})
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_integral_floats_become_ints_and_ints_become_floats() -> None:
    cfg = _ToyConfig.from_dict({"channels": [4.0, 8.0], "eps": 1, "head_dim": 8.0})
    assert cfg.channels == (4, 8) and isinstance(cfg.channels[0], int)
    assert isinstance(cfg.eps, float) and cfg.head_dim == 8


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("channels", "4,8", "a list of integers"),
        ("channels", [4, "x"], "a list of integers"),
        ("eps", "small", "a number"),
        ("eps", float("nan"), "a number"),
        ("kind", "c", "one of 'a', 'b'"),
        ("flag", 1, "true or false"),
        ("head_dim", 2.5, "an integer or null"),
    ],
)
def test_wrong_types_name_key_value_and_allowed(key: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _ToyConfig.from_dict({key: value}, source="some/config.json")
    message = str(info.value)
    assert "some/config.json" in message and repr(key) in message and expected in message


def test_read_json_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        read_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        read_json(bad)
    with pytest.raises(ConfigError, match="not found"):
        read_json(tmp_path / "missing.json")


def test_save_json_round_trip(tmp_path: Path) -> None:
    cfg = _ToyConfig(channels=(3,), kind="b")
    path = cfg.save_json(tmp_path)
    assert json.loads(path.read_text())["_class_name"] == "Toy"
    assert _ToyConfig.from_json_file(path) == cfg


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    atomic_write_text(target, "old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half-writ")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_find_file_prefers_subfolder_then_root(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    (tmp_path / "config.json").write_text("{}")
    assert find_file(tmp_path, "config.json", subfolder="unet") == tmp_path / "config.json"
    (tmp_path / "unet" / "config.json").write_text("{}")
    assert find_file(tmp_path, "config.json", subfolder="unet") == tmp_path / "unet" / "config.json"
    assert find_file(tmp_path, "nothing.json") is None
    with pytest.raises(CheckpointNotFoundError, match="no such folder"):
        find_file(tmp_path / "missing", "config.json")


def test_find_file_resolves_hub_ids_from_the_offline_cache(tmp_path: Path, hf_cache: str) -> None:
    source = tmp_path / "repo"
    source.mkdir()
    (source / "scheduler_config.json").write_text("{}")
    install_in_hf_cache(hf_cache, "org/core-test", source)
    path = find_file("org/core-test", "scheduler_config.json", subfolder="scheduler")
    assert path is not None and path.read_text() == "{}"
    assert find_file("org/core-test", "config.json") is None
    with pytest.raises(CheckpointNotFoundError) as info:
        require_file("org/not-cached", "config.json")
    message = str(info.value)
    assert "org/not-cached" in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(CheckpointNotFoundError, match="local_files_only=True"):
        require_file("org/not-cached", "config.json", options=HubOptions(local_files_only=True))


def test_randn_tensor_follows_the_generator_rules() -> None:
    shape = (3, 2, 4, 4)
    single = randn_tensor(shape, torch.Generator().manual_seed(0))
    assert torch.equal(single, torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    per_sample = randn_tensor(shape, [torch.Generator().manual_seed(s) for s in (5, 6, 7)])
    alone = randn_tensor((1, 2, 4, 4), [torch.Generator().manual_seed(6)])
    assert torch.equal(per_sample[1:2], alone)
    half = randn_tensor(shape, torch.Generator().manual_seed(0), dtype=torch.float16)
    assert half.dtype == torch.float16
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn_tensor(shape, [torch.Generator(), torch.Generator()])


def test_extract() -> None:
    table = torch.arange(10.0)
    out = extract(table, torch.tensor([3, 7]), (2, 3, 8, 8))
    assert out.shape == (2, 1, 1, 1) and out.flatten().tolist() == [3.0, 7.0]


def test_saved_files_get_the_mode_an_ordinary_open_would(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        target = tmp_path / "config.json"
        atomic_write_text(target, "{}")
        assert target.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)
