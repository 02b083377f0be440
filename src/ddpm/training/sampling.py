"""Sample grids during training: a few DDIM steps from the model being trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..models import UNet2DModel
    from ..schedulers import Scheduler

__all__ = ["ddim_grid"]


@torch.no_grad()
def ddim_grid(unet: UNet2DModel, noise_scheduler: Scheduler, num_images: int, num_steps: int, *, seed: int = 0) -> Any:
    """``num_images`` DDIM samples (η = 0, ``num_steps`` steps, CPU generator seeded with ``seed``) as one PIL grid."""
    from ..image_processing import grid_shape, make_image_grid
    from ..pipelines import DDIMPipeline
    from ..schedulers import DDIMScheduler

    pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(noise_scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    # The images (``[0]`` types for both of the call's return types).
    images = pipe(batch_size=num_images, generator=generator, num_inference_steps=num_steps)[0]
    rows, cols = grid_shape(num_images)
    return make_image_grid(images, rows, cols)
