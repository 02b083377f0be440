"""``DDIMInversionPipeline``: images to their noise x_T and back, and interpolation between two images or two seeds.

Song et al. 2021 ("Denoising Diffusion Implicit Models"): deterministic DDIM (η = 0) is an Euler discretisation of
an ODE (Sec. 4.3, Eq. (14)), so it can be integrated both ways. :meth:`DDIMInversionPipeline.invert` runs it from an
image x_0 up to x_T with :class:`~ddpm.schedulers.DDIMInverseScheduler`; :meth:`DDIMInversionPipeline.reconstruct`
runs DDIM from x_T down to x_0 over the same levels in the opposite order (Sec. 5.4), and gives the image back up to
the discretisation error, which shrinks as the step count grows. :meth:`DDIMInversionPipeline.interpolate`
interpolates two noises spherically (:func:`slerp`, Sec. 5.3) and decodes every frame.

```text
x_0 = preprocess(image)                       # [-1, 1]
for t in 0, 20, ..., 980:  x = inverse.step(unet(x, t), t, x)        # invert: x_0 -> x_T
for t in 980, ..., 20, 0:  x = ddim.step(unet(x, t), t, x)           # reconstruct: x_T -> x_0
```

Both directions leave x̂_0 unclamped (``clip_sample=False``, no thresholding) whatever the checkpoint's scheduler
config says: clamping is not part of the ODE, and with it the round trip is not exact (diffusers#5703, #6634).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator, Sequence
from typing import Any, Literal, cast, overload

import torch

from ..image_processing import ImageInput, postprocess, preprocess
from ..outputs import ImagePipelineOutput
from ..schedulers import DDIMInverseScheduler, DDIMScheduler
from ..utils import Generators, randn_tensor
from .callbacks import StepCallback, StepEnd, StepEndCallback
from .pipeline import DiffusionPipeline
from .protocols import SchedulerLike

__all__ = ["MAX_FRAMES", "DDIMInversionPipeline", "NoiseSource", "slerp"]

#: The most frames :meth:`DDIMInversionPipeline.interpolate` makes in one call (a longer sequence is a typo).
MAX_FRAMES = 1000

#: What :meth:`DDIMInversionPipeline.interpolate` takes as an end point: a seed (the noise
#: ``DDIMPipeline(generator=torch.Generator().manual_seed(seed))`` starts from), a generator to draw the noise with,
#: or an image to invert.
NoiseSource = int | torch.Generator | ImageInput


def slerp(alpha: float | torch.Tensor, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation (Shoemake 1985), as the DDIM paper interpolates x_T (Sec. 5.3).

    ``slerp(α, v0, v1) = sin((1 - α) θ) / sin θ · v0 + sin(α θ) / sin θ · v1``, with θ the angle between v0 and v1,
    per sample (each of the B items is one flattened vector). α = 0 gives v0 and α = 1 gives v1; when
    ``|v0| = |v1|`` every point has that norm too, so interpolated Gaussian noise stays at the typical radius
    (linear interpolation would shrink it, and the images fade). Nearly parallel vectors (θ < 1e-4) are
    interpolated linearly.

    Args:
        alpha: The position, a number or a tensor of shape (B,) (usually in [0, 1]).
        v0: The start, shape (B, ...), e.g. noises (B, C, H, W).
        v1: The end, the same shape.

    Returns:
        The interpolated tensor, shape and dtype of ``v0`` (computed in float64).
    """
    if v0.shape != v1.shape:
        raise ValueError(f"slerp needs two tensors of one shape, got {tuple(v0.shape)} and {tuple(v1.shape)}")
    a = v0.reshape(v0.shape[0], -1).double()  # (B, N)
    b = v1.reshape(v1.shape[0], -1).to(a)
    alpha_t = torch.as_tensor(alpha, dtype=torch.float64, device=a.device).reshape(-1, 1)  # (1, 1) or (B, 1)
    cos = (a * b).sum(1, keepdim=True) / (a.norm(dim=1, keepdim=True) * b.norm(dim=1, keepdim=True))
    theta = torch.arccos(cos.clamp(-1.0, 1.0))  # (B, 1)
    small = theta < 1e-4
    safe = torch.where(small, torch.ones_like(theta), theta)
    w0 = torch.where(small, 1 - alpha_t, torch.sin((1 - alpha_t) * safe) / torch.sin(safe))
    w1 = torch.where(small, alpha_t, torch.sin(alpha_t * safe) / torch.sin(safe))
    return (w0 * a + w1 * b).reshape(v0.shape).to(v0.dtype)


class DDIMInversionPipeline(DiffusionPipeline):
    """DDIM inversion, reconstruction and interpolation with any ddpm checkpoint (50 steps by default).

    ```python
    pipe = DDIMInversionPipeline.from_pretrained("ddpm-mnist")   # or google/ddpm-*, or (**other.components)
    noise = pipe.invert(image, num_inference_steps=100)          # x_T, (1, C, H, W)
    again = pipe.reconstruct(noise, num_inference_steps=100).images[0]
    frames = pipe.interpolate(image_a, image_b, num_frames=8).images   # or two seeds: pipe.interpolate(3, 7)
    ```

    Everything is deterministic (DDIM with η = 0) and unclamped in both directions (see the module docstring); the
    ``scheduler`` component supplies only the noise schedule (its config), so any checkpoint's scheduler works.
    A call without ``noise`` samples like ``DDIMPipeline`` with ``clip_sample=False``.
    """

    default_num_inference_steps = 50
    scheduler_type = "ddim"

    # ------------------------------------------------------------------ the two directions of the ODE
    def ode_schedulers(self) -> tuple[DDIMScheduler, DDIMInverseScheduler]:
        """The DDIM sampler (η = 0) and its inverse on this pipeline's noise schedule, both without clamping x̂_0."""
        config = self.scheduler.config
        ddim = DDIMScheduler.from_config(config, clip_sample=False, thresholding=False, eta=0.0)
        inverse = DDIMInverseScheduler.from_config(config, clip_sample=False)
        return ddim, inverse

    @contextlib.contextmanager
    def _running(self, scheduler: SchedulerLike) -> Iterator[None]:
        """Make ``scheduler`` the pipeline's scheduler for one loop (callbacks see its timesteps)."""
        kept = self.scheduler
        self.scheduler = scheduler
        try:
            yield
        finally:
            self.scheduler = kept

    def _steps(self, num_inference_steps: int | None) -> int:
        steps = self.default_num_inference_steps if num_inference_steps is None else num_inference_steps
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise TypeError(f"num_inference_steps must be an int, got {steps!r}")
        if steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {steps}")
        return steps

    def _prepare_image(self, image: ImageInput) -> torch.Tensor:
        """``image`` as a batch (B, C, H, W) in [-1, 1] of the model's size and channels (see ``preprocess``)."""
        _, channels, height, width = self._sample_shape(1)
        return preprocess(image, channels=channels, size=(height, width))

    def _run(self, scheduler: SchedulerLike, sample: torch.Tensor, steps: int, on_step_end: StepEnd) -> torch.Tensor:
        scheduler.set_timesteps(steps, device=self.device)
        with self._running(scheduler):
            return self._denoise_loop(sample, scheduler.timesteps, None, on_step_end)

    @torch.inference_mode()
    def invert(
        self,
        image: ImageInput,
        num_inference_steps: int | None = None,
        *,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
    ) -> torch.Tensor:
        """Encode images into their noise x_T: the DDIM ODE integrated from x_0 upwards (Song et al. 2021, Sec. 5.4).

        Args:
            image: The image(s): a PIL image (resized to the model's size), a numpy array in [0, 1] (H, W[, C]) or
                (B, H, W, C), a tensor in [-1, 1] (C, H, W) or (B, C, H, W), or a list of PIL images or arrays.
            num_inference_steps: Steps of the inversion (default 50); reconstruct with the same number.
            callback_on_step_end: As for ``__call__``, after each step of the inversion (``"latents"`` is the
                sample on its way up to x_T).
            callback_on_step_end_tensor_inputs: As for ``__call__``.
            check_finite: As for ``__call__``.

        Returns:
            x_T, shape (B, C, H, W), on the pipeline's device, in float32 (or the UNet's dtype off the fast path).

        Raises:
            ImageError: The image is not usable (type, shape, channels, range, size of an array or tensor).
            TypeError, ValueError: A bad step count or callback option.
            ResourceLimitError: The batch would not fit in memory.
        """
        steps = self._steps(num_inference_steps)
        x0 = self._prepare_image(image)
        self.check_batch_fits(x0.shape[0], lower="invert fewer images at a time")
        on_step_end = StepEnd.for_call(None, callback_on_step_end, callback_on_step_end_tensor_inputs, check_finite)
        sample = x0.to(device=self.device, dtype=self._loop_dtype())
        return self._run(self.ode_schedulers()[1], sample, steps, on_step_end)

    @torch.inference_mode()
    def reconstruct(
        self,
        noise: torch.Tensor,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Any:
        """Decode noises x_T into images with deterministic, unclamped DDIM: the inverse of :meth:`invert`.

        ``pipe(noise=noise, ...)`` is the same call with all of ``__call__``'s options.

        Args:
            noise: x_T, shape (B, C, H, W) (from :meth:`invert`, :func:`slerp` or ``randn``).
            num_inference_steps: DDIM steps (default 50); use the inversion's number for a round trip.
            output_type: As for ``__call__``.
            return_dict: As for ``__call__``.
        """
        if return_dict:
            return self(noise=noise, num_inference_steps=num_inference_steps, output_type=output_type)
        return self(noise=noise, num_inference_steps=num_inference_steps, output_type=output_type, return_dict=False)

    @overload
    def __call__(
        self,
        batch_size: int = 1,
        generator: Generators = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: Literal[True] = True,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
        *,
        noise: torch.Tensor | None = None,
    ) -> ImagePipelineOutput: ...

    @overload
    def __call__(
        self,
        batch_size: int = 1,
        generator: Generators = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        *,
        return_dict: Literal[False],
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
        noise: torch.Tensor | None = None,
    ) -> tuple[Any]: ...

    @torch.inference_mode()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Generators = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        callback: StepCallback | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        check_finite: bool = False,
        *,
        noise: torch.Tensor | None = None,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Decode ``noise`` (or fresh noise from ``generator``) with deterministic, unclamped DDIM.

        Takes ``DiffusionPipeline.__call__``'s arguments, plus:

        Args:
            noise: x_T to start from, shape (B, C, H, W) with the model's channels and size (``batch_size`` is then
                its B). None: draw it from ``generator`` as ``DDIMPipeline`` does.
            eta: Only 0 (or None): the ODE is deterministic.
            use_clipped_model_output: Only False (or None): x̂_0 is never clamped here.

        Raises:
            ValueError: ``eta`` other than 0, ``use_clipped_model_output=True``, or a ``noise`` of the wrong shape;
                the base class's errors otherwise.
        """
        if eta:
            raise ValueError(f"eta={eta!r}: DDIMInversionPipeline runs deterministic DDIM (eta=0); use DDIMPipeline")
        if use_clipped_model_output:
            raise ValueError("use_clipped_model_output=True: DDIMInversionPipeline never clamps x̂_0")
        if noise is not None:
            noise = self._check_noise(noise)
            batch_size = noise.shape[0]
        steps = self._check_call_inputs(batch_size, generator, num_inference_steps, output_type)
        self.check_batch_fits(batch_size)
        on_step_end = StepEnd.for_call(callback, callback_on_step_end, callback_on_step_end_tensor_inputs, check_finite)
        if noise is None:
            noise = randn_tensor(self._sample_shape(batch_size), generator, self.device, self._loop_dtype())
        sample = self._run(self.ode_schedulers()[0], noise.to(self.device, self._loop_dtype()), steps, on_step_end)
        images = postprocess(sample, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _check_noise(self, noise: Any) -> torch.Tensor:
        expected = self._sample_shape(1)[1:]
        if not isinstance(noise, torch.Tensor) or not noise.is_floating_point():
            raise TypeError(f"noise must be a float tensor (B, C, H, W), got {type(noise).__name__}")
        if noise.dim() != 4 or tuple(noise.shape[1:]) != expected or noise.shape[0] < 1:
            raise ValueError(
                f"noise has shape {tuple(noise.shape)}; this model needs (B, {expected[0]}, {expected[1]}, "
                f"{expected[2]})"
            )
        return noise

    # ------------------------------------------------------------------ interpolation
    @torch.inference_mode()
    def interpolate(
        self,
        a: NoiseSource,
        b: NoiseSource,
        num_frames: int = 8,
        *,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Any:
        """A sequence of images from ``a`` to ``b``: their noises x_T interpolated spherically, each frame decoded.

        The DDIM paper's Sec. 5.3: x_T(α) = slerp(α, x_T(a), x_T(b)) for α = 0, 1/(N-1), ..., 1, then DDIM. An image
        end point is inverted first (:meth:`invert`, so its frame is the image up to the round-trip error); a seed or
        a generator gives the noise a DDIM pipeline would start from.

        Args:
            a: The first end point: an int seed (``torch.Generator().manual_seed(seed)``), a ``torch.Generator``,
                or one image (as :meth:`invert` takes it).
            b: The last end point, of the same kinds.
            num_frames: N, the number of images, end points included: 2 to :data:`MAX_FRAMES`.
            num_inference_steps: Steps of the inversion and of the decoding (default 50).
            output_type: As for ``__call__``.
            return_dict: As for ``__call__``.

        Returns:
            ``ImagePipelineOutput`` whose ``images`` are the N frames in order (or ``(images,)``).

        Raises:
            ValueError: ``num_frames`` outside [2, MAX_FRAMES], a negative seed, or an end point that is a batch.
            ImageError: An image end point is not usable.
            ResourceLimitError: N frames at once would not fit in memory.
        """
        if isinstance(num_frames, bool) or not isinstance(num_frames, numbers.Integral):
            raise TypeError(f"num_frames must be an int, got {num_frames!r}")
        if not 2 <= num_frames <= MAX_FRAMES:
            raise ValueError(f"num_frames must be from 2 to {MAX_FRAMES} (both end points included), got {num_frames}")
        steps = self._steps(num_inference_steps)
        self.check_batch_fits(int(num_frames), lower="ask for fewer frames")
        noises = self._noise_of(a, b, steps)  # [(1, C, H, W), (1, C, H, W)]
        alphas = torch.linspace(0, 1, int(num_frames), dtype=torch.float64)
        path = slerp(alphas, noises[0].expand(len(alphas), -1, -1, -1), noises[1].expand(len(alphas), -1, -1, -1))
        return self.reconstruct(path, steps, output_type=output_type, return_dict=return_dict)

    def _noise_of(self, a: NoiseSource, b: NoiseSource, steps: int) -> list[torch.Tensor]:
        """The two end points' x_T, each (1, C, H, W); images are checked first, then inverted together."""
        shape = self._sample_shape(1)
        noises: list[torch.Tensor | None] = [None, None]
        images: dict[int, torch.Tensor] = {}
        for k, (name, source) in enumerate((("a", a), ("b", b))):
            if isinstance(source, numbers.Integral) and not isinstance(source, bool):
                seed = int(source)
                if not 0 <= seed < 2**63:
                    raise ValueError(f"{name}: a seed must be from 0 to 2**63-1, got {seed}")
                source = torch.Generator().manual_seed(seed)
            if isinstance(source, torch.Generator):
                noises[k] = randn_tensor(shape, source, self.device, self._loop_dtype())
                continue
            image = self._prepare_image(cast("ImageInput", source))
            if image.shape[0] != 1:
                raise ValueError(f"{name} is a batch of {image.shape[0]} images; give one image per end point")
            images[k] = image
        if images:
            inverted = self.invert(torch.cat(list(images.values())), steps)
            for k, x_t in zip(images, inverted.split(1)):
                noises[k] = x_t
        return [n for n in noises if n is not None]
