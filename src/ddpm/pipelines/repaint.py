"""Inpainting with an unconditional DDPM: RePaint (Lugmayr et al. 2022), with diffusers' ``RePaintPipeline`` API.

```text
x = randn(image.shape)                                   # x at the top of the grid
for t in scheduler.timesteps:                            # the walk of Sec. 4.2, down and back up
    if t < t_last: x = scheduler.step(unet(x, t), t, x, image, mask, generator)   # Alg. 1 lines 4-8
    else:          x = scheduler.undo_step(x, t_last, generator)                  # Alg. 1 line 10
    t_last = t
result = (x / 2 + 0.5).clamp(0, 1)                       # the known region is the input image
```
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, overload

import numpy as np
import torch

from ..errors import ImageError
from ..image_processing import ImageInput, check_output_type, postprocess, preprocess
from ..memory import check_sampling_fits
from ..outputs import ImagePipelineOutput
from ..schedulers.math import clip_or_threshold, output_from_x0, predict_x0
from ..schedulers.repaint import RePaintScheduler
from ..utils import Generators, check_generators, randn_tensor
from .callbacks import StepCallback, StepEnd, StepEndCallback
from .pipeline import DiffusionPipeline, _check_eta

logger = logging.getLogger(__name__)

__all__ = ["MASK_MEANINGS", "RePaintPipeline", "prepare_mask"]

#: ``mask_means`` values: what a white (1) mask pixel means.
MASK_MEANINGS: tuple[str, ...] = ("keep", "fill")


def prepare_mask(
    mask_image: ImageInput, *, size: tuple[int, int], batch_size: int, mask_means: str = "keep"
) -> torch.Tensor:
    """The mask as a float32 (B, 1, H, W) tensor of 0 and 1, where 1 means KEEP (the scheduler's convention).

    Args:
        mask_image: A PIL image (any mode, read as grayscale) or a list of them; a numpy array (H, W), (H, W, C) or
            (B, H, W, C) in [0, 1] (uint8: [0, 255]); or a tensor (H, W), (C, H, W) or (B, C, H, W) in [0, 1].
            Several channels are averaged. Values are binarised at 0.5 (white = 1).
        size: (H, W) of the image: the mask must have it (it is never resized).
        batch_size: The image batch; a mask batch of 1 applies to every image, else one mask per image.
        mask_means: ``"keep"`` (diffusers): white marks the part kept, black the part filled; ``"fill"``: white
            marks the part to fill.

    Raises:
        ValueError: ``mask_means`` is neither ``"keep"`` nor ``"fill"``.
        ImageError: The mask's type, shape, values or size is unusable, its batch does not match the images', or
            it marks nothing to fill.
    """
    from PIL import Image

    if mask_means not in MASK_MEANINGS:
        raise ValueError(f"mask_means must be 'keep' or 'fill' (what white means in the mask), got {mask_means!r}")
    items: list[Any] = list(mask_image) if isinstance(mask_image, (list, tuple)) else [mask_image]
    if not items:
        raise ImageError("mask_image is an empty list; give one mask, or one per image")
    if all(isinstance(item, Image.Image) for item in items):
        levels = [np.asarray(item.convert("L"), dtype=np.float32) / 255.0 for item in items]  # (H, W) each
        if len({a.shape for a in levels}) > 1:
            raise ImageError("mask_image holds masks of different sizes; give masks of the image's size")
        mask = torch.from_numpy(np.stack(levels))[:, None]  # (B, 1, H, W)
    elif all(isinstance(item, np.ndarray) for item in items) or (
        len(items) == 1 and isinstance(items[0], torch.Tensor)
    ):
        mask = _mask_batch(items)
    else:
        kinds = sorted({type(item).__name__ for item in items})
        raise ImageError(
            f"mask_image must be a PIL image, a numpy array, a tensor, or a list of PIL images or arrays; got "
            f"{', '.join(kinds)}"
        )
    if not bool(torch.isfinite(mask).all()) or float(mask.min()) < 0 or float(mask.max()) > 1:
        raise ImageError("mask_image values must be in [0, 1] (uint8 arrays: [0, 255]); white (1) marks one region")
    if tuple(mask.shape[2:]) != tuple(size):
        raise ImageError(
            f"mask_image is {mask.shape[3]}x{mask.shape[2]} (width x height) but the image is {size[1]}x{size[0]}; "
            "give a mask of the image's size (it is never resized)"
        )
    if mask.shape[0] not in (1, batch_size):
        raise ImageError(f"got {mask.shape[0]} masks for {batch_size} images; give one mask, or one per image")
    white = mask >= 0.5
    keep = white if mask_means == "keep" else ~white
    if bool(keep.all()):
        black, white_word = ("black", "white") if mask_means == "keep" else ("white", "black")
        raise ImageError(
            f"the mask marks nothing to fill: with mask_means={mask_means!r}, {white_word} keeps the image and "
            f"{black} marks the part to fill; {'the mask is all ' + white_word}. Invert it, or pass "
            f"mask_means={'fill' if mask_means == 'keep' else 'keep'!r} if {white_word} marks the hole"
        )
    return keep.to(torch.float32).expand(batch_size, -1, -1, -1).contiguous()


def _check_guidance(value: Any) -> float:
    """``reconstruction_guidance`` as a finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= float(value) < float("inf")):
        raise ValueError(
            f"reconstruction_guidance must be a finite number >= 0 (0: plain RePaint; about 10 for coherent fills), "
            f"got {value!r}"
        )
    return float(value)


def _mask_batch(items: list[Any]) -> torch.Tensor:
    """Arrays or one tensor as a (B, 1, H, W) float32 batch in [0, 1] (channels averaged)."""
    if isinstance(items[0], torch.Tensor):
        tensor = items[0].detach().to("cpu", torch.float32)
        shape = {2: lambda x: x[None, None], 3: lambda x: x[None], 4: lambda x: x}.get(tensor.ndim)
        if shape is None:
            raise ImageError(f"mask_image tensors must be (H, W), (C, H, W) or (B, C, H, W); got {tuple(tensor.shape)}")
        return shape(tensor).mean(dim=1, keepdim=True)
    arrays = []
    for item in items:
        a = item.astype(np.float32) / 255.0 if item.dtype == np.uint8 else item.astype(np.float32, copy=False)
        a = {2: lambda x: x[None, :, :, None], 3: lambda x: x[None], 4: lambda x: x}.get(a.ndim, lambda x: x)(a)
        if a.ndim != 4:
            raise ImageError(f"mask_image arrays must be (H, W), (H, W, C) or (B, H, W, C); got {item.shape}")
        arrays.append(a)
    if len({a.shape[1:3] for a in arrays}) > 1:
        raise ImageError("mask_image holds masks of different sizes; give masks of the image's size")
    batch = torch.from_numpy(np.concatenate([a.mean(axis=3, keepdims=True) for a in arrays]))  # (B, H, W, 1)
    return batch.permute(0, 3, 1, 2)


class RePaintPipeline(DiffusionPipeline):
    """Inpainting with any unconditional UNet2DModel (Lugmayr et al. 2022): diffusers' ``RePaintPipeline``.

    ```python
    pipe = RePaintPipeline.from_pretrained("google/ddpm-ema-celebahq-256")
    out = pipe(image=face, mask_image=mask, generator=torch.Generator().manual_seed(0)).images[0]
    ```

    ``from_pretrained`` loads any DDPM checkpoint and builds a :class:`~ddpm.schedulers.RePaintScheduler` from its
    scheduler config (diffusers needs ``scheduler=RePaintScheduler.from_pretrained(repo)``; that works too).

    Attributes:
        unet: The noise-prediction network.
        scheduler: A :class:`~ddpm.schedulers.RePaintScheduler` (this pipeline calls its ``undo_step``).
    """

    default_num_inference_steps: ClassVar[int] = 250
    scheduler_type: ClassVar[str | None] = "ddpm"  # read the stored config, then convert it (from_pretrained)
    scheduler: RePaintScheduler  # type: ignore[assignment]

    @classmethod
    def from_pretrained(cls, repo_id_or_path: Any, **kwargs: Any) -> RePaintPipeline:
        """Load a pipeline as :meth:`DiffusionPipeline.from_pretrained` does (same arguments), with its scheduler
        config read into a :class:`~ddpm.schedulers.RePaintScheduler` unless ``scheduler=`` is given."""
        pipe = super().from_pretrained(repo_id_or_path, **kwargs)
        if not isinstance(pipe.scheduler, RePaintScheduler) and kwargs.get("scheduler") is None:
            pipe.scheduler = RePaintScheduler.from_config(pipe.scheduler.config)
        return pipe

    @overload  # type: ignore[override]  # an inpainting call: image and mask first, as in diffusers
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        num_inference_steps: int = 250,
        eta: float = 0.0,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: Literal[True] = True,
        *,
        mask_means: str = "keep",
        reconstruction_guidance: float = 0.0,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
    ) -> ImagePipelineOutput: ...

    @overload
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        num_inference_steps: int = 250,
        eta: float = 0.0,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: Generators = None,
        output_type: str = "pil",
        *,
        return_dict: Literal[False],
        mask_means: str = "keep",
        reconstruction_guidance: float = 0.0,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
    ) -> tuple[Any]: ...

    @torch.inference_mode()
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        num_inference_steps: int = 250,
        eta: float = 0.0,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: Generators = None,
        output_type: str = "pil",
        return_dict: bool = True,
        *,
        mask_means: str = "keep",
        reconstruction_guidance: float = 0.0,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Fill the masked part of ``image``; every input is checked before any work.

        **The mask: by default (diffusers' convention) WHITE / 1 = KEEP, BLACK / 0 = FILL.** Pass
        ``mask_means="fill"`` for the other convention (white marks the hole), the one of most image editors.

        Args:
            image: The image(s), as :func:`ddpm.image_processing.preprocess` takes them: PIL (converted to the
                model's channels), numpy (H, W, C) in [0, 1], or a tensor (B, C, H, W) in [-1, 1]. Never resized: H
                and W must suit the UNet (multiples of 2**downsamplers; any size diffusers runs at works).
            mask_image: The mask(s) (see :func:`prepare_mask`), of the image's size, binarised at 0.5; one for
                all images or one per image.
            num_inference_steps: n, the grid timesteps (default 250, diffusers' value; its docstring's "defaults
                to 1000" is wrong). The UNet runs more often than n: once per step down of the walk.
            eta: η in [0, 1] of the unknown part's steps: 0 DDIM (default), 1 DDPM.
            jump_length: j of Sec. 4.2: grid steps per jump back up.
            jump_n_sample: r of Sec. 4.2: passes over each jump point (1: no resampling).
            generator: A generator, or one per image (image i then depends only on generator i: diffusers uses
                the first generator of a list for every step of every image).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (see :meth:`DiffusionPipeline.__call__`).
            return_dict: Return an ``ImagePipelineOutput`` or the tuple ``(images,)``.
            mask_means: ``"keep"`` (default, diffusers): white keeps; ``"fill"``: white is filled.
            reconstruction_guidance: w_r >= 0 of reconstruction guidance (Ho et al. 2022, "Video Diffusion Models",
                Eq. 7): at every model call the filled part of x̂_0 moves down the gradient of
                ||m ⊙ (x_known - x̂_0(x_t))||² with respect to x_t, scaled by w_r sqrt(ᾱ_t) / 2, so the fill
                agrees with the kept part instead of only being pasted beside it. 0 (default) is RePaint as in the
                paper and diffusers; about 10 makes completions far more coherent in few steps (docs/editing.md)
                at about three times the cost of a model call (a backward pass through the UNet).
            callback, callback_on_step_end, callback_on_step_end_tensor_inputs, check_finite: As for
                :meth:`DiffusionPipeline.__call__`, after every step down (a model call); step_index is the
                position in ``scheduler.timesteps``.

        Returns:
            ``ImagePipelineOutput(images=...)``: the known region is the input (to within one 8-bit level).

        Raises:
            ImageError: A bad image or mask (type, values, size, a mask that marks nothing to fill).
            ValueError: A bad number, output type, generator list or ``mask_means``; a step count above
                ``num_train_timesteps``; a scheduler that is not a RePaintScheduler.
            ResourceLimitError: The batch would not fit in memory.
        """
        if not isinstance(self.scheduler, RePaintScheduler):
            raise ValueError(
                f"RePaintPipeline needs a RePaintScheduler, got {type(self.scheduler).__name__}; use "
                "RePaintScheduler.from_config(pipe.scheduler.config)"
            )
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            raise TypeError(f"num_inference_steps must be an int, got {num_inference_steps!r}")
        eta = _check_eta(eta)
        guidance = _check_guidance(reconstruction_guidance)
        check_output_type(output_type)
        config = self.unet.config
        original = preprocess(image, channels=config.in_channels, what="image")  # (B, C, H, W) in [-1, 1]
        batch_size, _, height, width = original.shape
        divisor = 2**config.num_downsamplers
        if height % divisor or width % divisor:
            raise ImageError(
                f"image is {width}x{height}; this UNet takes sizes that are multiples of {divisor} (it is "
                f"{config.sample_size} px): resize or crop it"
            )
        keep = prepare_mask(mask_image, size=(height, width), batch_size=batch_size, mask_means=mask_means)
        check_generators(generator, batch_size, self.device, batch=f"{batch_size} image(s)")
        on_step_end = StepEnd.for_call(callback, callback_on_step_end, callback_on_step_end_tensor_inputs, check_finite)
        check_sampling_fits(
            config,
            batch_size,
            height,
            width,
            self.dtype,
            lower="inpaint fewer images at once" + (" or lower reconstruction_guidance to 0" if guidance else ""),
            device=self.device,
            gradient=guidance > 0,
        )
        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, jump_length, jump_n_sample, self.device)  # checks n, j, r
        previous_eta = scheduler.eta
        scheduler.eta = eta
        try:
            dtype = self._loop_dtype()
            original = original.to(self.device, dtype)
            keep = keep.to(self.device, dtype)
            sample = randn_tensor(original.shape, generator, self.device, dtype) * scheduler.init_noise_sigma
            sample = self._repaint_loop(sample, original, keep, generator, on_step_end, guidance)
        finally:
            scheduler.eta = previous_eta
        images = postprocess(sample, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _repaint_loop(
        self,
        sample: torch.Tensor,
        original: torch.Tensor,
        keep: torch.Tensor,
        generator: Generators,
        on_step_end: StepEnd,
        guidance: float = 0.0,
    ) -> torch.Tensor:
        """Walk ``scheduler.timesteps`` from x (B, C, H, W): a model step on the way down, an undo on the way up."""
        scheduler, fast = self.scheduler, self._fast
        if guidance > 0:  # autograd needs tensors made outside inference mode
            with torch.inference_mode(False):
                original, keep = original.clone(), keep.clone()
        timesteps = scheduler.timesteps
        values = timesteps.tolist()  # the walk on the host: up or down is decided without reading the device
        self._interrupt = False
        self._num_timesteps = len(values)
        t_last = values[0] + 1
        for i, t in enumerate(self.progress_bar(timesteps, total=len(values))):
            if values[i] < t_last:  # a step down: Alg. 1 lines 4-8
                if guidance > 0:
                    model_output = self._guided_output(sample, t, values[i], original, keep, guidance)
                else:
                    model_output = self.unet(sample, t).sample if fast is None else fast(sample, t)
                out = scheduler.step(model_output, t, sample, original, keep, generator)
                sample = on_step_end(self, i, t, out.prev_sample, out.pred_original_sample, model_output)
                if self._interrupt:
                    logger.debug("inpainting stopped by a callback after entry %d of %d", i, len(values))
                    break
            else:  # back up one grid step: Alg. 1 line 10
                sample = scheduler.undo_step(sample, t_last, generator)
            t_last = values[i]
        return sample

    def _guided_output(
        self,
        sample: torch.Tensor,
        t: torch.Tensor,
        t_value: int,
        original: torch.Tensor,
        keep: torch.Tensor,
        weight: float,
    ) -> torch.Tensor:
        """The model output at x_t = ``sample`` (B, C, H, W) with reconstruction guidance (Ho et al. 2022, Eq. 7).

        ```text
        x̂_0   = x̂_0(x_t)                                              the model's estimate (any prediction type)
        g     = ∇_{x_t} ||m ⊙ (x_known - x̂_0)||²                      one backward pass through the UNet
        x̃_0   = x̂_0 - (w_r sqrt(ᾱ_t) / 2) (1 - m) ⊙ g                  only the part to fill moves
        x̃_0   = clip(x̃_0)                                             the scheduler's clip_sample/thresholding
        ```
        returned in the model's own parameterisation, so the scheduler's step is unchanged.
        """
        scheduler = self.scheduler
        alpha_bar = float(scheduler.alphas_cumprod[t_value])  # the step's own ᾱ_t
        a, b = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
        prediction_type = scheduler.config.prediction_type
        with torch.inference_mode(False), torch.enable_grad():
            x = sample.clone().requires_grad_(True)  # (B, C, H, W)
            output = self.unet(x.to(self.unet.dtype), t).sample.to(x.dtype)  # a half UNet on the fast path
            x0 = predict_x0(output, x, a, b, prediction_type)
            (gradient,) = torch.autograd.grad((keep * (original - x0)).square().sum(), x)
        x0 = x0.detach() - (weight * a / 2) * (1 - keep) * gradient
        # clipped here, so the output the step reads as ε (its direction term) agrees with the x̂_0 it clips
        x0 = clip_or_threshold(x0, scheduler.config)
        return output_from_x0(x0, sample, a, b, prediction_type)
