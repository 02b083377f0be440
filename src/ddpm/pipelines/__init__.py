"""Pipelines: load a UNet and a scheduler together and generate images with one call.

All three classes share ``DiffusionPipeline``; the name only chooses the default step count and which
scheduler ``from_pretrained`` builds from the stored config:

| class | scheduler built by `from_pretrained` | default steps |
|---|---|---|
| `DDPMPipeline` | the one the checkpoint names | 1000 |
| `DDIMPipeline` | `DDIMScheduler` | 50 |
| `PNDMPipeline` | `PNDMScheduler` | 50 |
"""

from __future__ import annotations

from .pipeline import MODEL_INDEX_NAME, DiffusionPipeline, StepCallback

__all__ = [
    "MODEL_INDEX_NAME",
    "PIPELINES",
    "DDIMPipeline",
    "DDPMPipeline",
    "DiffusionPipeline",
    "PNDMPipeline",
    "StepCallback",
]


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


class DDIMPipeline(DiffusionPipeline):
    """Denoising diffusion implicit models (Song et al. 2021), 50 steps by default.

    ``from_pretrained`` converts the stored scheduler config to a ``DDIMScheduler``; pass ``eta`` to a
    call for stochastic DDIM (``eta=1`` adds DDPM-like noise). See ``DiffusionPipeline``.
    """

    default_num_inference_steps = 50
    scheduler_type = "ddim"


class PNDMPipeline(DiffusionPipeline):
    """Pseudo numerical methods for diffusion models (Liu et al. 2022), 50 steps by default.

    ``from_pretrained`` converts the stored scheduler config to a ``PNDMScheduler``. PNDM evaluates the
    UNet ``len(scheduler.timesteps)`` times, a few more than ``num_inference_steps`` because of its Runge-Kutta
    warm-up. See ``DiffusionPipeline``.
    """

    default_num_inference_steps = 50
    scheduler_type = "pndm"


#: Pipeline classes by scheduler short name, as the CLI's ``--scheduler`` option names them.
PIPELINES: dict[str, type[DiffusionPipeline]] = {"ddpm": DDPMPipeline, "ddim": DDIMPipeline, "pndm": PNDMPipeline}
