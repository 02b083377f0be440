"""``DDIMPipeline``: a ``DiffusionPipeline`` that defaults to the DDIM sampler (Song et al. 2021)."""

from __future__ import annotations

from .pipeline import DiffusionPipeline
from .registry import register_pipeline

__all__ = ["DDIMPipeline"]


@register_pipeline("ddim")
class DDIMPipeline(DiffusionPipeline):
    """Denoising diffusion implicit models (Song et al. 2021), 50 steps by default.

    ``from_pretrained`` converts the stored scheduler config to a ``DDIMScheduler``; pass ``eta`` to a
    call for stochastic DDIM (``eta=1`` adds DDPM-like noise). See ``DiffusionPipeline``.
    """

    default_num_inference_steps = 50
    scheduler_type = "ddim"
