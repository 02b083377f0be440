"""Fixture builders shared by the test modules: Hub configs, legacy checkpoints and HF cache entries.

Checkpoints are written with random weights made by diffusers (the oracle) in the exact layout, configs and legacy
key names of the google/ddpm-* repos (see ../shared/CHECKPOINTS.md), so the loading code users run is exercised.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

# google/ddpm-cifar10-32 config.json (exact keys and values).
CIFAR10_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}

# google/ddpm-ema-celebahq-256 config.json (and every other 256 px repo of the family).
CELEBAHQ_UNET_CONFIG: dict[str, Any] = {
    **CIFAR10_UNET_CONFIG,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": [
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "DownBlock2D",
        "AttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
    "sample_size": 256,
}

# scheduler_config.json of the 256 px repos; cifar10-32 differs only in variance_type.
CELEBAHQ_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.1.0",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_small",
}
CIFAR10_SCHEDULER_CONFIG: dict[str, Any] = {**CELEBAHQ_SCHEDULER_CONFIG, "variance_type": "fixed_large"}

MODEL_INDEX: dict[str, Any] = {
    "_class_name": "DDPMPipeline",
    "_diffusers_version": "0.0.4",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}

# A tiny config covering every block type (down, attn-down, up, attn-up, mid attention).
TINY_UNET_CONFIG: dict[str, Any] = {
    **CIFAR10_UNET_CONFIG,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "sample_size": 16,
}

_LEGACY_ATTENTION_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def to_legacy_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename diffusers' attention keys back to the 2022 names the google/ddpm-* .bin files use."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        if ".attentions." in key:
            for modern, legacy in _LEGACY_ATTENTION_NAMES.items():
                marker = f".{modern}."
                if marker in key:
                    new = key.replace(marker, f".{legacy}.")
                    break
        out[new] = value.detach().clone().contiguous()
    return out


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Perturb every parameter (norm weights and biases included) so mistakes cannot hide behind 1s and 0s."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * noise)
        elif name.endswith("bias"):
            p.copy_(0.1 * noise)
        else:
            p.add_(scale * noise)
    return model


def diffusers_unet(config: Mapping[str, Any], seed: int = 0) -> Any:
    """A diffusers UNet2DModel for ``config`` with seeded, perturbed random weights (the oracle)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    model = UNet2DModel.from_config(dict(config)).eval()
    return perturb_(model, seed)


def write_flat_repo(
    folder: str | os.PathLike[str],
    unet: Any,
    unet_config: Mapping[str, Any],
    scheduler_config: Mapping[str, Any] | None = None,
    *,
    weights: str = "bin",
    legacy_keys: bool = True,
    model_index: bool = True,
) -> Path:
    """Write a google/ddpm-*-style flat repo: config.json, weights, scheduler_config.json, model_index.json."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = unet.state_dict()
    state = to_legacy_keys(state) if legacy_keys else {k: v.detach().clone().contiguous() for k, v in state.items()}
    (folder / "config.json").write_text(json.dumps(dict(unet_config), indent=2, sort_keys=True) + "\n")
    if weights in ("bin", "both"):
        torch.save(state, folder / "diffusion_pytorch_model.bin")
    if weights in ("safetensors", "both"):
        save_file(state, str(folder / "diffusion_pytorch_model.safetensors"))
    if scheduler_config is not None:
        (folder / "scheduler_config.json").write_text(
            json.dumps(dict(scheduler_config), indent=2, sort_keys=True) + "\n"
        )
    if model_index:
        (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2, sort_keys=True) + "\n")
    return folder


def install_in_hf_cache(cache_dir: str | os.PathLike[str], repo_id: str, source: str | os.PathLike[str]) -> Path:
    """Copy the files of ``source`` into an HF cache entry for ``repo_id`` (refs/main + snapshots/<hash>/)."""
    cache_dir = Path(cache_dir)
    repo_folder = cache_dir / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_folder / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(source, snapshot)
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(commit)
    return snapshot


def write_tiny_repo(
    folder: str | os.PathLike[str],
    *,
    seed: int = 0,
    scheduler_config: Mapping[str, Any] = CIFAR10_SCHEDULER_CONFIG,
    weights: str = "safetensors",
    model_index: bool = True,
) -> Path:
    """A flat repo with TINY_UNET_CONFIG and seeded, perturbed random weights: the fast model of pipeline, CLI,
    docs and example tests."""
    unet = diffusers_unet(TINY_UNET_CONFIG, seed)
    return write_flat_repo(folder, unet, TINY_UNET_CONFIG, scheduler_config, weights=weights, model_index=model_index)


def pil_levels(images: Any) -> Any:
    """A list of PIL images as one int64 numpy array (B, H, W, C), for comparing 8-bit levels."""
    import numpy as np

    return np.stack([np.asarray(img, dtype=np.int64) for img in images])


# ---------------------------------------------------------------------------------------------------- training
@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: tiny models and tensors only lose time to thread synchronisation (waking a second
    thread for a 500-element op costs milliseconds on a busy 2-core machine). The folders whose tests are all tiny
    apply it to every test from their conftest.py."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# An 8x8 grayscale UNet small enough to train for a few steps in a test (still covers attention blocks).
TRAIN_TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}


def tiny_trainer(out: str | os.PathLike[str], *, n_images: int = 24, seed: int = 0, **config: Any) -> Any:
    """A Trainer for TRAIN_TINY_UNET_CONFIG on random 8x8 digits-like images, fp32, no progress bar or grids."""
    from ddpm.models import UNet2DModel
    from ddpm.schedulers import DDPMScheduler
    from ddpm.training import TensorImageDataset, Trainer, TrainingConfig

    torch.manual_seed(seed)
    unet = UNet2DModel.from_config(TRAIN_TINY_UNET_CONFIG)
    g = torch.Generator().manual_seed(1234)
    images = torch.randint(0, 256, (n_images, 1, 8, 8), dtype=torch.uint8, generator=g)
    defaults: dict[str, Any] = {
        "max_steps": 6,
        "batch_size": 4,
        "warmup_steps": 2,
        "precision": "fp32",
        "progress": False,
        "log_every": 1,
        "sample_every": 0,
        "checkpoint_every": 0,
        "checkpoint_minutes": 0.0,
        "num_samples": 4,
        "sample_steps": 2,
    }
    cfg = TrainingConfig(**{**defaults, **config})
    return Trainer(unet, DDPMScheduler(num_train_timesteps=100), TensorImageDataset(images), cfg, out, device="cpu")


def damage_file(path: str | os.PathLike[str], how: str) -> Path:
    """Damage a file the way downloads and disks do: ``truncated`` (first half), ``garbage``, ``empty``, or
    ``huge header`` (a safetensors header length far beyond the file)."""
    import struct

    path = Path(path)
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x13\x37" * 64)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "huge header":
        path.write_bytes(struct.pack("<Q", 2**40) + data[8:])
    else:
        raise ValueError(how)
    return path
