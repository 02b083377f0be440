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
* ``unipc_multistep.py``: UniPC (Zhao et al. 2023), a multistep predictor-corrector in σ-space.
"""

from __future__ import annotations

from ..outputs import SchedulerOutput
from .base import ClippingSchedulerConfig, Scheduler, SchedulerConfig
from .ddim import DDIMScheduler, DDIMSchedulerConfig
from .ddim_inverse import DDIMInverseScheduler, DDIMInverseSchedulerConfig
from .ddpm import DDPMScheduler, DDPMSchedulerConfig
from .dpmsolver_multistep import DPMSolverMultistepScheduler, DPMSolverMultistepSchedulerConfig
from .euler import (  # [euler]
    EulerAncestralDiscreteScheduler,
    EulerAncestralDiscreteSchedulerConfig,
    EulerDiscreteScheduler,
    EulerDiscreteSchedulerConfig,
)
from .heun import HeunDiscreteScheduler, HeunDiscreteSchedulerConfig  # [euler]
from .pndm import PNDMScheduler, PNDMSchedulerConfig
from .repaint import RePaintScheduler, RePaintSchedulerConfig
from .unipc_multistep import UniPCMultistepScheduler, UniPCMultistepSchedulerConfig

__all__ = [
    "SCHEDULERS",
    "ClippingSchedulerConfig",
    "DDIMInverseScheduler",
    "DDIMInverseSchedulerConfig",
    "DDIMScheduler",
    "DDIMSchedulerConfig",
    "DDPMScheduler",
    "DDPMSchedulerConfig",
    "DPMSolverMultistepScheduler",
    "DPMSolverMultistepSchedulerConfig",
    "EulerAncestralDiscreteScheduler",
    "EulerAncestralDiscreteSchedulerConfig",
    "EulerDiscreteScheduler",
    "EulerDiscreteSchedulerConfig",
    "HeunDiscreteScheduler",
    "HeunDiscreteSchedulerConfig",
    "PNDMScheduler",
    "PNDMSchedulerConfig",
    "RePaintScheduler",
    "RePaintSchedulerConfig",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "UniPCMultistepScheduler",
    "UniPCMultistepSchedulerConfig",
]

#: Short name -> scheduler class.
SCHEDULERS: dict[str, type[Scheduler]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "pndm": PNDMScheduler,
    "dpmsolver": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
