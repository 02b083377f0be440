"""``PNDMPipeline``: a ``DiffusionPipeline`` that defaults to the PNDM sampler (Liu et al. 2022)."""

from __future__ import annotations

from .pipeline import DiffusionPipeline
from .registry import register_pipeline

__all__ = ["PNDMPipeline"]


@register_pipeline("pndm")
class PNDMPipeline(DiffusionPipeline):
    """Pseudo numerical methods for diffusion models (Liu et al. 2022), 50 steps by default.

    ``from_pretrained`` converts the stored scheduler config to a ``PNDMScheduler``. PNDM evaluates the
    UNet ``len(scheduler.timesteps)`` times, a few more than ``num_inference_steps`` because of its Runge-Kutta
    warm-up. See ``DiffusionPipeline``.
    """

    default_num_inference_steps = 50
    scheduler_type = "pndm"
