"""Pipelines: load a UNet and a scheduler together and generate images with one call.

All three classes share ``DiffusionPipeline``; the name only chooses the default step count and which
scheduler ``from_pretrained`` builds from the stored config:

| class | scheduler built by `from_pretrained` | default steps |
|---|---|---|
| `DDPMPipeline` | the one the checkpoint names | 1000 |
| `DDIMPipeline` | `DDIMScheduler` | 50 |
| `PNDMPipeline` | `PNDMScheduler` | 50 |

Modules: ``pipeline`` (``DiffusionPipeline``: the sampling loop), ``ddpm`` / ``ddim`` / ``pndm`` (the three classes),
``registry`` (``PIPELINES``), ``pretrained`` (``model_index.json``, ``from_pretrained`` / ``save_pretrained``),
``callbacks`` (per-step callbacks), ``protocols`` (``SchedulerLike``), ``batch`` (many images to a folder).
"""

from __future__ import annotations

from .callbacks import StepCallback, StepEndCallback
from .ddim import DDIMPipeline
from .ddpm import DDPMPipeline
from .img2img import ImageToImagePipeline
from .inversion import DDIMInversionPipeline
from .pipeline import DiffusionPipeline
from .pndm import PNDMPipeline
from .pretrained import MODEL_INDEX_NAME, ModelIndex, parse_model_index
from .protocols import SchedulerLike
from .registry import PIPELINES, register_pipeline
from .repaint import RePaintPipeline

__all__ = [
    "MODEL_INDEX_NAME",
    "PIPELINES",
    "DDIMInversionPipeline",
    "DDIMPipeline",
    "DDPMPipeline",
    "DiffusionPipeline",
    "ImageToImagePipeline",
    "ModelIndex",
    "PNDMPipeline",
    "RePaintPipeline",
    "SchedulerLike",
    "StepCallback",
    "StepEndCallback",
    "parse_model_index",
    "register_pipeline",
]
