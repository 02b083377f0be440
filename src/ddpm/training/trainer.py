"""The DDPM trainer: denoising objective, AdamW with warm-up and cosine decay, EMA, mixed precision, exact resume, DDP.

Objective (Ho et al. 2020, Algorithm 1 and Eq. 14): draw a clean image ``x_0``, a timestep ``t ~ U{0, …, T-1}``
and noise ``ε ~ N(0, I)``, form

    x_t = sqrt(ᾱ_t) · x_0 + sqrt(1 - ᾱ_t) · ε                       (Eq. 4, the scheduler's ``add_noise``)

and minimise ``‖target - f_θ(x_t, t)‖²`` where the target follows the scheduler's ``prediction_type``: ``ε``
("epsilon", Eq. 14), ``x_0`` ("sample"), or ``v = sqrt(ᾱ_t) · ε - sqrt(1 - ᾱ_t) · x_0`` ("v_prediction",
Salimans & Ho 2022, the scheduler's ``get_velocity``). The loss is computed in float32 even under autocast.

Determinism: every random number a step uses (which images, the timesteps, the noise, the flips) is a function of
``(seed, step)`` only; see :class:`~ddpm.training.data.StepBatchSampler` and :func:`step_generator`. A resumed run
therefore repeats the uninterrupted one, and ``torchrun --nproc-per-node N`` with the same global batch computes
the same update as one process (up to float summation order). The global RNG states are saved and restored too,
for anything else that draws from them (dropout).

Output folder::

    out/
      model_index.json, unet/, scheduler/   the pipeline (EMA weights when use_ema), loads with from_pretrained
      checkpoint.pt                         raw + EMA weights, optimiser, step, RNG states: what --resume reads
      training_config.json                  the TrainingConfig
      log.jsonl                             one JSON object per logged step
      samples/step_XXXXXXX.png              sample grids (EMA weights; ``_raw`` grids from the raw weights)

Stopping: SIGINT (Ctrl-C) or SIGTERM asks the trainer to stop at the end of the current step; it saves a checkpoint
and raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) with the step and the checkpoint's path. A second
signal aborts at once, without saving (the previous checkpoint stays intact: every file is written atomically).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DDPMError, SaveError
from ..io import atomic_write, atomic_write_text, open_regular, save_error
from ..models import UNet2DModel
from ..runtime import DTYPES, Distributed, resolve_device
from ..schedulers import Scheduler
from .config import PRECISIONS, RESUMABLE_CHANGES, TrainingConfig
from .data import StepBatchSampler, to_model_range
from .ema import EMA

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "Trainer",
    "TrainingError",
    "TrainingInterrupted",
    "diffusion_loss",
    "learning_rate_at",
    "no_checkpoint_yet",
    "prepare_run_folder",
    "save_pipeline_folder",
    "step_generator",
    "write_guard",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
#: An explicit warm-up longer than this share of the run gets a warning: the learning rate would peak too late.
WARMUP_WARNING_FRACTION = 0.5
_CHECKPOINT_FORMAT = "ddpm-training-checkpoint-v1"
#: The entries :meth:`Trainer.load_checkpoint` reads (``param_names`` and ``world_size`` are optional).
_CHECKPOINT_KEYS = (
    "step", "elapsed_seconds", "model", "ema", "optimizer", "grad_scaler", "rng", "training_config", "unet_config",
    "scheduler_config",
)  # fmt: skip


class TrainingError(DDPMError, RuntimeError):
    """Training cannot start or continue (bad setup, incompatible resume, non-finite loss)."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a step; a checkpoint of that step was saved.

    Attributes:
        step: The step the checkpoint holds.
        checkpoint: The checkpoint's path; ``train(resume=True)`` (``ddpm train --resume``) continues from it.
    """

    def __init__(self, step: int, checkpoint: Path) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved to {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint


class _StopSignals:
    """While active, SIGINT and SIGTERM ask for a stop at the end of the step; a second one aborts at once.

    Handlers can only be installed from the main thread; elsewhere the signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # the second signal: abort now, the atomic writers leave the old files intact
        self.received = signum
        logger.warning(
            "%s: stopping after this step to save a checkpoint (send it again to abort without saving)",
            signal.Signals(signum).name,
        )


# ---------------------------------------------------------------------------------------------------- the objective
def diffusion_loss(
    model: Callable[..., Any],
    noise_scheduler: Any,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> torch.Tensor:
    """The denoising loss of one batch, a float32 scalar.

    Args:
        model: ``model(x_t, t)`` returns an object with ``.sample`` (a UNet2DModel, possibly DDP-wrapped).
        noise_scheduler: Supplies ``add_noise``, ``get_velocity`` and ``config.prediction_type``.
        x0: Clean images in [-1, 1], shape (B, C, H, W), float32.
        noise: ε, same shape as ``x0``.
        timesteps: Integer timesteps, shape (B,).
        autocast: The mixed-precision context for the forward pass (the loss itself runs outside it).

    Returns:
        The mean squared error between the model output and the target chosen by ``prediction_type``.
    """
    prediction_type = noise_scheduler.config.prediction_type
    x_t = noise_scheduler.add_noise(x0, noise, timesteps)  # Eq. 4, float32
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "sample":
        target = x0
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, timesteps)
    else:
        raise TrainingError(
            f"scheduler prediction_type {prediction_type!r} cannot be trained; expected 'epsilon', 'sample' or "
            "'v_prediction'"
        )
    with autocast or contextlib.nullcontext():
        prediction = model(x_t, timesteps).sample
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


def learning_rate_at(step: int, config: TrainingConfig) -> float:
    """Linear warm-up from 0 over ``config.warmup`` steps, then cosine decay to ``min_lr_ratio × learning_rate``.

    ``step`` counts completed optimisation steps, so the first update uses ``learning_rate_at(0)`` scaled by
    1/warmup (it is never exactly 0 unless ``warmup_steps`` is huge).
    """
    peak = config.learning_rate
    warmup = config.warmup
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    span = max(1, config.max_steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    floor = config.min_lr_ratio
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of optimisation step ``step``: timesteps, noise and flips of the whole global batch."""
    return torch.Generator().manual_seed((seed << 32) + step + 1)


# ---------------------------------------------------------------------------------------------------- RNG states
def _rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and numbers (``torch.load(weights_only=True)`` reads them back)."""
    np_state = np.random.get_state(legacy=False)  # MT19937: {"state": {"key", "pos"}, "has_gauss", "gauss"}
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
        "numpy_has_gauss": int(np_state["has_gauss"]),
        "numpy_gauss": float(np_state["gauss"]),
        "python_version": int(py_version),
        "python_internal": torch.tensor(py_internal, dtype=torch.int64),
        "python_gauss": float("nan") if py_gauss is None else float(py_gauss),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    gauss = state["python_gauss"]
    internal = tuple(int(v) for v in state["python_internal"].tolist())
    random.setstate((state["python_version"], internal, None if math.isnan(gauss) else gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------- saving
def save_pipeline_folder(folder: str | os.PathLike[str], unet: UNet2DModel, noise_scheduler: Scheduler) -> Path:
    """Write a diffusers-layout pipeline folder (``model_index.json``, ``unet/``, ``scheduler/``).

    The folder loads with ``ddpm.DDPMPipeline.from_pretrained`` and with diffusers' ``DDPMPipeline``.
    """
    from ..pipelines import DDPMPipeline

    return DDPMPipeline(unet=unet, scheduler=noise_scheduler).save_pretrained(folder)


def _to_memory_format(unet: UNet2DModel, memory_format: torch.memory_format) -> UNet2DModel:
    """``unet`` with its 4-D weights in ``memory_format`` (in place; returns ``unet``)."""
    # Module.to accepts memory_format at run time; torch's type stubs list no overload with it.
    return unet.to(memory_format=memory_format)  # type: ignore[call-overload]


def _config_dict(obj: Any) -> dict[str, Any]:
    from ..config import config_to_dict

    return {k: v for k, v in config_to_dict(obj).items() if not k.startswith("_")}


def _torch_save(state: dict[str, Any], tmp: Path) -> None:
    """``torch.save`` into ``tmp`` through a Python file, so that a full disk is an ``OSError`` (ENOSPC) rather than
    torch's ``RuntimeError: ... unexpected pos``; any other failure of the writer becomes an ``OSError`` too."""
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
    except RuntimeError as exc:
        raise OSError(f"torch.save failed ({_first_line(exc)}); is the disk full?") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def write_guard(path: Path, what: str, *, resumable: bool = True) -> Iterator[None]:
    """Turn a failure to write ``what`` at ``path`` (disk full, permission denied...) into a one-line TrainingError.

    The cause is classified once, by :func:`ddpm.io.save_error` (ddpm.io's atomic writers raise its
    :class:`~ddpm.errors.SaveError` themselves; a plain ``OSError`` from a direct write is classified here), and the
    message adds what a training run needs: continue it with ``--resume`` (when ``resumable``: not for what is written
    before the run starts). Other DDPMErrors pass unchanged.

    Example::

        with write_guard(out / "data.json", "the run's data settings"):
            atomic_write_text(out / "data.json", text)
    """
    try:
        yield
    except SaveError as exc:
        raise TrainingError(f"cannot write {what}: {exc}. Then continue the run with --resume") from exc
    except DDPMError:
        raise
    except OSError as exc:
        raise TrainingError(
            f"cannot write {what}: {save_error(path, exc)}. Then continue the run with --resume"
        ) from exc


@contextlib.contextmanager
def _restoring(path: Path, entry: str) -> Iterator[None]:
    """Turn the errors of loading a checkpoint entry into the model (shapes, names) into a TrainingError."""
    try:
        yield
    except DDPMError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise TrainingError(
            f"{path}: checkpoint entry {entry!r} does not fit this model ({type(exc).__name__}: {_first_line(exc)}); "
            "the file is damaged or from another run: restore it from a copy, or start over without --resume"
        ) from None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_tensor_dict(value: object) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _is_json_object(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except (ValueError, RecursionError):
        return False


def _is_optimizer_state(value: object) -> bool:
    if not isinstance(value, dict) or not isinstance(value.get("state"), dict):
        return False
    groups = value.get("param_groups")
    return isinstance(groups, list) and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)


def _is_ema_state(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    return not value or (_is_tensor_dict(value.get("shadow")) and _is_int(value.get("num_updates")))


#: The tensors and numbers of the ``rng`` entry (see :func:`_rng_state`).
_RNG_ENTRIES: dict[str, Callable[[object], bool]] = {
    "torch": lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8,
    "numpy_keys": lambda v: isinstance(v, torch.Tensor) and v.numel() == 624,
    "numpy_pos": _is_int,
    "numpy_has_gauss": _is_int,
    "numpy_gauss": lambda v: isinstance(v, float),
    "python_version": _is_int,
    "python_internal": lambda v: isinstance(v, torch.Tensor) and v.ndim == 1,
    "python_gauss": lambda v: isinstance(v, float),
}

#: Each checkpoint entry: the test of its value and what it should be, for the message.
_CHECKPOINT_ENTRIES: dict[str, tuple[Callable[[object], bool], str]] = {
    "step": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "elapsed_seconds": (
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
        "a number of seconds >= 0",
    ),
    "model": (_is_tensor_dict, "a dict of weight tensors by parameter name"),
    "ema": (_is_ema_state, "{} or a dict with 'shadow' (tensors by name) and 'num_updates'"),
    "optimizer": (_is_optimizer_state, "an optimiser state dict with 'state' and 'param_groups'"),
    "grad_scaler": (lambda v: isinstance(v, dict), "a dict"),
    "rng": (
        lambda v: isinstance(v, dict) and all(k in v and test(v[k]) for k, test in _RNG_ENTRIES.items()),
        "a dict of the RNG states (" + ", ".join(_RNG_ENTRIES) + ")",
    ),
    "training_config": (_is_json_object, "a JSON object as text"),
    "unet_config": (_is_json_object, "a JSON object as text"),
    "scheduler_config": (_is_json_object, "a JSON object as text"),
    "param_names": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names"),
}


def _check_checkpoint_entries(state: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint entry of the wrong type (a hand-edited or foreign file), naming the file and the entry."""
    from ..config import show_value

    for key, (test, expected) in _CHECKPOINT_ENTRIES.items():
        if key in state and not test(state[key]):
            value = state[key]
            shown = show_value(value, 60) if isinstance(value, (str, int, float, type(None))) else type(value).__name__
            raise TrainingError(
                f"{path}: checkpoint entry {key!r} is {shown}, expected {expected}; the file was not written by "
                "this trainer or was damaged: restore it from a copy, or start over without --resume"
            )


def no_checkpoint_yet(folder: Path) -> str:
    """The message for ``--resume`` on a run folder that has no checkpoint yet."""
    return (
        f"{folder} has no {CHECKPOINT_NAME} yet (the run stopped before its first checkpoint); start again without "
        "--resume (checkpoints are saved every --checkpoint-every steps, every --checkpoint-minutes, at the end and "
        "on Ctrl-C)"
    )


def _log_record(line: bytes) -> dict[str, Any] | None:
    """A line of ``log.jsonl`` as a dict with an integer ``step``; None when it is not one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("step"), int) and not isinstance(record["step"], bool)
    return record if ok else None


#: Files whose presence (without a run's files) means a folder holds a saved model that a run would replace.
_SAVED_MODEL_FILES = {
    "model_index.json": "a saved pipeline",
    "config.json": "a saved model",
}
#: Files that make a folder a training run (what ``--resume`` continues).
_RUN_FILES = (CHECKPOINT_NAME, TrainingConfig.config_name)


def prepare_run_folder(out: str | os.PathLike[str], *, resume: bool = False, overwrite: bool = False) -> Path:
    """Check what ``ddpm train --out`` may do with ``out`` before any work starts; create it for a new run.

    * ``resume``: ``out`` must be a run folder with a checkpoint (else the message says what is missing and what to
      do instead).
    * A new run refuses a folder that holds a training run with a checkpoint (``--resume`` it, or ``overwrite``),
      and a folder that holds a saved pipeline or model but no run (it would be replaced: pass ``overwrite``), with
      ``ddpm.io.check_save_folder``'s judgement of what a folder holds. A run folder without a checkpoint (a run
      stopped before its first one) starts again.

    Returns:
        ``out`` as a Path.

    Raises:
        TrainingError: A resume without a checkpoint, an existing run, or the folder cannot be created.
        OverwriteError: ``out`` is a file, or holds a saved model and ``overwrite`` is False.
    """
    from ..errors import OverwriteError
    from ..io import check_save_folder

    out = Path(out)
    if resume:
        if not out.is_dir():
            kind = "a file, not a run folder" if out.exists() else "not there (no such folder)"
            raise TrainingError(f"--resume: {out} is {kind}; give the --out folder of the run to continue")
        if (out / CHECKPOINT_NAME).exists():
            return out
        if (out / TrainingConfig.config_name).exists():
            raise TrainingError(no_checkpoint_yet(out))
        raise TrainingError(
            f"--resume: {out} is not a training run (it has no {CHECKPOINT_NAME}); start a run there without --resume"
        )
    if out.exists() and not out.is_dir():
        raise TrainingError(f"--out {out} is a file, not a folder; choose another --out")
    if (out / CHECKPOINT_NAME).exists() and not overwrite:
        raise TrainingError(
            f"{out} already holds a training run; pass --resume to continue it, --overwrite to start it over, or "
            "choose another --out"
        )
    is_run = any((out / name).exists() for name in _RUN_FILES)
    try:
        with write_guard(out, "the run folder", resumable=False):
            check_save_folder(
                out, what="a training run", owned={}, foreign={} if is_run else _SAVED_MODEL_FILES, overwrite=overwrite
            )
    except OverwriteError as exc:
        python_advice = "pass overwrite=True"  # check_save_folder speaks to Python callers; say it for the CLI
        text = str(exc)
        if python_advice in text:
            text = text.replace(python_advice, "pass --overwrite")
        else:
            text += " (ddpm train: choose another --out, or pass --overwrite)"
        raise OverwriteError(text.replace("Save to another folder", "Choose another --out")) from None
    return out


# ---------------------------------------------------------------------------------------------------- precision
def _cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is emulated, ~3x slower
    than fp32 (measured on a 2-core AMD EPYC with AVX2 only)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's probes (private, so looked up)
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _resolve_precision(precision: str, device: torch.device) -> str:
    """The ``DTYPES`` name the forward pass autocasts to on ``device``: ``auto`` is bf16 where the hardware computes
    it (fp16 on older GPUs, fp32 on CPUs without bf16 instructions)."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and _cpu_has_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError(
            "precision 'fp16' (with a gradient scaler) needs a CUDA device; use 'bf16' or 'fp32' on CPU"
        )
    if precision in DTYPES:
        return precision
    raise TrainingError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


# ---------------------------------------------------------------------------------------------------- the trainer
class Trainer:
    """Trains a UNet2DModel on a dataset of uint8 images with the DDPM objective.

    Args:
        unet: The model to train (a fresh ``UNet2DModel`` or a pretrained one to fine-tune). Trained in float32.
        noise_scheduler: The scheduler that defines the forward process (``add_noise``) and is saved with the
            pipeline, e.g. ``DDPMScheduler(num_train_timesteps=1000)``.
        dataset: Items are uint8 tensors of shape (C, H, W) matching ``unet.config`` (see :mod:`ddpm.training.data`).
        config: The hyper-parameters.
        out_dir: The output folder (see the module docstring).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (see
            :func:`ddpm.runtime.resolve_device`; under torchrun each process takes ``cuda:<LOCAL_RANK>``).

    Raises:
        TrainingError: The batch size does not divide over the processes and accumulation steps, the data does
            not fit the model, or the device is unknown or unavailable.

    Example::

        trainer = Trainer(unet, DDPMScheduler(), load_training_data("mnist", 32), TrainingConfig(max_steps=2000), "out")
        trainer.train()          # or trainer.train(resume=True) to continue from out/checkpoint.pt
    """

    def __init__(
        self,
        unet: UNet2DModel,
        noise_scheduler: Any,
        dataset: torch.utils.data.Dataset[torch.Tensor],
        config: TrainingConfig,
        out_dir: str | os.PathLike[str],
        *,
        device: str | torch.device | None = "auto",
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.dist = Distributed()
        try:
            self.device = resolve_device(device, self.dist.local_rank)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        self.precision = _resolve_precision(config.precision, self.device)
        per_step = self.dist.world_size * config.grad_accumulation
        if config.batch_size % per_step:
            raise TrainingError(
                f"batch_size {config.batch_size} does not divide into {self.dist.world_size} process(es) × "
                f"{config.grad_accumulation} accumulation step(s); choose a multiple of {per_step}"
            )
        self.micro_batch = config.batch_size // per_step
        if config.warmup > WARMUP_WARNING_FRACTION * config.max_steps:
            logger.warning(
                "warmup_steps %d is more than %d %% of the run's %d steps: the learning rate reaches its peak late "
                "or never (leave --warmup-steps out for 10 %% of the steps)",
                config.warmup,
                round(WARMUP_WARNING_FRACTION * 100),
                config.max_steps,
            )
        if not isinstance(dataset, Sized):
            raise TrainingError(f"the dataset ({type(dataset).__name__}) has no len(); the trainer samples by index")
        self.dataset = dataset
        self.dataset_size = len(dataset)
        self.noise_scheduler = noise_scheduler
        self._check_data(unet)

        self.unet = unet.to(self.device, dtype=torch.float32)
        if config.channels_last:
            _to_memory_format(self.unet, torch.channels_last)
        self.unet.train()
        self.ema = (
            EMA(
                self.unet,
                inv_gamma=config.ema_inv_gamma,
                power=config.ema_power,
                min_decay=config.ema_min_decay,
                max_decay=config.ema_max_decay,
            )
            if config.use_ema
            else None
        )
        self.optimizer = torch.optim.AdamW(
            self.unet.parameters(),
            lr=learning_rate_at(0, config),
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
            fused=self.device.type == "cuda",  # one kernel for the whole update instead of a few per tensor
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.step = 0
        self.elapsed_before = 0.0  # wall seconds spent by earlier invocations (resume)
        self._ddp: nn.parallel.DistributedDataParallel | None = None  # the DDP wrapper, made in train() when needed

    # ------------------------------------------------------------------ checks
    def _check_data(self, unet: UNet2DModel) -> None:
        if self.dataset_size == 0:
            raise TrainingError("the dataset is empty")
        item = self.dataset[0]
        cfg = unet.config
        expected = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if not isinstance(item, torch.Tensor) or item.dtype != torch.uint8 or tuple(item.shape) != expected:
            got = f"{item.dtype} {tuple(item.shape)}" if isinstance(item, torch.Tensor) else type(item).__name__
            raise TrainingError(
                f"the dataset gives {got} images, the UNet expects uint8 (C, H, W) = {expected} "
                f"(in_channels={cfg.in_channels}, sample_size={cfg.sample_size}); match --resolution and --color to "
                "the model"
            )

    # ------------------------------------------------------------------ precision
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.precision])

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs; tensors, numbers and strings only."""
        return {
            "format": _CHECKPOINT_FORMAT,
            "step": self.step,
            "elapsed_seconds": self.elapsed_before + self._elapsed(),
            "model": {k: v.detach().clone() for k, v in self.unet.state_dict().items()},
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "optimizer": self.optimizer.state_dict(),
            # The optimiser state is indexed by parameter position; the names make it loadable into a model (another
            # implementation of the same architecture) that registers its parameters in another order.
            "param_names": [name for name, _ in self.unet.named_parameters()],
            "grad_scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": _rng_state(),
            "training_config": json.dumps(self.config.to_dict(), sort_keys=True),
            "unet_config": json.dumps(_config_dict(self.unet.config), sort_keys=True),
            "scheduler_config": json.dumps(_config_dict(self.noise_scheduler.config), sort_keys=True),
            "world_size": self.dist.world_size,
        }

    def save_checkpoint(self) -> None:
        """Write the pipeline folder, then ``checkpoint.pt``, each atomically; rank 0 only, other ranks wait.

        The checkpoint comes last, so a folder with a checkpoint always has the pipeline ``--resume`` reads the model's
        architecture from. A failed write (a full disk) leaves the previous checkpoint as it was.

        Raises:
            TrainingError: A file cannot be written (the path, the reason and what to do).
        """
        if self.dist.is_main:
            state = self.state_dict()
            with write_guard(self.out_dir, "the pipeline folder"):
                self.save_pipeline(self.out_dir)
            with write_guard(self.checkpoint_path, "the training checkpoint"):
                atomic_write(self.checkpoint_path, lambda tmp: _torch_save(state, tmp))
        self.dist.barrier()

    def load_checkpoint(self, path: str | os.PathLike[str] | None = None) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint`.

        Raises:
            TrainingError: The file is missing or not a ddpm training checkpoint, or it was made with a different
                model, scheduler or training config (other than the keys in ``RESUMABLE_CHANGES``).
            WeightsError: The file is damaged (truncated, corrupt).
            UnsafeCheckpointError: The file is a pickle that references code; it was refused and nothing ran.
        """
        from ..io import load_pickle

        path = Path(path) if path is not None else self.checkpoint_path
        if not path.exists():
            if path.parent.is_dir() and (path.parent / TrainingConfig.config_name).exists():
                raise TrainingError(no_checkpoint_yet(path.parent))
            raise TrainingError(f"--resume: no checkpoint at {path}; start without --resume to train from scratch")
        state = load_pickle(path, what="training checkpoint")  # torch.load(weights_only=True): no code runs
        if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
            raise TrainingError(f"{path} is not a ddpm training checkpoint")
        missing = [k for k in _CHECKPOINT_KEYS if k not in state]
        if missing:
            raise TrainingError(f"{path} is an incomplete ddpm training checkpoint: it lacks {', '.join(missing)}")
        _check_checkpoint_entries(state, path)
        self._check_compatible(state, path)
        with _restoring(path, "model"):
            self.unet.load_state_dict(state["model"])
        if self.ema is not None:
            if not state["ema"]:
                raise TrainingError(f"{path} was trained without EMA; resume with use_ema off")
            with _restoring(path, "ema"):
                self.ema.load_state_dict(state["ema"])
            self.ema.to(self.device)
        with _restoring(path, "optimizer"):
            self.optimizer.load_state_dict(self._reorder_optimizer_state(state, path))
        if self.scaler is not None and state["grad_scaler"]:
            with _restoring(path, "grad_scaler"):
                self.scaler.load_state_dict(state["grad_scaler"])
        with _restoring(path, "rng"):
            _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.elapsed_before = float(state["elapsed_seconds"])

    def _reorder_optimizer_state(self, state: dict[str, Any], path: Path) -> dict[str, Any]:
        """The saved optimiser state with parameter indices mapped, by name, to this model's parameter order."""
        saved_names = state.get("param_names") or list(state["ema"].get("shadow", {})) or list(state["model"])
        current = {name: i for i, (name, _) in enumerate(self.unet.named_parameters())}
        if set(saved_names) != set(current):
            raise TrainingError(f"{path}: the optimiser state does not fit the model's parameters")
        index = {old: current[name] for old, name in enumerate(saved_names)}
        optimizer = state["optimizer"]
        return {
            "state": {index[int(k)]: v for k, v in optimizer["state"].items()},
            # load_state_dict pairs a group's ids with the current parameters by position: list them in our order.
            "param_groups": [
                {**g, "params": sorted(index[int(i)] for i in g["params"])} for g in optimizer["param_groups"]
            ],
        }

    def _check_compatible(self, state: dict[str, Any], path: Path) -> None:
        problems = []
        for key, current in (
            ("unet_config", _config_dict(self.unet.config)),
            ("scheduler_config", _config_dict(self.noise_scheduler.config)),
        ):
            saved = json.loads(state[key])
            current = json.loads(json.dumps(current))  # tuples -> lists, as saved
            # Keys only one side has are defaults of another implementation's config (diffusers' configs carry
            # more keys than ddpm's); only keys both sides know must agree.
            diff = sorted(k for k in set(saved) & set(current) if saved[k] != current[k])
            if diff:
                problems.append(f"{key} differs in {', '.join(diff)}")
        saved_training = json.loads(state["training_config"])
        now = self.config.to_dict()
        diff = sorted(
            k
            for k in set(saved_training) | set(now)
            if saved_training.get(k) != now.get(k) and k not in RESUMABLE_CHANGES
        )
        if diff:
            detail = ", ".join(f"{k}: {saved_training.get(k)!r} -> {now.get(k)!r}" for k in diff)
            problems.append(f"training config differs ({detail})")
        if problems:
            raise TrainingError(
                f"cannot resume from {path}: " + "; ".join(problems) + ". Resume with the settings of the original run "
                f"(only {', '.join(sorted(RESUMABLE_CHANGES))} may change) or start a new --out folder."
            )

    def save_pipeline(self, folder: str | os.PathLike[str]) -> Path:
        """Write the pipeline folder with the EMA weights (raw weights without EMA), leaving training untouched."""
        unet = _to_memory_format(copy.deepcopy(self.unet).to("cpu"), torch.contiguous_format).eval()
        if self.ema is not None:
            self.ema.copy_to(unet)
        return save_pipeline_folder(folder, unet, self.noise_scheduler)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_grid(self, use_ema: bool = True) -> Any:
        """A grid of ``num_samples`` DDIM samples (``sample_steps`` steps, fixed seed) as a PIL image."""
        from .sampling import ddim_grid

        unet = _to_memory_format(copy.deepcopy(self.unet), torch.contiguous_format).eval()
        if use_ema and self.ema is not None:
            self.ema.copy_to(unet)
        return ddim_grid(unet, self.noise_scheduler, self.config.num_samples, self.config.sample_steps, seed=0)

    def _save_samples(self) -> None:
        from ..image_processing import save_image

        folder = self.out_dir / "samples"
        grids = [("", True)] + ([("_raw", False)] if self.ema is not None else [])
        for suffix, use_ema in grids:
            save_image(self.sample_grid(use_ema), folder / f"step_{self.step:07d}{suffix}.png")

    # ------------------------------------------------------------------ the loop
    def _elapsed(self) -> float:
        return time.monotonic() - self._t_start if hasattr(self, "_t_start") else 0.0

    def _batches(self) -> Iterator[torch.Tensor]:
        sampler = StepBatchSampler(
            self.dataset_size,
            self.micro_batch,
            accumulation=self.config.grad_accumulation,
            world_size=self.dist.world_size,
            rank=self.dist.rank,
            seed=self.config.seed,
            start_step=self.step,
        )
        self._sampler = sampler
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.config.num_workers,
            persistent_workers=self.config.num_workers > 0,
        )
        return iter(loader)

    def _step_inputs(self, generator: torch.Generator, shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """Timesteps (G,), noise (G, C, H, W) and flip mask (G,) for the whole global batch of this step."""
        g = self.config.batch_size
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (g,), generator=generator)
        noise = torch.randn((g, *shape), generator=generator)
        flip = torch.rand(g, generator=generator) < 0.5
        return t, noise, flip

    def train(self, resume: bool = False, *, until_step: int | None = None) -> dict[str, float]:
        """Run until ``max_steps`` (or ``max_minutes``); checkpoint, sample and log on the way.

        Args:
            resume: Continue from ``out_dir/checkpoint.pt``.
            until_step: Stop (after saving a checkpoint) at this step, before ``max_steps``; the learning-rate
                schedule still ends at ``max_steps``, so a later ``train(resume=True)`` continues the same run.

        Returns:
            ``{"step": ..., "loss": ..., "loss_steps": ..., "elapsed_seconds": ...}`` at the end: ``loss`` is the mean
            loss over the last ``loss_steps`` steps (``log_every`` at most), the number the progress bar shows.

        Raises:
            TrainingError: Resume problems, a file that cannot be written, or a non-finite loss (with the step and a
                hint).
            TrainingInterrupted: SIGINT or SIGTERM stopped the run after a step, whose checkpoint was saved.
        """
        cfg = self.config
        with self.dist.joined(self.device):
            if resume:
                self.load_checkpoint()
            if self.dist.is_main:
                with write_guard(self.out_dir, "the run folder"):
                    self.out_dir.mkdir(parents=True, exist_ok=True)
                    self._truncate_log(resume)
                    cfg.save_json(self.out_dir)
            if self.dist.enabled:
                ids = [self.device.index] if self.device.type == "cuda" else None
                self._ddp = nn.parallel.DistributedDataParallel(self.unet, device_ids=ids)
            with _StopSignals() as signals:
                return self._loop(min(until_step, cfg.max_steps) if until_step is not None else cfg.max_steps, signals)

    def _truncate_log(self, resume: bool) -> None:
        """Start the log afresh, or on resume drop the lines of steps after the checkpoint (logged again).

        A last line cut short (the process was killed while appending it) is dropped with a warning; a damaged line
        before it is an error that names the file and the line.
        """
        path = self.out_dir / LOG_NAME
        if not resume:
            if path.exists():
                atomic_write_text(path, "")
            return
        if not path.exists():
            return
        with open_regular(path, what="training log", error=TrainingError) as f:
            lines = f.read().splitlines(keepends=True)
        kept = []
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            record = _log_record(line)
            if record is None and i == last:
                logger.warning("%s: dropped its last line, cut short when the run was stopped", path)
                continue
            if record is None:
                raise TrainingError(
                    f"{path}, line {i + 1}: not a log record (a JSON object with an integer 'step'); delete or fix "
                    "that line (the log is only a record: the checkpoint holds the run), then resume again"
                )
            if record["step"] <= self.step:
                kept.append(line)
        atomic_write(path, lambda tmp: tmp.write_bytes(b"".join(kept)))

    def _loop(self, last_step: int, signals: _StopSignals) -> dict[str, float]:
        from tqdm.auto import tqdm

        cfg = self.config
        self._t_start = time.monotonic()
        last_checkpoint = time.monotonic()
        batches = self._batches()
        shape = tuple(self.dataset[0].shape)
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not (cfg.progress and self.dist.is_main),
            desc="train",
            dynamic_ncols=True,
        )
        log_path = self.out_dir / LOG_NAME
        recent: deque[float] = deque(maxlen=cfg.log_every)  # the losses the bar and the result average
        window_loss, window_steps, window_t = 0.0, 0, time.monotonic()
        interrupted = False
        try:
            while self.step < last_step:
                loss, grad_norm, lr, decay = self._train_step(batches, shape)
                self.step += 1
                # One all-reduce per step: the mean loss over ranks, and rank 0's clock (time budget, checkpoint
                # interval) and any rank's stop signal, for decisions every rank must take together (saving ends in
                # a barrier).
                main = self.dist.is_main
                out_of_time = main and cfg.max_minutes > 0 and self._elapsed() >= cfg.max_minutes * 60
                since_checkpoint = time.monotonic() - last_checkpoint
                due_time = main and cfg.checkpoint_minutes > 0 and since_checkpoint >= cfg.checkpoint_minutes * 60
                signalled = signals.received is not None
                flags = self.dist.all_reduce_sum(
                    torch.tensor([loss, out_of_time, due_time, signalled], dtype=torch.float64)
                )
                mean_loss = flags[0].item() / self.dist.world_size
                stop, due_time, interrupted = flags[1].item() > 0, flags[2].item() > 0, flags[3].item() > 0
                window_loss += mean_loss
                window_steps += 1
                if not math.isfinite(mean_loss):
                    raise TrainingError(
                        f"the loss became {mean_loss} at step {self.step}; lower --lr, use --precision bf16 or fp32, "
                        "or check the data for NaN/inf"
                    )
                recent.append(mean_loss)
                bar.update(1)
                bar.set_postfix_str(f"mean loss (last {len(recent)}) {sum(recent) / len(recent):.4f}, lr {lr:.2e}")
                done = self.step >= last_step or stop or interrupted
                if self.step % cfg.log_every == 0 or done:
                    now = time.monotonic()
                    record = {
                        "step": self.step,
                        "loss": window_loss / window_steps,
                        "lr": lr,
                        "grad_norm": grad_norm,
                        "ema_decay": decay,
                        "images_per_second": window_steps * cfg.batch_size / max(now - window_t, 1e-9),
                        "elapsed_seconds": self.elapsed_before + self._elapsed(),
                    }
                    window_loss, window_steps, window_t = 0.0, 0, now
                    if self.dist.is_main:
                        with write_guard(log_path, "the training log"), open(log_path, "a", encoding="utf-8") as f:
                            f.write(json.dumps(record) + "\n")
                sample_due = cfg.sample_every and self.step % cfg.sample_every == 0
                if self.dist.is_main and not interrupted and (done or sample_due):
                    with write_guard(self.out_dir / "samples", "the sample grids"):
                        self._save_samples()
                if done or due_time or (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0):
                    self.save_checkpoint()
                    last_checkpoint = time.monotonic()
                if interrupted:
                    raise TrainingInterrupted(self.step, self.checkpoint_path)
                if stop:
                    logger.info("stopping at step %d: --max-minutes %.1f reached", self.step, cfg.max_minutes)
                    break
        finally:
            bar.close()
        return {
            "step": self.step,
            "loss": sum(recent) / len(recent) if recent else float("nan"),
            "loss_steps": len(recent),
            "elapsed_seconds": self.elapsed_before + self._elapsed(),
        }

    def _train_step(self, batches: Iterator[torch.Tensor], shape: tuple[int, ...]) -> tuple[float, float, float, float]:
        """One optimisation step over ``grad_accumulation`` micro-batches; returns (loss, grad norm, lr, EMA decay)."""
        cfg = self.config
        t_all, noise_all, flip_all = self._step_inputs(step_generator(cfg.seed, self.step), shape)
        lr = learning_rate_at(self.step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        model: nn.Module = self._ddp if self._ddp is not None else self.unet
        total = 0.0
        for micro in range(cfg.grad_accumulation):
            part = self._sampler.rank_slice(micro)
            images = next(batches)
            x0 = to_model_range(images).to(self.device, non_blocking=True)
            if cfg.random_flip:
                x0 = torch.where(flip_all[part].to(self.device).view(-1, 1, 1, 1), x0.flip(-1), x0)
            noise = noise_all[part].to(self.device)
            t = t_all[part].to(self.device)
            if cfg.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
                noise = noise.contiguous(memory_format=torch.channels_last)
            last_micro = micro == cfg.grad_accumulation - 1
            # DDP all-reduces the gradients in backward(): only on the last micro-batch.
            sync = self._ddp.no_sync() if self._ddp is not None and not last_micro else contextlib.nullcontext()
            with sync:
                loss = diffusion_loss(model, self.noise_scheduler, x0, noise, t, autocast=self._autocast())
                scaled = loss / cfg.grad_accumulation
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += loss.item() / cfg.grad_accumulation
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.unet.parameters(), max_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        decay = self.ema.update(self.unet) if self.ema is not None else 0.0
        return total, grad_norm, lr, decay
