"""The DDPM, DDIM and PNDM schedulers: one ``step()`` signature, interchangeable from one config.

``SCHEDULERS`` maps short names to classes, for command lines and configs::

    scheduler = SCHEDULERS["ddim"].from_pretrained("google/ddpm-cifar10-32")
"""

from __future__ import annotations

from ..outputs import SchedulerOutput
from .base import ClippingSchedulerConfig, Scheduler, SchedulerConfig
from .ddim import DDIMScheduler, DDIMSchedulerConfig
from .ddpm import DDPMScheduler, DDPMSchedulerConfig
from .pndm import PNDMScheduler, PNDMSchedulerConfig

__all__ = [
    "SCHEDULERS",
    "ClippingSchedulerConfig",
    "DDIMScheduler",
    "DDIMSchedulerConfig",
    "DDPMScheduler",
    "DDPMSchedulerConfig",
    "PNDMScheduler",
    "PNDMSchedulerConfig",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
]

#: Short name -> scheduler class.
SCHEDULERS: dict[str, type[Scheduler]] = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "pndm": PNDMScheduler}
