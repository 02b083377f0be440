"""The DDPM, DDIM and PNDM schedulers: one ``step()`` signature, interchangeable from one config.

``SCHEDULERS`` maps short names to classes, for command lines and configs (the one registry of schedulers)::

    scheduler = SCHEDULERS["ddim"].from_pretrained("google/ddpm-cifar10-32")

The modules:

* ``schedules.py``: β_t and ᾱ_t of the forward process, in float64 (linear, scaled_linear, cosine, sigmoid).
* ``config.py``: :class:`SchedulerConfig` and :class:`ClippingSchedulerConfig`, the keys every scheduler reads.
* ``math.py``: the formulas the schedulers share: timestep spacings, x_0 / ε / v conversions, clipping of x̂_0.
* ``base.py``: :class:`Scheduler` (loading and saving, ``set_timesteps``, the single ``step()``, ``add_noise``) and
  the extension points a scheduler implements; its module docstring says how to add one.
* ``ddpm.py``, ``ddim.py``, ``pndm.py``: one algorithm each, with its config.
"""

from __future__ import annotations

from ..outputs import SchedulerOutput
from .base import ClippingSchedulerConfig, Scheduler, SchedulerConfig
from .ddim import DDIMScheduler, DDIMSchedulerConfig
from .ddpm import DDPMScheduler, DDPMSchedulerConfig
from .pndm import PNDMScheduler, PNDMSchedulerConfig
from .repaint import RePaintScheduler, RePaintSchedulerConfig

__all__ = [
    "SCHEDULERS",
    "ClippingSchedulerConfig",
    "DDIMScheduler",
    "DDIMSchedulerConfig",
    "DDPMScheduler",
    "DDPMSchedulerConfig",
    "PNDMScheduler",
    "PNDMSchedulerConfig",
    "RePaintScheduler",
    "RePaintSchedulerConfig",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
]

#: Short name -> scheduler class.
SCHEDULERS: dict[str, type[Scheduler]] = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "pndm": PNDMScheduler}
