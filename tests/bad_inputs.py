"""The catalogue of hostile files and bad input, with the exception and the words each one must produce.

``tests/hostile/test_hostile.py`` runs every case. Run this file to print the table of what users see (the notes and
``docs/errors.md`` are made from it)::

    PYTHONPATH=src:tests python tests/bad_inputs.py > /tmp/table.md

Each case gets a fresh copy of a tiny, valid pipeline folder (flat google/ddpm-* layout: ``model_index.json``,
``config.json``, ``diffusion_pytorch_model.safetensors``, ``scheduler_config.json``) and breaks one thing.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # the same environment as tests/conftest.py
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")

import torch

from ddpm import (
    CheckpointNotFoundError,
    ConfigError,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    OverwriteError,
    PNDMScheduler,
    UNet2DModel,
    UnsafeCheckpointError,
    UnsupportedConfigError,
    WeightsError,
)
from ddpm.errors import ResourceLimitError, SaveError, VariantNotFoundError
from ddpm.pipelines import DiffusionPipeline
from ddpm.training import TrainingError
from ddpm.training.trainer import _CHECKPOINT_FORMAT as CHECKPOINT_FORMAT

from helpers import CIFAR10_SCHEDULER_CONFIG, MODEL_INDEX, TINY_UNET_CONFIG, damage_file, perturb_, tiny_trainer

WEIGHTS = "diffusion_pytorch_model.safetensors"
BIN = "diffusion_pytorch_model.bin"
MARKER = "payload-ran"


# ---------------------------------------------------------------------------------------------- malicious pickles


class ShellPayload:
    """Unpickling this runs ``touch <marker>`` through ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


class OpenPayload:
    """Unpickling this creates ``marker`` through ``open(marker, "w")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.marker), "w"))


def write_malicious_bin(path: Path, marker: Path, how: str = "zip") -> None:
    """A weights file whose unpickling would create ``marker``: torch.save (zip or legacy format) or plain pickle."""
    state = {"conv_in.weight": ShellPayload(marker), "conv_in.bias": OpenPayload(marker)}
    if how == "zip":
        torch.save(state, path)
    elif how == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif how in ("pickle", "pickle5"):  # protocol 2 (what torch's legacy format uses) or 5 (framed, STACK_GLOBAL)
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=2 if how == "pickle" else 5)
    else:
        raise ValueError(how)


# ---------------------------------------------------------------------------------------------- the tiny repo


def build_template(folder: Path) -> Path:
    """A valid flat repo with a tiny UNet (ours, seeded and perturbed) and the cifar10 scheduler config."""
    torch.manual_seed(0)
    unet = UNet2DModel.from_config(TINY_UNET_CONFIG)
    perturb_(unet, seed=0)
    unet.eval().save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(json.dumps(CIFAR10_SCHEDULER_CONFIG, indent=2))
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))
    return folder


@dataclass
class Ctx:
    """What a case works with: ``repo``, a fresh copy of the template, and ``tmp``, an empty scratch folder."""

    repo: Path
    tmp: Path
    _pipe: Any = field(default=None, repr=False)

    @property
    def marker(self) -> Path:
        return self.tmp / MARKER

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            self._pipe = DDPMPipeline.from_pretrained(self.repo)
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    @property
    def unet(self) -> Any:
        return self.pipe.unet

    def edit_json(self, name: str, **changes: Any) -> Path:
        path = self.repo / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
        return path

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.repo / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    def weights_as_bin(self, how: str = "zip") -> Path:
        """Replace the safetensors file by the same tensors in a torch.save ``.bin``."""
        from safetensors.torch import load_file

        state = load_file(self.repo / WEIGHTS)
        (self.repo / WEIGHTS).unlink()
        torch.save(state, self.repo / BIN, _use_new_zipfile_serialization=how == "zip")
        return self.repo / BIN

    def damage(self, name: str, how: str) -> Path:
        return damage_file(self.repo / name, how)


def load_unet(ctx: Ctx) -> Any:
    return UNet2DModel.from_pretrained(ctx.repo)


def load_pipeline(ctx: Ctx) -> Any:
    return DDPMPipeline.from_pretrained(ctx.repo)


def run_cli(ctx: Ctx, *argv: str) -> tuple[int, str]:
    """``ddpm <argv>`` in-process: (exit status, stderr)."""
    from ddpm.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main([expand(a, ctx) for a in argv])
    return status, err.getvalue()


def _img2img_edit(ctx: Ctx, *options: str, image: str = "digit.png") -> tuple[int, str]:
    """``ddpm edit {tmp}/<image> --model {repo} <options>``, with ``digit.png`` a real image, ``notes.png`` text and
    ``pipe.png`` a FIFO; nothing may be written to ``{tmp}/out``."""
    from PIL import Image

    Image.new("RGB", (16, 16)).save(ctx.tmp / "digit.png")
    (ctx.tmp / "notes.png").write_text("not an image")
    os.mkfifo(ctx.tmp / "pipe.png")
    result = run_cli(ctx, "edit", f"{{tmp}}/{image}", "--model", "{repo}", "--out", "{tmp}/out", *options)
    assert not (ctx.tmp / "out").exists(), "ddpm edit wrote its folder before refusing"
    return result


def _img2img_pipe(ctx: Ctx) -> Any:
    from ddpm import ImageToImagePipeline

    return ImageToImagePipeline.from_pretrained(ctx.repo)


# ---------------------------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: Short, unique, used as the pytest id.
        area: The table section.
        what: The bad input, in words.
        run: Does what a user would do; must raise ``error`` (or, for CLI cases, return ``(status, stderr)``).
        error: The exception class expected (for CLI cases: None, and the exit status must be 1).
        says: Fragments the message must contain; ``{repo}`` and ``{tmp}`` are replaced by the case's folders.
    """

    id: str
    area: str
    what: str
    run: Callable[[Ctx], Any]
    error: type[BaseException] | None
    says: tuple[str, ...] = ()


def _steps(*steps: Callable[[Ctx], object]) -> Callable[[Ctx], Any]:
    """A case's ``run`` made of steps done in order; what the last one returns is the outcome."""

    def run(ctx: Ctx) -> Any:
        out: object = None
        for step in steps:
            out = step(ctx)
        return out

    return run


def _unsafe(how: str, loader: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
    def run(ctx: Ctx) -> Any:
        (ctx.repo / WEIGHTS).unlink()
        write_malicious_bin(ctx.repo / BIN, ctx.marker, how)
        return loader(ctx)

    return run


def _damaged_weights_case(name: str, how: str) -> Case:
    """``name`` (the safetensors file, or the ``.bin`` that replaces it) damaged ``how`` (see ``damage_file``)."""
    fmt = "bin" if name == BIN else "safetensors"

    def run(ctx: Ctx) -> Any:
        if fmt == "bin":
            ctx.weights_as_bin()
        ctx.damage(name, how)
        return load_unet(ctx)

    says = ("{repo}/" + name, "empty" if how == "empty" else "damaged", "download it again")
    return Case(f"weights-{fmt}-{how.replace(' ', '-')}", "damaged weights", f"{how} `{name}`", run, WeightsError, says)


def _config_case(id: str, what: str, changes: dict[str, Any], *says: str, error: type = ConfigError) -> Case:
    def run(ctx: Ctx) -> Any:
        ctx.edit_json("config.json", **changes)
        return load_unet(ctx)

    return Case(id, "UNet config.json", what, run, error, ("{repo}/config.json", *says))


def _scheduler_case(id: str, what: str, changes: dict[str, Any], *says: str) -> Case:
    def run(ctx: Ctx) -> Any:
        ctx.edit_json("scheduler_config.json", **changes)
        return DDPMScheduler.from_pretrained(ctx.repo)

    return Case(id, "scheduler_config.json", what, run, ConfigError, ("{repo}/scheduler_config.json", *says))


def _index_case(id: str, what: str, content: Any, *says: str, loader: Callable[[Ctx], Any] | None = None) -> Case:
    def run(ctx: Ctx) -> Any:
        ctx.write("model_index.json", content if isinstance(content, str) else json.dumps(content))
        return (loader or (lambda c: DiffusionPipeline.from_pretrained(c.repo)))(ctx)

    return Case(id, "model_index.json", what, run, ConfigError, ("{repo}/model_index.json", *says))


def _runtime(id: str, area: str, what: str, run: Callable[[Ctx], Any], error: type, *says: str) -> Case:
    return Case(id, area, what, run, error, says)


def _x(*shape: int, **kwargs: Any) -> torch.Tensor:
    return torch.randn(*shape, **kwargs)


class NaNUNet(torch.nn.Module):
    """Wraps a UNet and returns NaN from the third call on: a model that blows up mid-sampling."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet, self.config, self.calls = unet, unet.config, 0

    def forward(self, sample: torch.Tensor, t: Any) -> Any:
        self.calls += 1
        out = self.unet(sample, t)
        return type(out)(sample=out.sample * float("nan")) if self.calls >= 3 else out


def _nan_pipeline(ctx: Ctx) -> Any:
    pipe = DDPMPipeline(unet=NaNUNet(ctx.unet), scheduler=ctx.pipe.scheduler)  # type: ignore[arg-type]  # a test double
    pipe.set_progress_bar_config(disable=True)
    return pipe(num_inference_steps=5, check_finite=True)


def _set_timesteps(n: Any, cls: type = DDPMScheduler) -> Callable[[Ctx], Any]:
    return lambda ctx: cls().set_timesteps(n)


def _step_with(
    model_output: torch.Tensor, timestep: Any, *, set_steps: bool = True, cls: type = DDPMScheduler
) -> Callable[[Ctx], Any]:
    def run(ctx: Ctx) -> Any:
        s = cls()
        if set_steps:
            s.set_timesteps(10)
        return s.step(model_output, timestep, _x(1, 3, 8, 8))

    return run


def _save_case(id: str, what: str, run: Callable[[Ctx], Any], *says: str) -> Case:
    return Case(id, "saving", what, run, OverwriteError, ("refusing to save" if not says else says[0], *says[1:]))


def _save_into(setup: Callable[[Path], object], save: Callable[[Ctx, Path], Any]) -> Callable[[Ctx], Any]:
    """Prepare ``<tmp>/target`` with ``setup``, then save something into it."""

    def run(ctx: Ctx) -> Any:
        target = ctx.tmp / "target"
        target.mkdir()
        setup(target)
        return save(ctx, target)

    return run


def _save_unet_into(setup: Callable[[Path], object]) -> Callable[[Ctx], Any]:
    return _save_into(setup, lambda ctx, target: ctx.unet.save_pretrained(target))


def _save_pipeline_into(setup: Callable[[Path], object]) -> Callable[[Ctx], Any]:
    return _save_into(setup, lambda ctx, target: ctx.pipe.save_pretrained(target))


def _save_scheduler_into(setup: Callable[[Path], object]) -> Callable[[Ctx], Any]:
    return _save_into(setup, lambda ctx, target: DDPMScheduler().save_pretrained(target))


def _write_json(name: str, data: Any) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    return setup


SHARD = "diffusion_pytorch_model-{:05d}-of-0000"  # the start of shard k's name (3 or 4 shards)
SHARD_INDEX = "diffusion_pytorch_model.safetensors.index.json"


def _resave(ctx: Ctx, **kwargs: Any) -> None:
    """Save the template's UNet into the repo folder again, with ``save_pretrained`` options."""
    ctx.unet.save_pretrained(ctx.repo, overwrite=True, **kwargs)  # overwrite: the folder also holds a pipeline


def _sharded(ctx: Ctx) -> None:
    """The repo's weights (2.8 MB) as safetensors shards of at most 1.2 MB plus their index (the single file
    removed)."""
    _resave(ctx, max_shard_size=1_200_000)
    assert len(_shards(ctx)) >= 3 and not (ctx.repo / WEIGHTS).exists()


def _shards(ctx: Ctx) -> list[Path]:
    """The shard files the index lists, in order."""
    weight_map = json.loads((ctx.repo / SHARD_INDEX).read_text())["weight_map"]
    return [ctx.repo / name for name in sorted(set(weight_map.values()))]


def _edit_index(ctx: Ctx, shard: str) -> None:
    index = json.loads((ctx.repo / SHARD_INDEX).read_text())
    index["weight_map"]["conv_in.weight"] = shard
    (ctx.repo / SHARD_INDEX).write_text(json.dumps(index))


def _rewrite_shard(ctx: Ctx, k: int, change: Callable[[dict[str, torch.Tensor]], object]) -> None:
    from safetensors.torch import load_file, save_file

    path = _shards(ctx)[k - 1]
    state = load_file(path)
    change(state)
    save_file(state, str(path))


def _duplicate_tensor(ctx: Ctx) -> None:
    """Copy ``conv_in.weight`` (in shard 1) into shard 2 as well."""
    from safetensors.torch import load_file

    tensor = load_file(_shards(ctx)[0])["conv_in.weight"]
    _rewrite_shard(ctx, 2, lambda state: state.update({"conv_in.weight": tensor}))


def _drop_tensor(ctx: Ctx) -> None:
    _rewrite_shard(ctx, 1, lambda state: state.pop("conv_in.weight"))


UNSAFE_SAYS = ("{repo}/" + BIN, "refused", "nothing in it ran", "safetensors")

CASES: list[Case] = [
    # --- pickles carrying code
    Case(
        "pickle-zip-unet",
        "pickled weights carrying code",
        "`.bin` (torch.save zip) whose unpickling runs `os.system`: `UNet2DModel.from_pretrained`",
        _unsafe("zip", load_unet),
        UnsafeCheckpointError,
        (*UNSAFE_SAYS, "posix.system"),
    ),
    Case(
        "pickle-legacy-unet",
        "pickled weights carrying code",
        "the same in torch's legacy (non-zip) format",
        _unsafe("legacy", load_unet),
        UnsafeCheckpointError,
        UNSAFE_SAYS,
    ),
    Case(
        "pickle-plain-unet",
        "pickled weights carrying code",
        "a plain `pickle.dump` (protocol 2) of the same",
        _unsafe("pickle", load_unet),
        UnsafeCheckpointError,
        UNSAFE_SAYS,
    ),
    Case(
        "pickle-plain5-unet",
        "pickled weights carrying code",
        "a plain `pickle.dump` with protocol 5",
        _unsafe("pickle5", load_unet),
        UnsafeCheckpointError,
        (*UNSAFE_SAYS, "posix.system"),
    ),
    Case(
        "pickle-zip-pipeline",
        "pickled weights carrying code",
        "malicious `.bin`: `DDPMPipeline.from_pretrained`",
        _unsafe("zip", load_pipeline),
        UnsafeCheckpointError,
        UNSAFE_SAYS,
    ),
    Case(
        "pickle-zip-diffusionpipeline",
        "pickled weights carrying code",
        "malicious `.bin`: `DiffusionPipeline.from_pretrained`",
        _unsafe("zip", lambda c: DiffusionPipeline.from_pretrained(c.repo)),
        UnsafeCheckpointError,
        UNSAFE_SAYS,
    ),
    Case(
        "pickle-zip-cli",
        "pickled weights carrying code",
        "malicious `.bin`: `ddpm sample FOLDER` (exit status 1)",
        _unsafe("zip", lambda c: run_cli(c, "sample", "{repo}", "--steps", "1", "--out", "{tmp}/out", "--no-progress")),
        None,
        ("ddpm sample: error:", *UNSAFE_SAYS),
    ),
    Case(
        "pickle-training-checkpoint",
        "pickled weights carrying code",
        "malicious `checkpoint.pt`: `Trainer.train(resume=True)` (`ddpm train --resume`)",
        _steps(lambda c: write_malicious_bin(_run_folder(c) / "checkpoint.pt", c.marker), lambda c: _resume(c)),
        UnsafeCheckpointError,
        ("{tmp}/run/checkpoint.pt", "refused", "nothing in it ran"),
    ),
    Case(
        "checkpoint-truncated",
        "training checkpoint (--resume)",
        "a truncated `checkpoint.pt`",
        _steps(
            lambda c: _trained(c),
            lambda c: damage_file(c.tmp / "run" / "checkpoint.pt", "truncated"),
            lambda c: _resume(c),
        ),
        WeightsError,
        ("training checkpoint {tmp}/run/checkpoint.pt is damaged", "start over without it"),
    ),
    Case(
        "checkpoint-foreign",
        "training checkpoint (--resume)",
        "a `checkpoint.pt` that is a plain state dict",
        _steps(
            lambda c: torch.save({"conv_in.weight": torch.zeros(1)}, _run_folder(c) / "checkpoint.pt"),
            lambda c: _resume(c),
        ),
        TrainingError,
        ("{tmp}/run/checkpoint.pt is not a ddpm training checkpoint",),
    ),
    Case(
        "checkpoint-incomplete",
        "training checkpoint (--resume)",
        "a `checkpoint.pt` with the right format tag only",
        _steps(
            lambda c: torch.save({"format": CHECKPOINT_FORMAT}, _run_folder(c) / "checkpoint.pt"),
            lambda c: _resume(c),
        ),
        TrainingError,
        ("incomplete ddpm training checkpoint", "lacks step, elapsed_seconds, model"),
    ),
    # --- damaged weights
    *[
        _damaged_weights_case(name, how)
        for name in (WEIGHTS, BIN)
        for how in ("truncated", "garbage", "empty") + (("huge header",) if name == WEIGHTS else ())
    ],
    Case(
        "weights-bin-list",
        "damaged weights",
        "`.bin` holding a list of tensors instead of a dict",
        _steps(lambda c: c.weights_as_bin(), lambda c: torch.save([torch.zeros(1)], c.repo / BIN), load_unet),
        WeightsError,
        ("{repo}/" + BIN, "holds a list"),
    ),
    Case(
        "weights-bin-non-tensor",
        "damaged weights",
        '`.bin` whose dict holds a non-tensor (`"epoch": 3`)',
        _steps(
            lambda c: c.weights_as_bin(),
            lambda c: torch.save({"epoch": 3, "conv_in.bias": torch.zeros(32)}, c.repo / BIN),
            load_unet,
        ),
        WeightsError,
        ("{repo}/" + BIN, "'epoch' (int)"),
    ),
    # --- tensors that do not fit
    Case(
        "weights-mismatch",
        "weights that do not fit the config",
        "one tensor missing, one unexpected, one of the wrong shape",
        lambda c: _mismatch(c),
        WeightsError,
        (
            "{repo}/" + WEIGHTS,
            "missing (1): conv_out.bias (3,)",
            "unexpected (1): extra.weight (2, 2)",
            "wrong shape (1): conv_in.weight: file (32, 3, 5, 5), model (32, 3, 3, 3)",
        ),
    ),
    Case(
        "weights-other-config",
        "weights that do not fit the config",
        "weights of another config (`layers_per_block` 1 → 3): dozens of tensors missing",
        _steps(lambda c: c.edit_json("config.json", layers_per_block=3), load_unet),
        WeightsError,
        ("{repo}/" + WEIGHTS, "missing (", "... and ", " more", "is the config.json beside them the right one?"),
    ),
    # --- config.json
    Case(
        "config-not-json",
        "UNet config.json",
        '`config.json` that is not JSON (`{"in_channels": 3,`)',
        _steps(lambda c: c.write("config.json", '{"in_channels": 3,'), load_unet),
        ConfigError,
        ("{repo}/config.json", "is not valid JSON", "line 1"),
    ),
    Case(
        "config-empty",
        "UNet config.json",
        "empty `config.json`",
        _steps(lambda c: c.write("config.json", ""), load_unet),
        ConfigError,
        ("{repo}/config.json", "not valid JSON"),
    ),
    Case(
        "config-list",
        "UNet config.json",
        "`config.json` holding a list",
        _steps(lambda c: c.write("config.json", "[3]"), load_unet),
        ConfigError,
        ("{repo}/config.json", "must hold a JSON object", "found list"),
    ),
    Case(
        "config-not-utf8",
        "UNet config.json",
        "`config.json` that is not UTF-8 text",
        _steps(lambda c: c.write("config.json", b"\xff\xfe{\x00"), load_unet),
        ConfigError,
        ("{repo}/config.json", "cannot read"),
    ),
    Case(
        "config-deep",
        "UNet config.json",
        "`config.json` nesting lists 100,000 deep",
        _steps(lambda c: c.write("config.json", "[" * 100_000 + "]" * 100_000), load_unet),
        ConfigError,
        ("{repo}/config.json", "too deeply"),
    ),
    Case(
        "config-huge",
        "UNet config.json",
        "a 17 MB `config.json`",
        _steps(lambda c: c.write("config.json", b" " * (17 * 2**20)), load_unet),
        ConfigError,
        ("{repo}/config.json", "bytes, more than the 16,777,216 a config file may have"),
    ),
    _config_case(
        "config-string-for-list",
        "a string where a list of ints belongs",
        {"block_out_channels": "32,64"},
        "'block_out_channels'",
        "'32,64'",
        "expected a list of integers",
    ),
    _config_case(
        "config-negative-channels",
        "a negative channel count",
        {"in_channels": -3},
        "'in_channels'",
        "-3",
        "expected a positive integer",
    ),
    _config_case(
        "config-negative-block",
        "a negative entry in `block_out_channels`",
        {"block_out_channels": [32, -64]},
        "'block_out_channels'",
        "(32, -64)",
        "expected positive integers",
    ),
    _config_case(
        "config-zero-groups",
        "zero GroupNorm groups",
        {"norm_num_groups": 0},
        "'norm_num_groups'",
        "0",
        "a positive integer",
    ),
    _config_case(
        "config-groups-divide",
        "groups that do not divide the channels",
        {"norm_num_groups": 24},
        "'norm_num_groups'",
        "24",
        "divisible",
    ),
    _config_case(
        "config-list-lengths",
        "block lists of different lengths",
        {"down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"]},
        "'down_block_types'",
        "expected one entry per level, i.e. 2",
    ),
    _config_case(
        "config-block-type",
        "an unknown block type",
        {"up_block_types": ["AttnUpBlock2D", "UpBlock3D"]},
        "'up_block_types'",
        "'UpBlock3D'",
        "allowed: UpBlock2D, AttnUpBlock2D",
    ),
    _config_case(
        "config-bool-for-int",
        "`true` where an integer belongs",
        {"layers_per_block": True},
        "'layers_per_block'",
        "True",
        "expected an integer",
    ),
    _config_case(
        "config-fraction-for-int",
        "`1.5` where an integer belongs",
        {"layers_per_block": 1.5},
        "'layers_per_block'",
        "1.5",
        "expected an integer",
    ),
    _config_case(
        "config-nan", "`NaN` for `norm_eps`", {"norm_eps": float("nan")}, "'norm_eps'", "nan", "expected a number"
    ),
    _config_case(
        "config-huge-int",
        "a huge `layers_per_block` (10**6; would hang building the network)",
        {"layers_per_block": 10**6},
        "'layers_per_block'",
        "1000000",
        "up to 64",
    ),
    _config_case(
        "config-overflow",
        "an `in_channels` beyond int64 (10**30)",
        {"in_channels": 10**30},
        "'in_channels'",
        "up to 65536",
    ),
    _config_case(
        "config-null", "`null` for `in_channels`", {"in_channels": None}, "'in_channels'", "None", "expected an integer"
    ),
    _config_case(
        "config-dict",
        "an object where a string belongs",
        {"act_fn": {"name": "silu"}},
        "'act_fn'",
        "{'name': 'silu'}",
        "expected a string",
    ),
    _config_case(
        "config-long-value",
        "a 1 MB string value (the message stays short)",
        {"act_fn": "x" * 2**20},
        "'act_fn'",
        "characters)",
    ),
    _config_case(
        "config-unsupported",
        "a diffusers option ddpm does not implement",
        {"resnet_time_scale_shift": "spatial"},
        "'resnet_time_scale_shift'",
        "'spatial'",
        "does not implement",
        error=UnsupportedConfigError,
    ),
    # --- scheduler_config.json
    Case(
        "scheduler-not-json",
        "scheduler_config.json",
        "`scheduler_config.json` that is not JSON",
        _steps(
            lambda c: c.write("scheduler_config.json", "beta_start = 0.0001"),
            lambda c: DDPMScheduler.from_pretrained(c.repo),
        ),
        ConfigError,
        ("{repo}/scheduler_config.json", "is not valid JSON"),
    ),
    _scheduler_case(
        "scheduler-beta-schedule",
        "an unknown `beta_schedule`",
        {"beta_schedule": "cosine"},
        "'beta_schedule'",
        "'cosine'",
        "'linear', 'scaled_linear', 'squaredcos_cap_v2', 'sigmoid'",
    ),
    _scheduler_case(
        "scheduler-zero-steps",
        "`num_train_timesteps: 0`",
        {"num_train_timesteps": 0},
        "'num_train_timesteps'",
        "0",
        "at least 1",
    ),
    _scheduler_case(
        "scheduler-huge-steps",
        "`num_train_timesteps: 10**12` (would exhaust memory)",
        {"num_train_timesteps": 10**12},
        "'num_train_timesteps'",
        "at most 100000",
    ),
    _scheduler_case("scheduler-beta-range", "`beta_end: 1.5`", {"beta_end": 1.5}, "'beta_end'", "1.5", "(0, 1)"),
    _scheduler_case(
        "scheduler-beta-string",
        '`beta_start: "0.0001"` (a string)',
        {"beta_start": "0.0001"},
        "'beta_start'",
        "'0.0001'",
        "expected a number",
    ),
    _scheduler_case(
        "scheduler-trained-betas",
        "`trained_betas` of the wrong length",
        {"trained_betas": [0.1, 0.2]},
        "'trained_betas'",
        "num_train_timesteps=1000 values, not 2",
    ),
    _scheduler_case(
        "scheduler-prediction",
        "an unknown `prediction_type`",
        {"prediction_type": "noise"},
        "'prediction_type'",
        "'noise'",
        "'epsilon', 'sample', 'v_prediction'",
    ),
    _scheduler_case(
        "scheduler-variance",
        "an unknown `variance_type`",
        {"variance_type": "fixed"},
        "'variance_type'",
        "'fixed'",
        "'fixed_small'",
    ),
    _scheduler_case(
        "scheduler-zero-snr-one-step",
        "`rescale_betas_zero_snr` with one timestep (0/0)",
        {"rescale_betas_zero_snr": True, "num_train_timesteps": 1, "trained_betas": None},
        "'num_train_timesteps'",
        "at least 2 timesteps",
    ),
    _scheduler_case(
        "scheduler-defaults-list",
        "`_use_default_values: 5`",
        {"_use_default_values": 5},
        "_use_default_values",
        "expected a list of config key names",
    ),
    # --- model_index.json
    _index_case(
        "index-not-json", "`model_index.json` that is not JSON", "{'_class_name': 'DDPMPipeline'}", "is not valid JSON"
    ),
    _index_case(
        "index-pipeline-class",
        "an unknown pipeline class",
        {**MODEL_INDEX, "_class_name": "StableDiffusionPipeline"},
        "'StableDiffusionPipeline' is not a ddpm pipeline",
        "DDIMPipeline, DDPMPipeline, PNDMPipeline",
    ),
    _index_case(
        "index-unet-class",
        "an unknown UNet class",
        {**MODEL_INDEX, "unet": ["diffusers", "UNet2DConditionModel"]},
        "UNet2DConditionModel",
        "only UNet2DModel",
    ),
    _index_case(
        "index-scheduler-class",
        "an unknown scheduler class",
        {**MODEL_INDEX, "scheduler": ["diffusers", "LMSDiscreteScheduler"]},
        "'LMSDiscreteScheduler'",
        "supported: DDPMScheduler, DDIMScheduler, PNDMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler",
    ),
    _index_case(
        "index-entry-shape",
        "a component entry that is not `[library, class]`",
        {**MODEL_INDEX, "scheduler": "DDPMScheduler"},
        "'scheduler' entry is 'DDPMScheduler'",
        "expected [library, class name]",
    ),
    _index_case(
        "index-class-list",
        "`_class_name` that is a list",
        {**MODEL_INDEX, "_class_name": ["DDPMPipeline"]},
        "_class_name has value ['DDPMPipeline']",
    ),
    _index_case(
        "index-info",
        "a malformed entry, read by `ddpm info`",
        {**MODEL_INDEX, "scheduler": ["diffusers"]},
        "'scheduler' entry is ['diffusers']",
        loader=lambda c: __import__("ddpm.commands.info", fromlist=["describe"]).describe(str(c.repo)),
    ),
    # --- runtime: the UNet
    _runtime(
        "unet-channels",
        "UNet input",
        "4 channels into a 3-channel UNet",
        lambda c: c.unet(_x(1, 4, 16, 16), 10),
        ValueError,
        "4 channels",
        "in_channels=3",
    ),
    _runtime(
        "unet-spatial",
        "UNet input",
        "a 15×16 image (not divisible by 2)",
        lambda c: c.unet(_x(1, 3, 15, 16), 10),
        ValueError,
        "15x16",
        "not divisible by 2",
    ),
    _runtime(
        "unet-ndim",
        "UNet input",
        "a 3-D tensor",
        lambda c: c.unet(_x(3, 16, 16), 10),
        ValueError,
        "(B, C, H, W)",
        "(3, 16, 16)",
    ),
    _runtime(
        "unet-numpy",
        "UNet input",
        "a numpy array",
        lambda c: c.unet(_x(1, 3, 16, 16).numpy(), 10),
        TypeError,
        "torch.Tensor",
        "ndarray",
    ),
    _runtime(
        "unet-int-dtype",
        "UNet input",
        "an integer image tensor",
        lambda c: c.unet(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 10),
        ValueError,
        "torch.uint8",
        "floating-point",
    ),
    _runtime(
        "unet-dtype",
        "UNet input",
        "float64 input into a float32 UNet",
        lambda c: c.unet(_x(1, 3, 16, 16, dtype=torch.float64), 10),
        ValueError,
        "torch.float64",
        "torch.float32",
    ),
    _runtime(
        "unet-device",
        "UNet input",
        "input on another device than the weights (`meta` here)",
        lambda c: c.unet(_x(1, 3, 16, 16, device="meta"), 10),
        ValueError,
        "sample is on meta",
        "model is on cpu",
    ),
    _runtime(
        "unet-nan-timestep",
        "UNet input",
        "timestep `nan`",
        lambda c: c.unet(_x(1, 3, 16, 16), float("nan")),
        ValueError,
        "timestep must be finite",
        "nan",
    ),
    _runtime(
        "unet-inf-timestep",
        "UNet input",
        "timestep tensor holding `inf`",
        lambda c: c.unet(_x(2, 3, 16, 16), torch.tensor([1.0, float("inf")])),
        ValueError,
        "non-finite",
        "inf",
    ),
    _runtime(
        "unet-timestep-shape",
        "UNet input",
        "3 timesteps for a batch of 2",
        lambda c: c.unet(_x(2, 3, 16, 16), torch.tensor([1, 2, 3])),
        ValueError,
        "(3,)",
        "batch of 2",
    ),
    _runtime(
        "unet-timestep-type",
        "UNet input",
        'timestep `"10"` (a string)',
        lambda c: c.unet(_x(1, 3, 16, 16), "10"),
        TypeError,
        "number or a tensor",
        "'10'",
    ),
    # --- runtime: schedulers
    _runtime(
        "sched-zero-steps",
        "scheduler input",
        "`set_timesteps(0)`",
        _set_timesteps(0),
        ValueError,
        "num_inference_steps=0",
        "at least 1",
    ),
    _runtime(
        "sched-too-many-steps",
        "scheduler input",
        "`set_timesteps(1001)` with 1000 training steps",
        _set_timesteps(1001),
        ValueError,
        "1001",
        "at most 1000",
    ),
    _runtime(
        "sched-fraction-steps",
        "scheduler input",
        "`set_timesteps(2.5)`",
        _set_timesteps(2.5),
        TypeError,
        "must be an int",
    ),
    _runtime(
        "sched-pndm-steps",
        "scheduler input",
        "`PNDMScheduler.set_timesteps(3)`",
        _set_timesteps(3, PNDMScheduler),
        ValueError,
        "at least 4",
        "skip_prk_steps=True",
    ),
    _runtime(
        "sched-step-first",
        "scheduler input",
        "`step()` before `set_timesteps()`",
        _step_with(_x(1, 3, 8, 8), 999, set_steps=False, cls=DDIMScheduler),  # DDPM may, as in diffusers
        RuntimeError,
        "set_timesteps",
    ),
    _runtime(
        "sched-wrong-timestep",
        "scheduler input",
        "`step()` with a timestep that is not a training timestep",
        _step_with(_x(1, 3, 8, 8), 1000),
        ValueError,
        "timestep 1000",
        "expects timestep 900 at step 0",
    ),
    _runtime(
        "sched-output-shape",
        "scheduler input",
        "model output of another shape than the sample",
        _step_with(_x(1, 3, 4, 4), 900),
        ValueError,
        "(1, 3, 4, 4)",
        "(1, 3, 8, 8)",
    ),
    _runtime(
        "sched-eta",
        "scheduler input",
        "`DDIMScheduler(eta=2)`",
        lambda c: DDIMScheduler(eta=2.0),
        ValueError,
        "eta",
        "[0, 1]",
    ),
    # --- runtime: pipelines
    _runtime(
        "pipe-batch-zero",
        "pipeline call",
        "`batch_size=0`",
        lambda c: c.pipe(batch_size=0),
        ValueError,
        "batch_size must be at least 1",
    ),
    _runtime(
        "pipe-batch-float",
        "pipeline call",
        "`batch_size=2.0`",
        lambda c: c.pipe(batch_size=2.0),
        TypeError,
        "batch_size must be an int",
    ),
    _runtime(
        "pipe-steps-zero",
        "pipeline call",
        "`num_inference_steps=0`",
        lambda c: c.pipe(num_inference_steps=0),
        ValueError,
        "num_inference_steps must be at least 1",
    ),
    _runtime(
        "pipe-steps-too-many",
        "pipeline call",
        "`num_inference_steps=5000`",
        lambda c: c.pipe(num_inference_steps=5000),
        ValueError,
        "num_inference_steps=5000",
        "at most 1000",
    ),
    _runtime(
        "pipe-output-type",
        "pipeline call",
        '`output_type="jpg"`',
        lambda c: c.pipe(num_inference_steps=1, output_type="jpg"),
        ValueError,
        "'jpg'",
        "'pil', 'np', 'pt'",
    ),
    _runtime(
        "pipe-generator-int",
        "pipeline call",
        "`generator=42`",
        lambda c: c.pipe(num_inference_steps=1, generator=42),
        TypeError,
        "torch.Generator",
        "42",
    ),
    _runtime(
        "pipe-generator-count",
        "pipeline call",
        "2 generators for `batch_size=3`",
        lambda c: c.pipe(batch_size=3, num_inference_steps=1, generator=[torch.Generator()] * 2),
        ValueError,
        "list of 2 generators for batch_size=3",
    ),
    _runtime(
        "pipe-generator-item",
        "pipeline call",
        "a list holding a seed instead of a generator",
        lambda c: c.pipe(num_inference_steps=1, generator=[0]),
        TypeError,
        "generator[0]",
        "not a torch.Generator",
    ),
    _runtime(
        "pipe-eta-ddpm",
        "pipeline call",
        "`eta=0.5` with a DDPM scheduler",
        lambda c: c.pipe(num_inference_steps=1, eta=0.5),
        ValueError,
        "eta=0.5",
        "DDIMScheduler",
    ),
    _runtime(
        "pipe-eta-nan",
        "pipeline call",
        "`eta=nan`",
        lambda c: c.pipe(num_inference_steps=1, eta=float("nan")),
        ValueError,
        "eta must be a finite number",
    ),
    _runtime(
        "pipe-callback-inputs",
        "pipeline call",
        '`callback_on_step_end_tensor_inputs="latents"` (a string)',
        lambda c: c.pipe(
            num_inference_steps=1, callback_on_step_end=lambda *a: None, callback_on_step_end_tensor_inputs="latents"
        ),
        TypeError,
        "list of names",
    ),
    _runtime(
        "pipe-nan",
        "pipeline call",
        "the UNet returns NaN from its 3rd call, `check_finite=True`",
        _nan_pipeline,
        FloatingPointError,
        "NaN or infinite",
        "at step 2 of 5",
        "(timestep 400)",
    ),
    # --- saving
    _save_case(
        "save-unet-into-pipeline",
        "`unet.save_pretrained` into a pipeline folder",
        _save_unet_into(_write_json("model_index.json", MODEL_INDEX)),
        "refusing to save a UNet2DModel",
        "model_index.json (a pipeline; save the model into its unet/ folder)",
        "overwrite=True",
    ),
    _save_case(
        "save-unet-over-other-model",
        "`unet.save_pretrained` over another model's `config.json`",
        _save_unet_into(_write_json("config.json", {"_class_name": "AutoencoderKL"})),
        "config.json (_class_name 'AutoencoderKL')",
    ),
    _save_case(
        "save-unet-over-unreadable",
        "`unet.save_pretrained` over a `config.json` that is not JSON",
        _save_unet_into(lambda f: (f / "config.json").write_text("{")),
        "config.json (no readable _class_name)",
    ),
    _save_case(
        "save-scheduler-into-pipeline",
        "`scheduler.save_pretrained` into a pipeline folder",
        _save_scheduler_into(_write_json("model_index.json", MODEL_INDEX)),
        "refusing to save a DDPMScheduler",
        "save the scheduler into its scheduler/ folder",
    ),
    _save_case(
        "save-pipeline-into-unet",
        "`pipe.save_pretrained` into a bare UNet folder",
        _save_pipeline_into(_write_json("config.json", {"_class_name": "UNet2DModel"})),
        "refusing to save a DDPMPipeline",
        "config.json (a model without model_index.json, not a pipeline)",
    ),
    _save_case(
        "save-pipeline-over-other",
        "`pipe.save_pretrained` over another pipeline class",
        _save_pipeline_into(_write_json("model_index.json", {"_class_name": "StableDiffusionPipeline"})),
        "model_index.json (_class_name 'StableDiffusionPipeline')",
    ),
    _save_case(
        "save-pipeline-other-unet",
        "`pipe.save_pretrained` where `unet/` holds another model",
        _save_pipeline_into(_write_json("unet/config.json", {"_class_name": "UNet2DConditionModel"})),
        "refusing to save a UNet2DModel to {tmp}/target/unet:",
        "config.json (_class_name 'UNet2DConditionModel')",
    ),
    _save_case(
        "save-to-file",
        "`save_pretrained` to a path that is a file",
        _steps(lambda c: (c.tmp / "file").write_text("x"), lambda c: c.unet.save_pretrained(c.tmp / "file")),
        "cannot save a UNet2DModel to {tmp}/file: it is a file",
    ),
    # --- missing things
    Case(
        "missing-folder",
        "missing files",
        "a local path that does not exist",
        lambda c: UNet2DModel.from_pretrained(c.tmp / "nope"),
        CheckpointNotFoundError,
        ("no such folder",),
    ),
    Case(
        "missing-weights",
        "missing files",
        "a folder without weights",
        _steps(lambda c: (c.repo / WEIGHTS).unlink(), load_unet),
        CheckpointNotFoundError,
        ("no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin",),
    ),
    Case(
        "missing-variant",
        "missing files",
        '`from_pretrained(variant="fp16")` where only the plain weights exist',
        lambda c: UNet2DModel.from_pretrained(c.repo, variant="fp16"),
        VariantNotFoundError,
        ("no diffusion_pytorch_model.fp16.safetensors", "the folder holds diffusion_pytorch_model.safetensors"),
    ),
    Case(
        "missing-plain-weights-only-variant",
        "missing files",
        "only `fp16` variant weights, loaded without `variant`",
        _steps(lambda c: _resave(c, variant="fp16"), lambda c: (c.repo / WEIGHTS).unlink(), load_unet),
        CheckpointNotFoundError,
        ("diffusion_pytorch_model.fp16.safetensors", "pass variant='fp16'"),
    ),
    Case(
        "missing-shard",
        "missing files",
        "a sharded checkpoint with one shard deleted",
        _steps(_sharded, lambda c: _shards(c)[1].unlink(), load_unet),
        CheckpointNotFoundError,
        ("{repo}/" + SHARD_INDEX, "lists the shard " + SHARD.format(2), "incomplete"),
    ),
    Case(
        "shard-index-escapes",
        "damaged weights",
        "a shard index whose `weight_map` points outside the folder (`../x.safetensors`)",
        _steps(_sharded, lambda c: _edit_index(c, "../x.safetensors"), load_unet),
        WeightsError,
        ("{repo}/" + SHARD_INDEX, "plain file names", "../x.safetensors"),
    ),
    Case(
        "shard-tensor-twice",
        "damaged weights",
        "the same tensor in two shards",
        _steps(_sharded, _duplicate_tensor, load_unet),
        WeightsError,
        ("{repo}/" + SHARD_INDEX, "conv_in.weight", "is in two shards"),
    ),
    Case(
        "shard-lacks-tensor",
        "damaged weights",
        "a shard that lacks a tensor its index puts there",
        _steps(_sharded, _drop_tensor, load_unet),
        WeightsError,
        ("{repo}/" + SHARD.format(1), "lacks 1 tensor", "conv_in.weight"),
    ),
    # --- loading and saving options
    _runtime(
        "dtype-and-torch-dtype-differ",
        "loading options",
        "`from_pretrained(torch_dtype=torch.float16, dtype=torch.bfloat16)`",
        lambda c: UNet2DModel.from_pretrained(c.repo, torch_dtype=torch.float16, dtype=torch.bfloat16),
        ValueError,
        "torch_dtype=torch.float16 and dtype=torch.bfloat16 disagree",
    ),
    _runtime(
        "device-map-two-devices",
        "loading options",
        '`from_pretrained(device_map={"conv_in": "cpu", "": "mps"})`: a model split over devices',
        lambda c: UNet2DModel.from_pretrained(c.repo, device_map={"conv_in": "cpu", "": "mps"}),
        NotImplementedError,
        "spreads the model over 2 devices",
        "ddpm keeps a model on one device",
    ),
    _runtime(
        "device-map-not-a-device",
        "loading options",
        '`from_pretrained(device_map="gpu")`',
        lambda c: UNet2DModel.from_pretrained(c.repo, device_map="gpu"),
        ValueError,
        "device_map='gpu' is neither a device",
    ),
    _runtime(
        "variant-with-path",
        "loading options",
        '`from_pretrained(variant="../fp16")`',
        lambda c: UNet2DModel.from_pretrained(c.repo, variant="../fp16"),
        ValueError,
        "variant must be a name such as 'fp16'",
    ),
    _runtime(
        "save-bad-shard-size",
        "loading options",
        '`save_pretrained(max_shard_size="10XB")`',
        lambda c: c.unet.save_pretrained(c.tmp / "out", max_shard_size="10XB"),
        ValueError,
        "10XB",
    ),
    _runtime(
        "save-unknown-keyword",
        "loading options",
        "`save_pretrained(dir, safe_serialisation=False)` (misspelt)",
        lambda c: c.unet.save_pretrained(c.tmp / "out", safe_serialisation=False),
        TypeError,
        "unexpected keyword argument(s) safe_serialisation",
    ),
    # ====== issues 13/14 [files]: files: sizes, special files, modes, non-finite weights, saves
    # (the [files] cases go right below this block, in the order a user would meet them)
    # ------
    _config_case(
        "files-config-sample-size",
        "a `sample_size` of 8192 (activations of tens of GB)",
        {"sample_size": 8192},
        "config key 'sample_size' has value 8192; expected null, a positive integer or [height, width], each at most "
        "4096",
    ),
    _runtime(
        "files-config-model-too-big",
        "UNet config.json",
        "a config whose parameters exceed the memory (`DDPM_MEMORY_LIMIT=64KiB` here)",
        lambda c: _files_with_limit("64KiB", load_unet, c),
        ResourceLimitError,
        "building a UNet2DModel with 702,499 parameters in float32 needs about 2.68 MiB, more than the 64 KiB",
        "use a smaller config (fewer or narrower block_out_channels, fewer layers_per_block)",
    ),
    _runtime(
        "files-config-5001-digits",
        "UNet config.json",
        "an integer of 5001 digits",
        lambda c: _files_long_integer(c),
        ConfigError,
        "{repo}/config.json: config key 'sample_size' holds an integer too long to read",
    ),
    _runtime(
        "files-config-duplicate-key",
        "UNet config.json",
        "a key given twice",
        _steps(lambda c: c.write("config.json", '{"sample_size": 16, "sample_size": 32}'), load_unet),
        ConfigError,
        "{repo}/config.json: the key 'sample_size' appears twice in one object; keep one of them",
    ),
    _runtime(
        "files-config-fifo",
        "UNet config.json",
        "a FIFO (named pipe) read as a config (`UNet2DConfig.from_json_file`)",
        lambda c: _files_fifo_config(c),
        ConfigError,
        "config file {tmp}/config.json is a FIFO (named pipe), not a regular file; replace it with the file",
    ),
    _runtime(
        "files-weights-huge-sparse",
        "damaged weights",
        "an 18 GB (sparse) safetensors file for a tiny config",
        lambda c: _files_huge_weights(c),
        WeightsError,
        "{repo}/" + WEIGHTS + " declares 18 GiB of tensors, far more than the",
        "the weights do not belong to this config.json, or the file is damaged: refused unread",
    ),
    _runtime(
        "files-weights-zip-bomb",
        "damaged weights",
        "a small `.bin` whose zip members inflate beyond the memory (`DDPM_MEMORY_LIMIT=3MiB` here)",
        lambda c: _files_with_limit("3MiB", _files_zip_bomb, c),
        ResourceLimitError,
        "reading the weights {repo}/" + BIN + " needs about 7.68 MiB, more than the 3 MiB DDPM_MEMORY_LIMIT=3MiB; the "
        "file's 5 MiB of tensors and the 2.68 MiB of parameters they are copied into are in memory at once: load them "
        "on a machine with more memory",
    ),
    _runtime(
        "files-weights-permission",
        "damaged weights",
        "a weights file this user may not read (simulated EACCES)",
        lambda c: _files_unreadable(c),
        WeightsError,
        "cannot read weights file {repo}/" + WEIGHTS + ": Permission denied; ask its owner to make it readable "
        "(chmod a+r {repo}/" + WEIGHTS + ")",
    ),
    _runtime(
        "files-weights-nan",
        "damaged weights",
        "one NaN weight",
        lambda c: _files_edit_weight(c, "conv_in.weight", float("nan"), load_unet),
        WeightsError,
        "{repo}/" + WEIGHTS + " has 1 tensor(s) with NaN or infinite values: conv_in.weight (1 of 864 values); the "
        "file is damaged or was saved from a diverged training run",
    ),
    _runtime(
        "files-weights-fp16-overflow",
        "damaged weights",
        "a weight of 1e6 loaded with `torch_dtype=torch.float16`",
        lambda c: _files_edit_weight(
            c, "conv_out.bias", 1e6, lambda c: UNet2DModel.from_pretrained(c.repo, torch_dtype=torch.float16)
        ),
        WeightsError,
        "1 tensor(s) do not fit in float16 (largest finite value 65504) and would become infinite: conv_out.bias "
        "(largest magnitude 1e+06); load the model in bfloat16 or float32",
    ),
    _runtime(
        "files-weights-int-dtype",
        "damaged weights",
        "an int64 tensor where the model has a float parameter",
        lambda c: _files_int_tensor(c),
        WeightsError,
        "holds 1 tensor(s) of a non-floating-point dtype where UNet2DModel has floating-point parameters: "
        "conv_in.bias (int64)",
    ),
    _runtime(
        "files-save-disk-full",
        "saving",
        "the disk fills up while the weights are written (injected ENOSPC)",
        lambda c: _files_save_failing(c, OSError(28, "No space left on device")),
        SaveError,
        "cannot save {tmp}/out/" + WEIGHTS + ": No space left on device: the disk holding {tmp}/out is full (",
        "free some space or save to another disk, then save again (the previous files are unchanged)",
    ),
    _runtime(
        "files-save-torch-write-failed",
        "saving",
        "torch.save fails with `unexpected pos` (its writer on a full disk; injected)",
        lambda c: _files_save_failing(c, RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 6")),
        SaveError,
        "cannot save {tmp}/out/" + BIN + ": writing it failed (RuntimeError: [enforce fail",
        "if it is full, free some space or save to another disk",
    ),
    _runtime(
        "files-save-permission",
        "saving",
        "a folder this user may not write to (injected EACCES)",
        lambda c: _files_save_failing(c, PermissionError(13, "Permission denied"), where="replace"),
        SaveError,
        "cannot save {tmp}/out/",
        ": permission denied; save to a folder you may write to, or ask the owner of {tmp}/out for write access",
    ),
    _runtime(
        "files-save-file-in-path",
        "saving",
        "`save_pretrained('file/model')` where `file` is a file",
        _steps(lambda c: (c.tmp / "file").write_text("x"), lambda c: c.unet.save_pretrained(c.tmp / "file" / "m")),
        SaveError,
        "cannot save {tmp}/file/m: a file stands where a folder is needed on that path ({tmp}/file); remove or rename "
        "it, or save to another folder",
    ),
    _runtime(
        "files-journal-damaged",
        "saving",
        "a damaged save journal (`.ddpm-save-journal.json`) in the model folder",
        _steps(lambda c: c.write(".ddpm-save-journal.json", '{"renames": 3}'), load_unet),
        SaveError,
        "{repo} holds an unfinished save whose journal .ddpm-save-journal.json is damaged",
    ),
    # ====== issues 13/14 [cli]: the ddpm command: sample reruns, arguments, outputs
    # (the [cli] cases go right below this block, in the order a user would meet them)
    # ------
    Case(
        "sample-out-is-a-file",
        "ddpm sample",
        "`--out` names an existing file",
        _steps(lambda c: (c.tmp / "f.png").write_bytes(b"x"), lambda c: _cli_sample(c, "--out", "{tmp}/f.png")),
        None,
        ("--out {tmp}/f.png is a file, not a folder", "give a folder"),
    ),
    Case(
        "sample-out-unwritable",
        "ddpm sample",
        "`--out` in a folder that cannot be written",
        lambda c: _cli_unwritable_out(c),
        None,
        ("cannot write to --out {tmp}/out", "choose a folder you can write to"),
    ),
    Case(
        "sample-seed-past-the-last",
        "ddpm sample",
        "`--seed 2**63-2 --num-images 3`: seeds past 2**63-1",
        lambda c: _cli_sample(c, "--seed", str(2**63 - 2), "--num-images", "3"),
        None,
        ("needs seeds up to 9223372036854775808, above 2**63-1", "use --seed 9223372036854775805 or less"),
    ),
    Case(
        "sample-batch-over-memory",
        "ddpm sample",
        "`--num-images 1000000 --batch-size 1000000` (limit 1 GiB)",
        lambda c: _cli_with_env("DDPM_MEMORY_LIMIT", "1GiB", "--num-images", "1000000", "--batch-size", "1000000")(c),
        None,
        ("sampling a batch of 1000000 images of 16x16 needs about", "use a smaller --batch-size"),
    ),
    Case(
        "sample-other-settings",
        "ddpm sample",
        "rerun into `--out` with another `--seed`",
        _steps(lambda c: _cli_sample(c), lambda c: _cli_sample(c, "--seed", "1")),
        None,
        ("{tmp}/out holds images made with other settings (seed: 0 -> 1)", "add --overwrite", "use another --out"),
    ),
    Case(
        "sample-fifo-image",
        "ddpm sample",
        "a FIFO named `000001.png` in `--out`",
        _steps(
            lambda c: _cli_sample(c),
            lambda c: os.mkfifo(c.tmp / "out/000001.png"),
            lambda c: _cli_sample(c, "--num-images", "2"),
        ),
        None,
        ("{tmp}/out/000001.png is a FIFO, not an image file; remove it", "or use another folder"),
    ),
    Case(
        "sample-fifo-manifest",
        "ddpm sample",
        "a FIFO named `ddpm_sample.json` in an `--out` that holds images (never waited on)",
        _steps(
            lambda c: _cli_sample(c),
            lambda c: (c.tmp / "out/ddpm_sample.json").unlink(),
            lambda c: os.mkfifo(c.tmp / "out/ddpm_sample.json"),
            lambda c: _cli_sample(c),
        ),
        None,
        (
            "ddpm sample: error: config file {tmp}/out/ddpm_sample.json is a FIFO (named pipe), not a regular file. It "
            "is the record of the settings the images in {tmp}/out were made with, so they cannot be kept: add "
            "--overwrite to delete them and start over, or use another --out",
        ),
    ),
    Case(
        "sample-non-finite-output",
        "ddpm sample",
        "the UNet outputs NaN (a NaN weight, an fp16 overflow)",
        lambda c: _cli_nan_unet(c),
        None,
        ("non-finite values (NaN or infinity) for images 000000.png to 000001.png", "no PNG was written", "weights"),
    ),
    Case(
        "edit-non-finite-output",
        "image-to-image",
        "`ddpm edit`: the UNet outputs NaN (a NaN weight, an fp16 overflow); black images used to be written",
        lambda c: _cli_nan_unet(c, lambda c: _img2img_edit(c, "--strength", "0.5", "--steps", "4")),
        None,
        (
            "ddpm edit: error: the model produced non-finite values (NaN or infinity) for the edited images, so no "
            "image was written; the UNet runs in float32, so its weights are most likely not finite",
        ),
    ),
    Case(
        "inpaint-non-finite-output",
        "ddpm inpaint",
        "`ddpm inpaint`: the UNet outputs NaN (a NaN weight, an fp16 overflow); a black result used to be written",
        lambda c: _cli_nan_unet(c, _repaint_cli),
        None,
        ("ddpm inpaint: error: the model produced non-finite values (NaN or infinity) for the inpainted image",),
    ),
    Case(
        "interpolate-non-finite-output",
        "editing",
        "`ddpm interpolate`: the UNet outputs NaN (a NaN weight, an fp16 overflow); black frames used to be written",
        lambda c: _cli_nan_unet(c, _cli_interpolate),
        None,
        ("ddpm interpolate: error: the model produced non-finite values (NaN or infinity) for the interpolation's",),
    ),
    # ====== issues 13/14 [train]: training and evaluation: run folders, data, interrupts, faults
    # (the [train] cases go right below this block, in the order a user would meet them)
    # ------
    Case(
        "train-out-is-a-file",
        "training run folder",
        "`ddpm train --out FILE`",
        _steps(lambda c: (c.tmp / "file").write_text("x"), lambda c: run_cli(c, "train", "--out", "{tmp}/file")),
        None,
        ("ddpm train: error: --out {tmp}/file is a file, not a folder; choose another --out",),
    ),
    Case(
        "train-out-over-a-model",
        "training run folder",
        "`ddpm train --out DIR` where DIR holds a saved pipeline (no checkpoint.pt)",
        lambda c: run_cli(c, "train", "--data", "mnist", "--out", "{repo}"),
        None,
        (
            "refusing to save a training run to {repo}: the folder holds another kind of model: model_index.json (a "
            "saved pipeline), config.json (a saved model). Choose another --out, or pass --overwrite",
        ),
    ),
    Case(
        "train-resume-before-first-checkpoint",
        "training run folder",
        "`ddpm train --resume` on a run stopped before its first checkpoint",
        _steps(
            lambda c: _train_stopped_run(c),
            lambda c: run_cli(c, "train", "--out", "{tmp}/run", "--resume"),
        ),
        None,
        (
            "{tmp}/run has no checkpoint.pt yet (the run stopped before its first checkpoint); start again without "
            "--resume",
        ),
    ),
    Case(
        "train-data-json-empty",
        "training run folder",
        "`data.json` edited to `{}`, then `ddpm train --resume`",
        _steps(
            lambda c: _trained(c),
            lambda c: (c.tmp / "run" / "data.json").write_text("{}"),
            lambda c: run_cli(c, "train", "--out", "{tmp}/run", "--resume"),
        ),
        None,
        ("{tmp}/run/data.json lacks the key 'data' (the run's --data); restore the file",),
    ),
    Case(
        "train-data-json-fifo",
        "training run folder",
        "a FIFO named `data.json` in the run folder, then `ddpm train --resume` (never waited on)",
        _steps(
            lambda c: _trained(c),
            lambda c: (c.tmp / "run" / "data.json").unlink(missing_ok=True),
            lambda c: os.mkfifo(c.tmp / "run" / "data.json"),
            lambda c: run_cli(c, "train", "--out", "{tmp}/run", "--resume"),
        ),
        None,
        ("ddpm train: error: config file {tmp}/run/data.json is a FIFO (named pipe), not a regular file",),
    ),
    Case(
        "train-config-fifo",
        "training run folder",
        "a FIFO named `training_config.json` in the run folder, then `ddpm train --resume` (never waited on)",
        _steps(
            lambda c: _trained(c),
            lambda c: (c.tmp / "run" / "training_config.json").unlink(),
            lambda c: os.mkfifo(c.tmp / "run" / "training_config.json"),
            lambda c: run_cli(c, "train", "--out", "{tmp}/run", "--resume"),
        ),
        None,
        ("ddpm train: error: config file {tmp}/run/training_config.json is a FIFO (named pipe), not a regular file",),
    ),
    Case(
        "train-log-damaged-line",
        "training checkpoint (--resume)",
        "`log.jsonl` with a damaged line before the last (a torn LAST line is dropped with a warning)",
        _steps(
            lambda c: _trained(c),
            lambda c: (c.tmp / "run" / "log.jsonl").write_text('{"step": 1, "lo\n{"step": 2}\n'),
            lambda c: _resume(c),
        ),
        TrainingError,
        ("{tmp}/run/log.jsonl, line 1: not a log record", "delete or fix that line"),
    ),
    Case(
        "checkpoint-entry-step",
        "training checkpoint (--resume)",
        "`checkpoint.pt` whose `step` is a string",
        _steps(lambda c: _trained(c), lambda c: _train_edit_checkpoint(c, "step", "2"), lambda c: _resume(c)),
        TrainingError,
        ("{tmp}/run/checkpoint.pt: checkpoint entry 'step' is '2', expected", "restore it from a copy"),
    ),
    Case(
        "checkpoint-entry-optimizer",
        "training checkpoint (--resume)",
        "`checkpoint.pt` whose `optimizer` is a list",
        _steps(lambda c: _trained(c), lambda c: _train_edit_checkpoint(c, "optimizer", []), lambda c: _resume(c)),
        TrainingError,
        ("{tmp}/run/checkpoint.pt: checkpoint entry 'optimizer' is list, expected", "restore it from a copy"),
    ),
    Case(
        "checkpoint-entry-model",
        "training checkpoint (--resume)",
        "`checkpoint.pt` whose `model` is empty (no weights)",
        _steps(lambda c: _trained(c), lambda c: _train_edit_checkpoint(c, "model", {}), lambda c: _resume(c)),
        TrainingError,
        ("{tmp}/run/checkpoint.pt: checkpoint entry 'model' is dict, expected", "restore it from a copy"),
    ),
    Case(
        "checkpoint-disk-full",
        "training checkpoint (--resume)",
        "disk full while writing `checkpoint.pt` (`torch.save` raises ENOSPC; the previous checkpoint stays)",
        _steps(lambda c: _trained(c), lambda c: _train_disk_full(c)),
        TrainingError,
        (
            "cannot write the training checkpoint: cannot save {tmp}/run/checkpoint.pt: No space left on device",
            "the disk holding {tmp}/run is full",
            "Then continue the run with --resume",
        ),
    ),
    Case(
        "train-image-bomb",
        "training data",
        "a 20000×20000 PNG among the training images (a decompression bomb)",
        _steps(lambda c: _train_images(c, "bomb.png"), lambda c: _train_on_images(c)),
        None,
        ("ddpm train: error: training image {tmp}/images/bomb.png has more than the 134,217,728 pixels",),
    ),
    Case(
        "train-image-fifo",
        "training data",
        "a FIFO named `x.png` among the training images",
        _steps(lambda c: _train_images(c, "x.png"), lambda c: _train_on_images(c)),
        None,
        ("ddpm train: error: training image {tmp}/images/x.png is a FIFO (named pipe), not a regular file",),
    ),
    Case(
        "evaluate-missing-folder",
        "training data",
        "`ddpm evaluate missing_dir`",
        lambda c: run_cli(c, "evaluate", "{tmp}/missing_dir"),
        None,
        ("ddpm evaluate: error: {tmp}/missing_dir: no such folder (expected a folder of images)",),
    ),
    Case(
        "evaluate-image-fifo",
        "training data",
        "`ddpm evaluate DIR` where DIR holds a FIFO named `x.png` (never waited on)",
        _steps(lambda c: _train_images(c, "x.png"), lambda c: run_cli(c, "evaluate", "{tmp}/images")),
        None,
        ("ddpm evaluate: error: image {tmp}/images/x.png is a FIFO (named pipe), not a regular file",),
    ),
    Case(
        "evaluate-image-bomb",
        "training data",
        "`ddpm evaluate DIR` where DIR holds a 20000×20000 PNG (a decompression bomb)",
        _steps(lambda c: _train_images(c, "bomb.png"), lambda c: run_cli(c, "evaluate", "{tmp}/images")),
        None,
        ("ddpm evaluate: error: image {tmp}/images/bomb.png has more than the 134,217,728 pixels an image may have",),
    ),
    Case(
        "evaluate-k-too-large",
        "training data",
        "`ddpm evaluate DIR --k 3` with 3 images",
        _steps(lambda c: _train_images(c, None, 3), lambda c: run_cli(c, "evaluate", "{tmp}/images", "--k", "3")),
        None,
        ("--k 3 needs more than 3 images; {tmp}/images gives 3: lower --k or add images",),
    ),
    # ====== issues 13/14 [newcomer]: a newcomer's first hour: Hub access, bundled names
    # (the [newcomer] cases go right below this block, in the order a user would meet them)
    # ------
    Case(
        "bundled-name-typo",
        "missing files",
        'a mistyped bundled model name: `DDPMPipeline.from_pretrained("ddpm-mnst")`',
        lambda c: DDPMPipeline.from_pretrained("ddpm-mnst"),
        CheckpointNotFoundError,
        (
            "'ddpm-mnst' is neither a bundled model nor a local folder; did you mean ddpm-mnist? "
            "(bundled models: ddpm-mnist; a Hub id looks like google/ddpm-cifar10-32)",
        ),
    ),
    Case(
        "bundled-name-underscore",
        "missing files",
        '`UNet2DModel.from_pretrained("ddpm_mnist", subfolder="unet")` (an underscore for the dash)',
        lambda c: UNet2DModel.from_pretrained("ddpm_mnist", subfolder="unet"),
        CheckpointNotFoundError,
        ("'ddpm_mnist' is neither a bundled model nor a local folder; did you mean ddpm-mnist?",),
    ),
    Case(
        "cli-bundled-name-typo",
        "missing files",
        "`ddpm sample mnist` (the dataset's name for the model's)",
        lambda c: run_cli(c, "sample", "mnist", "--out", "{tmp}/out", "--no-progress"),
        None,
        ("ddpm sample: error: 'mnist' is neither a bundled model nor a local folder; did you mean ddpm-mnist?",),
    ),
    Case(
        "hub-unreachable",
        "missing files",
        "a Hub id that is not cached, with no network (name lookups fail) and HF_HUB_OFFLINE unset",
        lambda c: _newcomer_without_network(
            lambda: DDPMPipeline.from_pretrained("google/ddpm-cifar10-32", cache_dir=c.tmp)
        ),
        CheckpointNotFoundError,
        (
            "could not reach the Hugging Face Hub to get model_index.json of google/ddpm-cifar10-32, and it is not in "
            "the cache ([Errno -2] Name or service not known); check the network, or set HF_HUB_OFFLINE=1 to use only "
            "cached files",
        ),
    ),
    # ====== issues 15-17 [dpm]: DPMSolverMultistepScheduler: configs, step counts
    # (the [dpm] cases go right below this block)
    # ------
    _runtime(
        "dpm-deprecated-algorithm",
        "scheduler_config.json",
        "`algorithm_type: dpmsolver` (diffusers' deprecated ε-space variant) for DPMSolverMultistepScheduler",
        lambda c: _dpm_load(c, algorithm_type="dpmsolver"),
        UnsupportedConfigError,
        "{repo}/scheduler_config.json",
        "config key 'algorithm_type' has value 'dpmsolver', which diffusers deprecates and this package does not "
        "implement; use one of 'dpmsolver++', 'sde-dpmsolver++'",
    ),
    _runtime(
        "dpm-unknown-algorithm",
        "scheduler_config.json",
        "an unknown `algorithm_type` for DPMSolverMultistepScheduler",
        lambda c: _dpm_load(c, algorithm_type="dpm"),
        ConfigError,
        "{repo}/scheduler_config.json",
        "config key 'algorithm_type' has value 'dpm'; expected one of 'dpmsolver', 'dpmsolver++'",
    ),
    _runtime(
        "dpm-solver-order-4",
        "scheduler_config.json",
        "`solver_order: 4` for DPMSolverMultistepScheduler",
        lambda c: _dpm_load(c, solver_order=4),
        ConfigError,
        "{repo}/scheduler_config.json",
        "config key 'solver_order' has value 4; it must be 1, 2 or 3",
    ),
    _runtime(
        "dpm-lu-lambdas",
        "scheduler_config.json",
        "`use_lu_lambdas: true` (a diffusers level schedule not implemented here)",
        lambda c: _dpm_load(c, use_lu_lambdas=True),
        UnsupportedConfigError,
        "{repo}/scheduler_config.json",
        "config key 'use_lu_lambdas' has value True, which DPMSolverMultistepScheduler does not implement; set it to "
        "False",
    ),
    _runtime(
        "dpm-too-many-steps",
        "scheduler steps",
        "`DPMSolverMultistepScheduler().set_timesteps(1000)` (linspace spreads n + 1 points over 1000 timesteps)",
        lambda c: DPMSolverMultistepScheduler().set_timesteps(1000),
        ValueError,
        "num_inference_steps=1000 is too large for DPMSolverMultistepScheduler with timestep_spacing='linspace' and "
        "steps_offset=0",
        "so two would coincide; use at most 999 steps",
    ),
    # ====== issues 15-17 [unipc]: UniPCMultistepScheduler: configs, step counts
    # (the [unipc] cases go right below this block)
    _runtime(
        "unipc-beta-sigmas",
        "scheduler_config.json",
        "`use_beta_sigmas: true` in a config loaded into UniPC (not implemented)",
        lambda c: _unipc_from_config(c, use_beta_sigmas=True),
        ConfigError,
        "{repo}/scheduler_config.json",
        "config key 'use_beta_sigmas' has value True; UniPCMultistepScheduler here implements the Karras levels",
        "set it to false",
    ),
    _runtime(
        "unipc-solver-type",
        "scheduler_config.json",
        '`solver_type: "bh3"`',
        lambda c: _unipc_from_config(c, solver_type="bh3"),
        ConfigError,
        "config key 'solver_type' has value 'bh3'; use 'bh1' (B(h) = h, for very few steps) or 'bh2'",
    ),
    _runtime(
        "unipc-solver-p",
        "scheduler arguments",
        "another scheduler as `solver_p`",
        lambda c: _unipc()(solver_p=DDIMScheduler()),
        ConfigError,
        "solver_p=DDIMScheduler(...) is not supported",
        "leave solver_p unset (None)",
    ),
    _runtime(
        "unipc-karras-custom-timesteps",
        "scheduler arguments",
        "custom `timesteps` with `use_karras_sigmas=True`",
        lambda c: _unipc()(use_karras_sigmas=True).set_timesteps(timesteps=[900, 500]),
        ValueError,
        "custom timesteps cannot be combined with use_karras_sigmas=True",
    ),
    # ------
    # ====== issues 15-17 [euler]: Euler, Euler ancestral, Heun: configs, step counts
    # (the [euler] cases go right below this block)
    # ------
    Case(
        "euler-log-linear",
        "scheduler options",
        '`EulerDiscreteScheduler(interpolation_type="log_linear")` (diffusers\' σ interpolation that never reaches 0)',
        lambda c: _euler_scheduler("EulerDiscreteScheduler", interpolation_type="log_linear"),
        ConfigError,
        (
            "config key 'interpolation_type' has value 'log_linear'; only 'linear' is supported",
            "use use_exponential_sigmas=true for log-spaced levels",
        ),
    ),
    Case(
        "heun-beta-sigmas",
        "scheduler options",
        "`HeunDiscreteScheduler(use_beta_sigmas=True)` (needs scipy)",
        lambda c: _euler_scheduler("HeunDiscreteScheduler", use_beta_sigmas=True),
        ConfigError,
        (
            "config key 'use_beta_sigmas' has value True; beta-distributed sigmas are not supported (they need scipy, "
            "not a dependency of ddpm); use use_karras_sigmas=true or use_exponential_sigmas=true",
        ),
    ),
    Case(
        "heun-odd-start",
        "scheduler options",
        "a Heun loop over `timesteps[1:]`: its first call is the second half of a 2nd-order step",
        lambda c: _euler_heun_odd_start(),
        ValueError,
        (
            "a Heun loop cannot start at position 1 of timesteps: that model call is the second half of the step that "
            "starts at position 0; start at an even position (timesteps[2 * k:])",
        ),
    ),
    Case(
        "euler-negative-churn",
        "scheduler options",
        "`EulerDiscreteScheduler.step(..., s_churn=-1)`",
        lambda c: _euler_negative_churn(),
        ValueError,
        ("s_churn must be a number ≥ 0, got -1",),
    ),
    # ====== issues 15-17 [samplers]: --scheduler names, sample defaults, the quality benchmark
    # (the [samplers] cases go right below this block)
    # ------
    Case(
        "sample-eta-with-a-sampler-without-eta",
        "ddpm sample",
        "`--scheduler euler-a --eta 0.5`: η belongs to DDIM",
        lambda c: _cli_sample(c, "--scheduler", "euler-a", "--eta", "0.5"),
        None,
        ("--eta 0.5 applies only to --scheduler ddim (got --scheduler euler-a, which has no eta); drop --eta",),
    ),
    Case(
        "sample-pndm-too-few-steps",
        "ddpm sample",
        "`--scheduler pndm --steps 3`: below its Runge-Kutta warm-up",
        lambda c: _cli_sample(c, "--scheduler", "pndm", "--steps", "3"),
        None,
        ("num_inference_steps=3 is too small: PNDMScheduler needs at least 4",),
    ),
    _runtime(
        "sampler-preset-unknown-name",
        "sampler presets",
        "`sampler_preset('lms')`: no such sampler",
        lambda c: _samplers_preset("lms"),
        ValueError,
        "unknown sampler 'lms'; choose one of ddpm, ddim, pndm, dpm++2m, dpm++3m, dpm++2m-sde, unipc, euler, "
        "euler-a, heun",
    ),
    # ====== issues 15-17 [repaint]: inpainting: RePaint, ddpm inpaint
    # (the [repaint] cases go right below this block)
    # ------
    Case(
        "inpaint-mask-wrong-size",
        "ddpm inpaint",
        "`ddpm inpaint` with a 12x12 mask for a 16x16 image",
        lambda c: _repaint_cli(c, mask_size=12),
        None,
        ("the mask {tmp}/mask.png is 12x12 but the image {tmp}/image.png is 16x16", "give a mask of the image's size"),
    ),
    Case(
        "inpaint-empty-mask",
        "ddpm inpaint",
        "`ddpm inpaint` with an all-white mask (nothing to fill)",
        lambda c: _repaint_cli(c, fill=False),
        None,
        ("the mask marks nothing to fill", "Invert it, or pass --mask-means 'fill'"),
    ),
    Case(
        "inpaint-mask-hole-cropped-away",
        "ddpm inpaint",
        "`ddpm inpaint` with a 32x16 image and mask for a 16x16 model, the hole only in the edges the crop cuts off",
        lambda c: _repaint_cli(c, image_size=(32, 16), hole_in_edges=True),
        None,
        (
            "ddpm inpaint: error: mask {tmp}/mask.png: the mask marks nothing to fill once resized with its image to "
            "the model's 16x16: its hole lies outside the centre that is kept",
            "crop the image and the mask around the hole first, or widen the hole",
        ),
    ),
    Case(
        "inpaint-not-an-image",
        "ddpm inpaint",
        "`ddpm inpaint` with a text file as the image",
        lambda c: _repaint_cli(c, image_bytes=b"not a png"),
        None,
        ("cannot read image {tmp}/image.png: not an image file Pillow can read",),
    ),
    Case(
        "inpaint-fifo-mask",
        "ddpm inpaint",
        "`ddpm inpaint` with a FIFO as the mask",
        lambda c: _repaint_cli(c, fifo_mask=True),
        None,
        ("mask {tmp}/mask.png is a FIFO (named pipe), not a regular file",),
    ),
    Case(
        "inpaint-missing-mask",
        "ddpm inpaint",
        "`ddpm inpaint` with a mask file that does not exist",
        lambda c: _repaint_cli(c, missing_mask=True),
        None,
        ("cannot read mask {tmp}/mask.png: No such file or directory",),
    ),
    Case(
        "inpaint-guidance-nan",
        "ddpm inpaint",
        "`RePaintPipeline(..., reconstruction_guidance=nan)`",
        lambda c: _repaint_pipe_guidance(c, float("nan")),
        ValueError,
        (
            "reconstruction_guidance must be a finite number >= 0 (0: plain RePaint; about 10 for coherent fills), "
            "got nan",
        ),
    ),
    Case(
        "inpaint-out-exists",
        "ddpm inpaint",
        "`ddpm inpaint --out FILE` where FILE exists (no `--overwrite`)",
        lambda c: _repaint_cli(c, out_exists=True),
        None,
        ("{tmp}/out.png exists; add --overwrite to replace it, or choose another --out",),
    ),
    # ====== issues 15-17 [img2img]: image-to-image: SDEdit, ddpm edit
    # (the [img2img] cases go right below this block)
    # ------
    Case(
        "img2img-cli-strength-zero",
        "image-to-image",
        "`ddpm edit IMAGE --strength 0`",
        lambda c: _img2img_edit(c, "--strength", "0"),
        None,
        (
            "ddpm edit: error: --strength must be a number in (0, 1] (the fraction of the schedule to noise",
            "got 0",
        ),
    ),
    Case(
        "img2img-cli-strength-negative",
        "image-to-image",
        "`ddpm edit IMAGE --strength -0.2`",
        lambda c: _img2img_edit(c, "--strength", "-0.2"),
        None,
        (
            "ddpm edit: error: --strength must be a number in (0, 1] (the fraction of the schedule to noise",
            "got -0.2",
        ),
    ),
    Case(
        "img2img-cli-strength-above-one",
        "image-to-image",
        "`ddpm edit IMAGE --strength 1.5`",
        lambda c: _img2img_edit(c, "--strength", "1.5"),
        None,
        (
            "ddpm edit: error: --strength must be a number in (0, 1] (the fraction of the schedule to noise",
            "got 1.5",
        ),
    ),
    Case(
        "img2img-cli-strength-nan",
        "image-to-image",
        "`ddpm edit IMAGE --strength nan`",
        lambda c: _img2img_edit(c, "--strength", "nan"),
        None,
        (
            "ddpm edit: error: --strength must be a number in (0, 1] (the fraction of the schedule to noise",
            "got nan",
        ),
    ),
    Case(
        "img2img-cli-strength-no-step",
        "image-to-image",
        "`ddpm edit IMAGE --strength 0.01 --steps 50` (int(50 * 0.01) = 0 steps to run)",
        lambda c: _img2img_edit(c, "--strength", "0.01", "--steps", "50"),
        None,
        (
            "ddpm edit: error: --strength 0.01 with --steps 50 runs int(50 * 0.01) = 0 steps; use --strength 0.02 or "
            "more, or --steps 100 or more",
        ),
    ),
    Case(
        "img2img-cli-not-an-image",
        "image-to-image",
        "`ddpm edit notes.png`: a text file named like an image",
        lambda c: _img2img_edit(c, "--strength", "0.5", image="notes.png"),
        None,
        ("ddpm edit: error: cannot read image {tmp}/notes.png: not an image file Pillow can read",),
    ),
    Case(
        "img2img-cli-fifo",
        "image-to-image",
        "`ddpm edit pipe.png`: a FIFO (named pipe)",
        lambda c: _img2img_edit(c, "--strength", "0.5", image="pipe.png"),
        None,
        ("ddpm edit: error: image {tmp}/pipe.png is a FIFO (named pipe), not a regular file",),
    ),
    Case(
        "img2img-cli-missing",
        "image-to-image",
        "`ddpm edit missing.png`: no such file",
        lambda c: _img2img_edit(c, "--strength", "0.5", image="missing.png"),
        None,
        ("ddpm edit: error: cannot read image {tmp}/missing.png: No such file or directory",),
    ),
    _runtime(
        "img2img-pipeline-strength-zero",
        "image-to-image",
        "`ImageToImagePipeline(...)(image, strength=0)`",
        lambda c: _img2img_pipe(c)(torch.zeros(1, 3, 16, 16), strength=0),
        ValueError,
        "strength must be a number in (0, 1] (the fraction of the schedule to noise the image to",
    ),
    # ====== issues 15-17 [inversion]: DDIM inversion and interpolation, ddpm interpolate
    # (the [inversion] cases go right below this block)
    # ------
    Case(
        "cli-interpolate-missing-image",
        "editing",
        "`ddpm interpolate nope.png seed:1` (a missing image file)",
        lambda c: run_cli(c, "interpolate", "{tmp}/nope.png", "seed:1", "--model", "{repo}", "--out", "{tmp}/o"),
        None,
        ("ddpm interpolate: error: A: {tmp}/nope.png is not a file (and not a seed); give an image file, or a seed",),
    ),
    Case(
        "cli-interpolate-not-an-image",
        "editing",
        "`ddpm interpolate notes.png 3` (a text file named like an image)",
        _steps(
            lambda c: (c.tmp / "notes.png").write_text("hello"),
            lambda c: run_cli(c, "interpolate", "{tmp}/notes.png", "3", "--model", "{repo}", "--out", "{tmp}/o"),
        ),
        None,
        ("cannot read A image {tmp}/notes.png: not an image file Pillow can read",),
    ),
    Case(
        "cli-interpolate-fifo",
        "editing",
        "`ddpm interpolate 1 pipe.png` where pipe.png is a FIFO (never waited on)",
        _steps(
            lambda c: os.mkfifo(c.tmp / "pipe.png"),
            lambda c: run_cli(c, "interpolate", "1", "{tmp}/pipe.png", "--model", "{repo}", "--out", "{tmp}/o"),
        ),
        None,
        ("B image {tmp}/pipe.png is a FIFO (named pipe), not a regular file",),
    ),
    Case(
        "interpolate-one-frame",
        "editing",
        "`DDIMInversionPipeline.interpolate(1, 2, num_frames=1)`",
        lambda c: _inversion_pipe(c).interpolate(1, 2, num_frames=1),
        ValueError,
        ("num_frames must be from 2 to 1000 (both end points included), got 1",),
    ),
    # ====== issues 15-17 [cpu]: the CPU fast path: dtype defaults
    # (the [cpu] cases go right below this block)
    # ------
    Case(
        "sample-fast-and-no-fast",
        "ddpm sample",
        "`ddpm sample --fast --no-fast`: the fast path asked for and refused at once",
        lambda c: _cli_sample(c, "--fast", "--no-fast"),
        None,
        ("ddpm sample: error: --fast and --no-fast contradict each other; give one of them",),
    ),
]


def _run_folder(ctx: Ctx) -> Path:
    folder = ctx.tmp / "run"
    folder.mkdir(exist_ok=True)
    return folder


def _trained(ctx: Ctx) -> Any:
    """Two training steps of the tiny trainer in ``<tmp>/run``, which leave a real checkpoint.pt."""
    return tiny_trainer(_run_folder(ctx), max_steps=4).train(until_step=2)


def _resume(ctx: Ctx) -> Any:
    return tiny_trainer(_run_folder(ctx), max_steps=4).train(resume=True)


def _mismatch(ctx: Ctx) -> Any:
    from safetensors.torch import load_file, save_file

    path = ctx.repo / WEIGHTS
    state = load_file(path)
    del state["conv_out.bias"]
    state["extra.weight"] = torch.zeros(2, 2)
    state["conv_in.weight"] = torch.zeros(32, 3, 5, 5)
    save_file(state, str(path))
    return load_unet(ctx)


def _files_with_limit(limit: str, run: Callable[[Ctx], Any], ctx: Ctx) -> Any:
    """``run(ctx)`` with ``DDPM_MEMORY_LIMIT=limit``."""
    from unittest import mock

    with mock.patch.dict(os.environ, {"DDPM_MEMORY_LIMIT": limit}):
        return run(ctx)


def _files_long_integer(ctx: Ctx) -> Any:
    text = (ctx.repo / "config.json").read_text()
    ctx.write("config.json", text.replace('"sample_size": 16', '"sample_size": ' + "9" * 5001))
    return load_unet(ctx)


def _files_fifo_config(ctx: Ctx) -> Any:
    from ddpm.models import UNet2DConfig

    os.mkfifo(ctx.tmp / "config.json")
    return UNet2DConfig.from_json_file(ctx.tmp / "config.json")


def _files_huge_weights(ctx: Ctx) -> Any:
    """A safetensors header declaring 18 GiB for conv_in.weight; the file is sparse (no disk used)."""
    size = 18 * 2**30
    header = json.dumps({"conv_in.weight": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}})
    with open(ctx.repo / WEIGHTS, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header.encode())
        f.truncate(8 + len(header) + size)
    return load_unet(ctx)


def _files_zip_bomb(ctx: Ctx) -> Any:
    """A ``.bin`` of 5 KB whose deflated member inflates to 5 MiB."""
    import zipfile

    (ctx.repo / WEIGHTS).unlink()
    with zipfile.ZipFile(ctx.repo / BIN, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("archive/data/0", bytes(5 * 2**20))
    return load_unet(ctx)


def _files_unreadable(ctx: Ctx) -> Any:
    """os.open raises EACCES for the weights file (we run as root: chmod 000 would not stop reading)."""
    from unittest import mock

    real = os.open

    def deny(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(WEIGHTS):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args)

    with mock.patch.object(os, "open", deny):
        return load_unet(ctx)


def _files_edit_weight(ctx: Ctx, name: str, value: float, load: Callable[[Ctx], Any]) -> Any:
    from safetensors.torch import load_file, save_file

    state = load_file(ctx.repo / WEIGHTS)
    state[name].view(-1)[0] = value
    save_file(state, str(ctx.repo / WEIGHTS))
    return load(ctx)


def _files_int_tensor(ctx: Ctx) -> Any:
    from safetensors.torch import load_file, save_file

    state = load_file(ctx.repo / WEIGHTS)
    state["conv_in.bias"] = state["conv_in.bias"].to(torch.int64)
    save_file(state, str(ctx.repo / WEIGHTS))
    return load_unet(ctx)


def _files_save_failing(ctx: Ctx, exc: BaseException, where: str = "writer") -> Any:
    """Save the UNet to ``<tmp>/out`` while the weights writer (or ``os.replace``) raises ``exc``."""
    from unittest import mock

    def fail(*args: Any, **kwargs: Any) -> None:
        raise exc

    unet, out = ctx.unet, ctx.tmp / "out"
    safe = not isinstance(exc, RuntimeError)
    if where == "replace":
        patch = mock.patch.object(os, "replace", fail)
    else:
        import safetensors.torch

        patch = (
            mock.patch.object(safetensors.torch, "save_file", fail) if safe else mock.patch.object(torch, "save", fail)
        )
    with patch:
        return unet.save_pretrained(out, safe_serialization=safe)


def _newcomer_without_network(load: Callable[[], Any]) -> Any:
    """``load()`` as on a machine without network: HF_HUB_OFFLINE off and every name lookup failing (the time it
    takes is checked in tests/project/test_hub_unreachable.py, in a fresh interpreter)."""
    import socket

    from huggingface_hub import constants

    def no_dns(*args: object, **kwargs: object) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    offline, getaddrinfo = constants.HF_HUB_OFFLINE, socket.getaddrinfo
    constants.HF_HUB_OFFLINE, socket.getaddrinfo = False, no_dns
    try:
        return load()
    finally:
        constants.HF_HUB_OFFLINE, socket.getaddrinfo = offline, getaddrinfo


def _cli_sample(ctx: Ctx, *argv: str) -> tuple[int, str]:
    """``ddpm sample {repo} --steps 5 --no-progress --out {tmp}/out <argv>`` (``--out`` unless argv gives one)."""
    out = () if "--out" in argv else ("--out", "{tmp}/out")
    return run_cli(ctx, "sample", "{repo}", "--steps", "5", "--no-progress", *out, *argv)


def _cli_with_env(name: str, value: str, *argv: str) -> Callable[[Ctx], tuple[int, str]]:
    def run(ctx: Ctx) -> tuple[int, str]:
        old = os.environ.get(name)
        os.environ[name] = value
        try:
            return _cli_sample(ctx, *argv)
        finally:
            os.environ.pop(name) if old is None else os.environ.__setitem__(name, old)

    return run


def _cli_nan_unet(ctx: Ctx, run: Callable[[Ctx], tuple[int, str]] | None = None) -> tuple[int, str]:
    """``run`` (default: ``ddpm sample`` of two images) while every UNet output gets one NaN (as a NaN weight, or an
    fp16 overflow, would give)."""
    forward = UNet2DModel.forward

    def nan_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = forward(self, *args, **kwargs)
        out[0][0, 0, 0, 0] = float("nan")
        return out

    UNet2DModel.forward = nan_forward  # type: ignore[method-assign]
    try:
        return run(ctx) if run is not None else _cli_sample(ctx, "--num-images", "2")
    finally:
        UNet2DModel.forward = forward  # type: ignore[method-assign]


def _cli_interpolate(ctx: Ctx) -> tuple[int, str]:
    """``ddpm interpolate 1 2`` of two frames with 2 steps into ``{tmp}/out``, which must not be made."""
    argv = ["interpolate", "1", "2", "--model", "{repo}", "--out", "{tmp}/out", "--frames", "2", "--steps", "2"]
    result = run_cli(ctx, *argv, "--no-progress")
    assert not (ctx.tmp / "out").exists(), "ddpm interpolate wrote its folder before refusing"
    return result


def _cli_unwritable_out(ctx: Ctx) -> tuple[int, str]:
    """Simulated (the suite may run as root, which writes anywhere): ``os.access`` says the folder is not writable."""
    access = os.access
    os.access = lambda *args, **kwargs: False
    try:
        return _cli_sample(ctx)
    finally:
        os.access = access


def _train_edit_checkpoint(ctx: Ctx, entry: str, value: Any) -> None:
    """Set one entry of ``<tmp>/run/checkpoint.pt`` to ``value``."""
    path = ctx.tmp / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state[entry] = value
    torch.save(state, path)


def _train_disk_full(ctx: Ctx) -> Any:
    """Resume the run with ``torch.save`` failing as on a full disk (fault injection; restored afterwards)."""
    import errno

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    save, torch.save = torch.save, full
    try:
        return tiny_trainer(_run_folder(ctx), max_steps=4).train(resume=True)
    finally:
        torch.save = save


def _train_stopped_run(ctx: Ctx) -> None:
    """``<tmp>/run`` as a run stopped before its first checkpoint leaves it: a training_config.json, no checkpoint."""
    from ddpm.training import TrainingConfig

    TrainingConfig().save_json(_run_folder(ctx))


def _train_on_images(ctx: Ctx) -> tuple[int, str]:
    return run_cli(ctx, "train", "--data", "{tmp}/images", "--out", "{tmp}/run", "--channels", "8,16", "--steps", "1")


def _train_images(ctx: Ctx, special: str | None, n: int = 2) -> Path:
    """``<tmp>/images`` with ``n`` small PNGs and ``special``: ``bomb.png`` (a 20000×20000 header) or a FIFO."""
    from PIL import Image

    folder = ctx.tmp / "images"
    folder.mkdir()
    for i in range(n):
        Image.new("L", (32, 32), color=i * 40).save(folder / f"{i}.png")
    if special == "bomb.png":
        train_png_header(folder / special, 20000, 20000)
    elif special is not None:
        os.mkfifo(folder / special)
    return folder


def train_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width``×``height`` grayscale pixels and holds none: what Pillow's ``Image.open`` reads of
    a decompression bomb (a real 20000×20000 one is ~400 KB of zlib), without the time and memory of making one."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b""))
    return path


def _dpm_load(ctx: Ctx, **changes: Any) -> Any:
    """[dpm] The case folder's google/ddpm-style scheduler_config.json with ``changes``, loaded by
    DPMSolverMultistepScheduler."""
    ctx.edit_json("scheduler_config.json", **changes)
    return DPMSolverMultistepScheduler.from_pretrained(ctx.repo)


def _euler_scheduler(name: str, **keys: Any) -> Any:
    import ddpm.schedulers

    return getattr(ddpm.schedulers, name)(**keys)


def _euler_heun_odd_start() -> Any:
    scheduler = _euler_scheduler("HeunDiscreteScheduler")
    scheduler.set_timesteps(4)
    x = torch.zeros(1, 3, 8, 8)
    for t in scheduler.timesteps[1:]:
        x = scheduler.step(x, t, x).prev_sample
    return x


def _euler_negative_churn() -> Any:
    scheduler = _euler_scheduler("EulerDiscreteScheduler")
    scheduler.set_timesteps(4)
    x = torch.zeros(1, 3, 8, 8)
    return scheduler.step(x, scheduler.timesteps[0], x, s_churn=-1)


def _unipc() -> Any:
    from ddpm import UniPCMultistepScheduler

    return UniPCMultistepScheduler


def _unipc_from_config(ctx: Ctx, **changes: Any) -> Any:
    ctx.edit_json("scheduler_config.json", **changes)
    return _unipc().from_pretrained(ctx.repo)


def _inversion_pipe(ctx: Ctx) -> Any:
    from ddpm import DDIMInversionPipeline

    return DDIMInversionPipeline.from_pretrained(ctx.repo)


def _samplers_preset(name: str) -> Any:
    from ddpm.schedulers.presets import sampler_preset

    return sampler_preset(name)


def _repaint_cli(
    ctx: Ctx,
    *,
    mask_size: int = 16,
    fill: bool = True,
    image_bytes: bytes | None = None,
    fifo_mask: bool = False,
    missing_mask: bool = False,
    out_exists: bool = False,
    image_size: tuple[int, int] = (16, 16),
    hole_in_edges: bool = False,
) -> tuple[int, str]:
    """``ddpm inpaint {tmp}/image.png --mask {tmp}/mask.png --model {repo} --out {tmp}/out.png`` with one thing bad.

    ``image_size`` (width, height) other than the model's 16x16 gives the mask that size too; ``hole_in_edges``
    puts the hole (black) only in the left and right quarters, which a 2:1 image loses to the centre crop."""
    from PIL import Image

    image, mask = ctx.tmp / "image.png", ctx.tmp / "mask.png"
    if image_bytes is None:
        Image.new("RGB", image_size, (40, 80, 120)).save(image)
    else:
        image.write_bytes(image_bytes)
    if fifo_mask:
        os.mkfifo(mask)
    elif hole_in_edges:
        width, height = image_size
        levels = Image.new("L", image_size, 255)
        levels.paste(0, (0, 0, width // 4, height))
        levels.paste(0, (width - width // 4, 0, width, height))
        levels.save(mask)
    elif not missing_mask:
        levels = Image.new("L", (mask_size, mask_size), 255)
        if fill:
            levels.paste(0, (0, mask_size // 2, mask_size, mask_size))
        levels.save(mask)
    if out_exists:
        (ctx.tmp / "out.png").write_bytes(b"x")
    argv = ["inpaint", str(image), "--mask", str(mask), "--model", "{repo}", "--out", "{tmp}/out.png"]
    return run_cli(ctx, *argv, "--steps", "2", "--no-progress")


def _repaint_pipe_guidance(ctx: Ctx, weight: float) -> Any:
    """``RePaintPipeline`` on the tiny repo, called with ``reconstruction_guidance=weight``."""
    from ddpm import RePaintPipeline

    pipe = RePaintPipeline.from_pretrained(ctx.repo)
    return pipe(torch.zeros(1, 3, 16, 16), torch.ones(1, 1, 16, 16).tril(), reconstruction_guidance=weight)


# ---------------------------------------------------------------------------------------------- running a case


def new_ctx(template: Path, tmp: Path) -> Ctx:
    repo = tmp / "repo"
    shutil.copytree(template, repo)
    scratch = tmp / "scratch"
    scratch.mkdir()
    return Ctx(repo=repo, tmp=scratch)


def expand(text: str, ctx: Ctx) -> str:
    """``text`` with ``{repo}`` and ``{tmp}`` replaced by the case's folders."""
    return text.replace("{repo}", str(ctx.repo)).replace("{tmp}", str(ctx.tmp))


def outcome(case: Case, ctx: Ctx) -> tuple[type[BaseException] | None, str]:
    """Run ``case``: (exception class or None, the message the user sees)."""
    try:
        result = case.run(ctx)
    except Exception as exc:
        return type(exc), str(exc)
    if case.error is None:  # CLI: (status, stderr)
        status, stderr = result
        return None, f"exit status {status}; stderr: {stderr.strip()}"
    return None, f"no error (returned {type(result).__name__})"


def markdown_table(template: Path, scratch: Path) -> str:
    """Every case as a markdown table: area, bad input, exception, message (folders shown as ``<repo>``/``<tmp>``)."""
    rows = ["| area | bad input | exception | what the user sees |", "|---|---|---|---|"]
    for i, case in enumerate(CASES):
        ctx = new_ctx(template, scratch / f"{i:03d}")
        error, message = outcome(case, ctx)
        message = message.replace(str(ctx.repo), "<repo>").replace(str(ctx.tmp), "<tmp>")
        message = message.replace("|", "\\|").replace("\n", "<br>")
        name = error.__name__ if error else "(CLI)"
        rows.append(f"| {case.area} | {case.what} | `{name}` | {message} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        template = build_template(Path(tmp) / "template")
        sys.stdout.write(markdown_table(template, Path(tmp)))
