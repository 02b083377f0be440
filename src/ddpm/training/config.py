"""The training configuration: every knob of :class:`~ddpm.training.Trainer`, and the shape of a new model, each
with its default, in one place (``ddpm train`` reads its defaults from here).
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Literal

from ..config import ConfigBase, check
from ..errors import DDPMError

if TYPE_CHECKING:  # pragma: no cover
    from ..schedulers import DDPMScheduler

__all__ = [
    "AUTO_WARMUP_FRACTION",
    "DEFAULT_WARMUP_STEPS",
    "MAX_CHANNELS",
    "MAX_RESOLUTION",
    "MAX_TRAINING_SEED",
    "PRECISIONS",
    "RESUMABLE_CHANGES",
    "ModelSpec",
    "TrainingConfig",
    "build_unet_config",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The warm-up of a run that does not set ``warmup_steps``: this many steps, or :data:`AUTO_WARMUP_FRACTION` of
#: ``max_steps`` when that is fewer (a 50-step run warms up for 5 steps, not 500).
DEFAULT_WARMUP_STEPS = 500
AUTO_WARMUP_FRACTION = 0.1
#: The most channels a level of a new model may have, and the largest side of its images: beyond these a model does
#: not fit in any memory (``ddpm train`` refuses them before building it).
MAX_CHANNELS = 8192
MAX_RESOLUTION = 4096
#: The largest training seed: step ``s`` draws from a generator seeded ``(seed << 32) + s + 1``, which must stay
#: below 2**64.
MAX_TRAINING_SEED = 2**32 - 1

#: Keys a resumed run may change. All but ``max_steps`` leave the weights unchanged; a new ``max_steps`` lengthens or
#: shortens the run, and the cosine learning-rate decay follows the new end from the resumed step on.
RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "max_minutes",
        "sample_every",
        "checkpoint_every",
        "checkpoint_minutes",
        "log_every",
        "num_workers",
        "progress",
    }
)


@dataclasses.dataclass(frozen=True)
class TrainingConfig(ConfigBase):
    """Hyper-parameters of a training run (saved as ``training_config.json`` in the output folder).

    Args:
        max_steps: Optimisation steps of the whole run; the cosine learning-rate decay ends here.
        batch_size: Global batch per optimisation step, over all processes and accumulation micro-batches. Must
            divide by ``world_size × grad_accumulation``.
        grad_accumulation: Micro-batches summed per optimisation step (to fit a large batch in little memory).
        learning_rate: Peak AdamW learning rate, reached after the warm-up.
        warmup_steps: Steps of linear warm-up from 0. None (the default): 10 % of ``max_steps``, at most 500 (see
            :attr:`warmup`), so that a short run reaches its peak learning rate; a warm-up above half the run is
            allowed but the trainer warns about it.
        min_lr_ratio: The learning rate at ``max_steps``, as a fraction of the peak (cosine decay in between).
        adam_beta1: AdamW β1.
        adam_beta2: AdamW β2.
        adam_eps: AdamW ε.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: Clip the global gradient norm to this value (0 turns clipping off).
        use_ema: Keep an EMA of the weights; the saved pipeline then holds the EMA weights.
        ema_max_decay: Upper bound of the EMA decay.
        ema_min_decay: Lower bound of the EMA decay.
        ema_inv_gamma: EMA warm-up time scale (see :mod:`ddpm.training.ema`).
        ema_power: EMA warm-up exponent.
        precision: ``"bf16"`` autocast (CPU and CUDA), ``"fp16"`` autocast with a gradient scaler (CUDA only),
            ``"fp32"``, or ``"auto"`` (bf16 where the hardware computes it: CUDA GPUs that support it, CPUs with
            AVX512-BF16 or AMX; fp16 on older GPUs; else fp32, since emulated bf16 is ~3x slower than fp32). The
            loss is always computed in float32 and the weights stay float32.
        channels_last: Force channels-last activations on every device. The UNet already runs channels-last on
            CPUs; on CUDA it runs in the standard layout, because PyTorch's CUDA GroupNorm has no channels-last kernel.
        random_flip: Flip training images left-right with probability 1/2 (off for digits).
        seed: Seed of the initial weights' RNG, the data order, the noise and the timesteps (0 to 2**32-1).
        log_every: Steps between JSONL log lines.
        sample_every: Steps between sample grids (0: only at the end).
        sample_steps: DDIM steps for the sample grids.
        num_samples: Images per sample grid.
        checkpoint_every: Steps between checkpoints (0: only at the end and by ``checkpoint_minutes``).
        checkpoint_minutes: Also checkpoint when this many minutes passed since the last one (0: off).
        max_minutes: Stop (after saving) when this much wall time has passed in this invocation (0: no limit).
        num_workers: DataLoader worker processes (0 loads in the main process).
        progress: Show a tqdm progress bar with the loss.
    """

    max_steps: int = 10_000
    batch_size: int = 64
    grad_accumulation: int = 1
    learning_rate: float = 5e-4
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    use_ema: bool = True
    ema_max_decay: float = 0.999
    ema_min_decay: float = 0.0
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    random_flip: bool = False
    seed: int = 0
    log_every: int = 50
    sample_every: int = 1000
    sample_steps: int = 20
    num_samples: int = 16
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 10.0
    max_minutes: float = 0.0
    num_workers: int = 0
    progress: bool = True

    _class_name = "TrainingConfig"
    config_name = "training_config.json"

    @property
    def warmup(self) -> int:
        """The warm-up steps in effect: ``warmup_steps``, or when it is None ``min(500, max_steps // 10)``."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(DEFAULT_WARMUP_STEPS, int(self.max_steps * AUTO_WARMUP_FRACTION))

    def validate(self) -> None:
        for key in ("max_steps", "batch_size", "grad_accumulation", "sample_steps", "num_samples", "log_every"):
            check(getattr(self, key) >= 1, self, key, "expected a positive integer")
        for key in ("sample_every", "checkpoint_every", "num_workers"):
            check(getattr(self, key) >= 0, self, key, "expected an integer >= 0")
        if self.warmup_steps is not None:
            check(self.warmup_steps >= 0, self, "warmup_steps", "expected an integer >= 0, or null (automatic)")
        check(0 <= self.seed <= MAX_TRAINING_SEED, self, "seed", "expected an integer from 0 to 2**32-1")
        for f in dataclasses.fields(self):  # inf passes the bounds below (lr > 0...), nan fails them unclearly
            value = getattr(self, f.name)
            if isinstance(value, float):
                check(math.isfinite(value), self, f.name, "expected a finite number")
        for key in ("grad_clip", "checkpoint_minutes", "max_minutes", "weight_decay"):
            check(getattr(self, key) >= 0, self, key, "expected a number >= 0")
        check(self.learning_rate > 0, self, "learning_rate", "expected a positive number")
        check(0.0 <= self.min_lr_ratio <= 1.0, self, "min_lr_ratio", "expected a number in [0, 1]")
        check(
            0.0 <= self.ema_min_decay <= self.ema_max_decay,
            self,
            "ema_min_decay",
            "expected 0 <= ema_min_decay <= ema_max_decay",
        )
        check(self.ema_max_decay < 1.0, self, "ema_max_decay", "expected a number below 1")
        check(self.ema_inv_gamma > 0, self, "ema_inv_gamma", "expected a positive number")
        check(self.adam_eps > 0, self, "adam_eps", "expected a positive number")
        check(self.ema_power > 0, self, "ema_power", "expected a positive number")
        for key in ("adam_beta1", "adam_beta2"):
            check(0.0 <= getattr(self, key) < 1.0, self, key, "expected a number in [0, 1)")


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
    if not all(1 <= c <= MAX_CHANNELS for c in channels):
        raise DDPMError(f"--channels {list(channels)}: each channel count must be from 1 to {MAX_CHANNELS}")
    if not 1 <= resolution <= MAX_RESOLUTION:
        raise DDPMError(f"--resolution {resolution} must be from 1 to {MAX_RESOLUTION} pixels")
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


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The model ``ddpm train`` builds when it starts from scratch: the UNet's shape and the noise schedule.

    The defaults are the command's defaults (a 3-level digit model, the linear schedule of the google/ddpm-* models).

    Args:
        channels: ``block_out_channels``, one per resolution level.
        layers_per_block: ResNet blocks per level.
        attention_levels: Levels (0 = full resolution) with self-attention; None: the lowest-resolution level.
        norm_groups: GroupNorm groups; must divide every channel count.
        attention_head_dim: Channels per attention head; None: one head.
        num_train_timesteps: Diffusion steps T.
        beta_schedule: The noise schedule's name.
        prediction_type: What the UNet predicts: ``epsilon``, ``v_prediction`` or ``sample``.
    """

    channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 1
    attention_levels: tuple[int, ...] | None = None
    norm_groups: int = 8
    attention_head_dim: int | None = None
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"

    def unet_config(self, resolution: int, in_channels: int) -> dict[str, Any]:
        """The UNet2DModel config of this shape for ``resolution``² images with ``in_channels`` channels.

        Raises:
            DDPMError: See :func:`build_unet_config`.
        """
        attention = self.attention_levels or (len(self.channels) - 1,)
        return build_unet_config(
            self.channels,
            self.layers_per_block,
            attention,
            self.norm_groups,
            resolution,
            in_channels,
            self.attention_head_dim,
        )

    def noise_scheduler(self) -> DDPMScheduler:
        """The ``DDPMScheduler`` of this schedule (the forward process the model is trained on)."""
        from ..schedulers import DDPMScheduler

        return DDPMScheduler(
            num_train_timesteps=self.num_train_timesteps,
            beta_schedule=self.beta_schedule,
            prediction_type=self.prediction_type,
        )
