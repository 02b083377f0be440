"""``DDPMPipeline``: a ``DiffusionPipeline`` that defaults to the DDPM sampler (Ho et al. 2020)."""

from __future__ import annotations

from .pipeline import DiffusionPipeline
from .registry import register_pipeline

__all__ = ["DDPMPipeline"]


@register_pipeline("ddpm")
class DDPMPipeline(DiffusionPipeline):
    """Ancestral sampling of Ho et al. (2020), 1000 steps by default.

    ``from_pretrained`` builds the scheduler class the checkpoint names (DDPMScheduler for the google/ddpm-* repos).
    See ``DiffusionPipeline`` for the constructor, loading and the call.

    Example:
        ```python
        from ddpm import DDPMPipeline

        pipe = DDPMPipeline.from_pretrained("google/ddpm-ema-celebahq-256")
        image = pipe().images[0]
        image.save("ddpm_generated_image.png")
        ```
    """

    default_num_inference_steps = 1000
    scheduler_type = None
