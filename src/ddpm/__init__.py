"""ddpm: denoising diffusion probabilistic models in PyTorch.

A drop-in for the parts of Hugging Face diffusers that DDPM-family users need: ``UNet2DModel``, the DDPM, DDIM and
PNDM schedulers behind one ``step()`` signature, and pipelines that load the google/ddpm-* Hub checkpoints.

Submodules are imported lazily, so ``import ddpm`` is cheap and never imports Pillow or tqdm.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS: dict[str, str] = {
    "UNet2DModel": "ddpm.models",
    "UNet2DConfig": "ddpm.models",
    "DDPMScheduler": "ddpm.schedulers",
    "DDIMScheduler": "ddpm.schedulers",
    "PNDMScheduler": "ddpm.schedulers",
    "SchedulerOutput": "ddpm.outputs",
    "UNet2DOutput": "ddpm.outputs",
    "ImagePipelineOutput": "ddpm.outputs",
    "DDPMPipeline": "ddpm.pipelines",
    "DDIMPipeline": "ddpm.pipelines",
    "PNDMPipeline": "ddpm.pipelines",
    "DiffusionPipeline": "ddpm.pipelines",
    "make_image_grid": "ddpm.image_processing",
    "randn_tensor": "ddpm.utils",
    "DDPMError": "ddpm.errors",
    "ConfigError": "ddpm.errors",
    "UnsupportedConfigError": "ddpm.errors",
    "WeightsError": "ddpm.errors",
    "UnsafeCheckpointError": "ddpm.errors",
    "CheckpointNotFoundError": "ddpm.errors",
    "OverwriteError": "ddpm.errors",
    "ResourceLimitError": "ddpm.errors",
    "SaveError": "ddpm.errors",
    "ImageError": "ddpm.errors",
    "DPMSolverMultistepScheduler": "ddpm.schedulers",
    "DPMSolverMultistepSchedulerConfig": "ddpm.schedulers",
    "EulerDiscreteScheduler": "ddpm.schedulers",
    "EulerAncestralDiscreteScheduler": "ddpm.schedulers",
    "HeunDiscreteScheduler": "ddpm.schedulers",
    "UniPCMultistepScheduler": "ddpm.schedulers",
    "UniPCMultistepSchedulerConfig": "ddpm.schedulers",
    "ImageToImagePipeline": "ddpm.pipelines",
    "DDIMInverseScheduler": "ddpm.schedulers",
    "DDIMInversionPipeline": "ddpm.pipelines",
    "RePaintScheduler": "ddpm.schedulers",
    "RePaintPipeline": "ddpm.pipelines",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .errors import (
        CheckpointNotFoundError,
        ConfigError,
        DDPMError,
        ImageError,
        OverwriteError,
        ResourceLimitError,
        SaveError,
        UnsafeCheckpointError,
        UnsupportedConfigError,
        WeightsError,
    )
    from .image_processing import make_image_grid
    from .models import UNet2DConfig, UNet2DModel
    from .outputs import ImagePipelineOutput, SchedulerOutput, UNet2DOutput
    from .pipelines import (
        DDIMInversionPipeline,
        DDIMPipeline,
        DDPMPipeline,
        DiffusionPipeline,
        ImageToImagePipeline,
        PNDMPipeline,
        RePaintPipeline,
    )
    from .schedulers import (
        DDIMInverseScheduler,
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        DPMSolverMultistepSchedulerConfig,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
        HeunDiscreteScheduler,
        PNDMScheduler,
        RePaintScheduler,
        UniPCMultistepScheduler,
        UniPCMultistepSchedulerConfig,
    )
    from .utils import randn_tensor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ddpm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
