"""``ImageToImagePipeline``: SDEdit (Meng et al. 2022) with an unconditional UNet and any scheduler.

SDEdit edits an image by diffusing it part of the way to noise and letting the model denoise it back: the result
keeps the input's coarse structure and takes its details from the model. With n steps and ``strength`` s in (0, 1]:

```text
k = n - min(int(n * s), n)                            # steps skipped: the loop runs the last int(n * s) of n steps
scheduler.set_timesteps(n)
timesteps = scheduler.timesteps[begin:]               # begin: where step k begins (k * scheduler.order)
x_t = scheduler.add_noise(x_0, eps, timesteps[0])     # q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I), Eq. (4) of DDPM
for t in timesteps:                                   # the sampler's own steps, from t down to 0
    x_{t-1} = scheduler.step(unet(scheduler.scale_model_input(x_t, t), t), t, x_t).prev_sample
```

The choice of timesteps is diffusers' img2img rule (``get_timesteps`` of its Stable Diffusion img2img pipeline), so
a loop written for diffusers runs the same steps here. A strength of 1 starts at the first timestep, which is pure
noise only where ᾱ there is 0 (``rescale_betas_zero_snr``); otherwise a trace of the input survives.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal, TypeVar, cast, overload

import torch

from ..image_processing import ImageInput, postprocess, preprocess
from ..outputs import ImagePipelineOutput
from ..utils import Generators, randn_tensor
from .callbacks import StepCallback, StepEnd, StepEndCallback
from .pipeline import DiffusionPipeline

__all__ = ["ImageToImagePipeline", "check_strength"]

P = TypeVar("P", bound="ImageToImagePipeline")


def check_strength(strength: Any) -> float:
    """SDEdit's strength as a float, refused with a ``ValueError`` unless it is a number in (0, 1] (NaN refused).

    0 would run no step at all (the input returned unchanged); above 1 there is no schedule to start from.
    """
    is_number = isinstance(strength, numbers.Real) and not isinstance(strength, bool)
    if not is_number or not 0.0 < float(strength) <= 1.0:  # (NaN fails the comparison)
        raise ValueError(
            f"strength must be a number in (0, 1] (the fraction of the schedule to noise the image to: 0.3 keeps "
            f"most of it, 1 redraws it from almost pure noise), got {strength!r}"
        )
    return float(strength)


def denoising_steps(num_inference_steps: int, strength: float) -> int:
    """How many of ``num_inference_steps`` an SDEdit call at ``strength`` runs: ``min(int(n * s), n)``, diffusers'
    rule; refused with a ``ValueError`` that says how to fix it when that is 0 (diffusers#1867)."""
    steps = min(int(num_inference_steps * strength), num_inference_steps)
    if steps < 1:
        raise ValueError(
            f"strength={strength:g} with num_inference_steps={num_inference_steps} runs int({num_inference_steps} * "
            f"{strength:g}) = 0 denoising steps; use strength >= {1 / num_inference_steps:g} or num_inference_steps "
            f">= {math.ceil(1 / strength)}"
        )
    return steps


class ImageToImagePipeline(DiffusionPipeline):
    """Image-to-image with an unconditional model (SDEdit, Meng et al. 2022): noise the input to ``strength`` of the
    schedule and denoise it with the pipeline's scheduler (any of ddpm's, or diffusers' with the same interface).

    ```python
    from ddpm import ImageToImagePipeline
    pipe = ImageToImagePipeline.from_pretrained("ddpm-mnist")          # or google/ddpm-cifar10-32, a folder, ...
    edited = pipe(image, strength=0.5, generator=torch.Generator().manual_seed(0)).images[0]
    pipe = ImageToImagePipeline.from_pipe(ddim_pipe)                     # the same UNet and scheduler, no reload
    ```

    ``from_pretrained`` builds the scheduler the checkpoint names (as ``DDPMPipeline`` does); swap it like any
    pipeline's: ``pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)``. A call takes 50 steps of that
    schedule by default and runs the last ``int(50 * strength)`` of them.
    """

    default_num_inference_steps = 50

    @classmethod
    def from_pipe(cls: type[P], pipeline: DiffusionPipeline) -> P:
        """An image-to-image pipeline sharing ``pipeline``'s UNet and scheduler (diffusers' ``from_pipe``): nothing
        is loaded or copied, and its fast-sampling settings and progress-bar settings carry over."""
        pipe = cls(**pipeline.components)
        pipe._fast = pipeline.fast_sampler
        pipe.set_progress_bar_config(**pipeline._progress_bar_config)
        return pipe

    def get_timesteps(
        self, num_inference_steps: int, strength: float, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, int]:
        """The timesteps an SDEdit call at ``strength`` runs, after ``scheduler.set_timesteps(num_inference_steps)``:
        ``(scheduler.timesteps[begin:], steps)`` with ``steps = min(int(n * strength), n)``, as diffusers' img2img
        pipelines return them. The loop begins where step ``k = n - steps`` of the schedule begins:
        ``scheduler.begin_index_for_step(k)`` for ddpm's schedulers (``k * order``, or past PNDM's Runge-Kutta
        calls), ``k * scheduler.order`` for others; the scheduler is told with ``set_begin_index`` where it has it.

        ``device`` is accepted for diffusers' signature: the timesteps stay where ``set_timesteps`` put them.

        Raises:
            ValueError: ``strength`` is not in (0, 1], or it runs no step at all (see :func:`denoising_steps`).
        """
        del device
        steps = denoising_steps(num_inference_steps, check_strength(strength))
        scheduler, skipped = self.scheduler, num_inference_steps - steps
        locate = getattr(scheduler, "begin_index_for_step", None)
        begin = int(locate(skipped)) if callable(locate) else skipped * int(getattr(scheduler, "order", 1))
        set_begin_index = getattr(scheduler, "set_begin_index", None)
        if callable(set_begin_index):
            set_begin_index(begin)
        return scheduler.timesteps[begin:], steps

    @overload  # type: ignore[override]
    def __call__(
        self,
        image: ImageInput,
        strength: float = 0.8,
        num_inference_steps: int | None = None,
        generator: Generators = None,
        eta: float | None = None,
        output_type: str = "pil",
        return_dict: Literal[True] = True,
        *,
        use_clipped_model_output: bool | None = None,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
    ) -> ImagePipelineOutput: ...

    @overload
    def __call__(
        self,
        image: ImageInput,
        strength: float = 0.8,
        num_inference_steps: int | None = None,
        generator: Generators = None,
        eta: float | None = None,
        output_type: str = "pil",
        *,
        return_dict: Literal[False],
        use_clipped_model_output: bool | None = None,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
    ) -> tuple[Any]: ...

    @torch.inference_mode()
    def __call__(
        self,
        image: ImageInput,
        strength: float = 0.8,
        num_inference_steps: int | None = None,
        generator: Generators = None,
        eta: float | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        use_clipped_model_output: bool | None = None,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Edit ``image``: noise it to ``strength`` of the schedule and denoise it (SDEdit).

        Random numbers are drawn in diffusers' order: the noise ε added to the image (one draw of the batch's shape,
        or one per generator), then whatever the scheduler's steps draw.

        Args:
            image: The image(s) to edit, in diffusers' conventions (:func:`ddpm.image_processing.preprocess`): PIL
                images (converted to the model's channels and resized to its size), numpy arrays in [0, 1], or
                tensors in [-1, 1] of the model's size and channels (a 1-channel one is repeated for an RGB model).
                A batch of B images gives B results.
            strength: How far to noise the image, a fraction of the schedule in (0, 1]: the call runs the last
                ``int(num_inference_steps * strength)`` steps. Low values keep the image, 1 redraws it almost freely.
            num_inference_steps: The steps of the full schedule (default 50); fewer run.
            generator: A ``torch.Generator`` or a list of B of them (image ``i`` then depends on generator ``i``
                alone), or None for torch's global RNG.
            eta: DDIM's η for this call, as in :meth:`DiffusionPipeline.__call__`.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``, as in :meth:`DiffusionPipeline.__call__`.
            return_dict: Return an ``ImagePipelineOutput`` (default) or the tuple ``(images,)``.
            use_clipped_model_output: DDIM's option for this call.
            callback: As in :meth:`DiffusionPipeline.__call__`; the step index counts from the first step run.
            callback_on_step_end: As in :meth:`DiffusionPipeline.__call__`.
            callback_on_step_end_tensor_inputs: As in :meth:`DiffusionPipeline.__call__`.
            check_finite: As in :meth:`DiffusionPipeline.__call__`.

        Returns:
            ``ImagePipelineOutput`` with ``images``, or ``(images,)``.

        Raises:
            ImageError: ``image`` cannot be used (type, shape, channels, size, range); the message says why.
            ValueError: ``strength`` outside (0, 1] or so small that no step runs; and the errors of
                :meth:`DiffusionPipeline.__call__` (steps, ``output_type``, generators, ``eta``, callback names).
            TypeError: ``num_inference_steps`` is not an int, or a generator is not a ``torch.Generator``.
            ResourceLimitError: The batch would not fit in memory; nothing was allocated.
        """
        strength = check_strength(strength)
        if not callable(getattr(self.scheduler, "add_noise", None)):
            raise TypeError(
                f"image-to-image needs a scheduler with add_noise(); {type(self.scheduler).__name__} has none"
            )
        _, channels, height, width = self._sample_shape(1)
        x0 = preprocess(image, channels=channels, size=(height, width))  # (B, C, H, W) in [-1, 1], on the CPU
        batch_size = x0.shape[0]
        steps = self._check_call_inputs(batch_size, generator, num_inference_steps, output_type)
        denoising_steps(steps, strength)
        self.check_batch_fits(batch_size)
        on_step_end = StepEnd.for_call(callback, callback_on_step_end, callback_on_step_end_tensor_inputs, check_finite)
        with self._scheduler_overrides(eta=eta, use_clipped_model_output=use_clipped_model_output):
            sample = self._edit(x0, strength, generator, steps, on_step_end)
        images = postprocess(sample, output_type)  # [-1, 1] -> images
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _edit(
        self, x0: torch.Tensor, strength: float, generator: Generators, steps: int, on_step_end: StepEnd
    ) -> torch.Tensor:
        """x_0 (B, C, H, W) -> x_t at the first timestep run -> the scheduler's steps down to the edited x_0."""
        scheduler, dtype = self.scheduler, self._loop_dtype()
        x0 = x0.to(device=self.device, dtype=dtype)
        scheduler.set_timesteps(steps, device=self.device)
        timesteps, _ = self.get_timesteps(steps, strength, self.device)
        noise = randn_tensor(x0.shape, generator, self.device, dtype)  # ε ~ N(0, I), as diffusers draws it
        # x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (σ-space schedulers: x_0 + σ_t ε), t = the first timestep run
        add_noise = cast("Any", scheduler).add_noise  # checked by __call__ (not a SchedulerLike member)
        sample = add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))
        return self._denoise_loop(sample, timesteps, generator, on_step_end)
