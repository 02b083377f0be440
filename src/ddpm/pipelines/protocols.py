"""``SchedulerLike``: what a pipeline needs of a scheduler.

ddpm's ``DDPMScheduler``, ``DDIMScheduler`` and ``PNDMScheduler`` satisfy it, and so does any scheduler with the same
members (diffusers' DDPM and DDIM schedulers do). The pipeline loop uses exactly these:

```text
x_T = randn(...) * scheduler.init_noise_sigma
scheduler.set_timesteps(num_inference_steps, device=device)
for t in scheduler.timesteps:
    eps = unet(scheduler.scale_model_input(x_t, t), t)
    x_{t-1} = scheduler.step(eps, t, x_t, generator=generator).prev_sample
```
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import torch

from ..utils import Generators

__all__ = ["SchedulerLike"]


class SchedulerLike(Protocol):
    """The members of a scheduler that ``DiffusionPipeline`` reads or calls.

    ``config`` is not used by the loop, but every scheduler has one, and swapping the sampler is written with it:
    ``pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)``.
    """

    @property
    def config(self) -> Any:
        """The scheduler's config (the noise schedule it was trained with and its options)."""

    @property
    def timesteps(self) -> torch.Tensor:
        """The timesteps of the current schedule, in sampling order (T-1 first); set by :meth:`set_timesteps`."""

    @property
    def init_noise_sigma(self) -> float:
        """The standard deviation of the starting noise x_T (1.0 for DDPM-family schedulers)."""

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Prepare a schedule of ``num_inference_steps`` steps, its tables on ``device``."""

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's input for x_t (x_t itself for DDPM-family schedulers)."""

    def step(
        self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor, *, generator: Generators
    ) -> Any:
        """x_t -> x_{t-1}: returns an output with ``prev_sample`` (B, C, H, W) and, when the scheduler has one,
        ``pred_original_sample``, its estimate of x_0 (see :class:`ddpm.outputs.SchedulerOutput`).

        (Typed ``Any`` because ``return_dict=False`` makes ddpm's and diffusers' ``step`` return a tuple instead.)
        """

    def save_pretrained(self, save_directory: str | os.PathLike[str], *, overwrite: bool = False) -> Any:
        """Write the scheduler's config to ``save_directory`` (``pipe.save_pretrained`` saves it into scheduler/)."""
