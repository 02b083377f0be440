"""Sample grids during training: a few DDIM steps from the model being trained."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["ddim_grid"]


@torch.no_grad()
def ddim_grid(unet: nn.Module, noise_scheduler: Any, num_images: int, num_steps: int, *, seed: int = 0) -> Any:
    """``num_images`` DDIM samples (η = 0, ``num_steps`` steps, CPU generator seeded with ``seed``) as one PIL grid."""
    from ..schedulers import DDIMScheduler

    ddim = DDIMScheduler.from_config(noise_scheduler.config)
    device = next(unet.parameters()).device
    cfg = unet.config
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((num_images, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=generator).to(device)
    ddim.set_timesteps(num_steps, device=device)
    for t in ddim.timesteps:
        model_output = unet(x, t).sample  # 1. predict the noise (or x0 / v)
        x = ddim.step(model_output, t, x).prev_sample  # 2. x_t -> x_{t-1}
    return _grid(x)


def _grid(x: torch.Tensor) -> Any:
    from PIL import Image

    n, c, h, w = x.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    canvas = torch.zeros((c, rows * h, cols * w), dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[:, r * h : (r + 1) * h, q * w : (q + 1) * w] = images[i]
    array = canvas.permute(1, 2, 0).numpy()  # (C, H, W) -> (H, W, C)
    return Image.fromarray(array[:, :, 0] if c == 1 else array, mode="L" if c == 1 else "RGB")
