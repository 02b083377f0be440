"""The unconditional image pipeline: a UNet, a scheduler, and the denoising loop that joins them.

``DiffusionPipeline`` holds the whole implementation. ``DDPMPipeline``, ``DDIMPipeline`` and ``PNDMPipeline``
only choose which scheduler ``from_pretrained`` builds from the stored config and how many steps a call takes by
default (1000, 50 and 50, as in diffusers). Any scheduler runs in any pipeline.

Sampling (Algorithm 2 of Ho et al. 2020, with the update rule supplied by the scheduler):

```text
x_T ~ N(0, I)                                          drawn by ddpm.utils.randn_tensor, as diffusers draws it
for t in scheduler.timesteps:
    eps = unet(x_t, t).sample                          # 1. predict the noise
    x_{t-1} = scheduler.step(eps, t, x_t).prev_sample  # 2. x_t -> x_{t-1}
    callbacks(...)                                     # 3. callback_on_step_end and friends (pipelines.callbacks)
image = (x_0 / 2 + 0.5).clamp(0, 1)                    # [-1, 1] -> [0, 1]
```

Loading and saving live in :mod:`ddpm.pipelines.pretrained`, the per-step callbacks in :mod:`ddpm.pipelines.callbacks`,
and what the loop needs of a scheduler in :class:`~ddpm.pipelines.protocols.SchedulerLike`.

Random numbers are consumed in diffusers' order (the initial noise, then whatever each ``step`` draws), so the same
generator gives the same images in both libraries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, overload

import torch

from .. import hub
from ..fast import FastSamplingOptions, UNetRunner, running_dtype
from ..image_processing import check_output_type, numpy_to_pil, postprocess
from ..memory import check_sampling_fits
from ..mixins import PushToHubMixin
from ..models import UNet2DModel
from ..models.loading import DEFAULT_MAX_SHARD_SIZE, resolve_device_map
from ..models.modeling import WeightsOptions, check_push_kwargs, push_folder
from ..outputs import ImagePipelineOutput
from ..utils import Generators, check_generators, randn_tensor
from .callbacks import CALLBACK_TENSOR_INPUTS, StepCallback, StepEnd, StepEndCallback
from .pretrained import DtypeOption, ModelIndex, component_dtype, load_pipeline, save_pipeline
from .protocols import SchedulerLike

logger = logging.getLogger(__name__)

__all__ = ["DiffusionPipeline"]

P = TypeVar("P", bound="DiffusionPipeline")


class DiffusionPipeline(PushToHubMixin):
    """Unconditional image generation with a ``UNet2DModel`` and any ddpm scheduler.

    Construct it from parts, ``DDPMPipeline(unet=unet, scheduler=scheduler)``, or load a saved or Hub pipeline with
    ``from_pretrained``. Swap the sampler at any time; schedulers hold no weights, only their config:

    ```python
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    ```

    A diffusers-style subclass may build itself with ``super().__init__()`` followed by
    ``self.register_modules(unet=unet, scheduler=scheduler)``.

    Attributes:
        unet: The noise-prediction network.
        scheduler: The sampler: DDPMScheduler, DDIMScheduler, PNDMScheduler or anything with their interface
            (:class:`~ddpm.pipelines.protocols.SchedulerLike` lists it).
        default_num_inference_steps: The step count a call uses when ``num_inference_steps`` is not given.
        scheduler_type: The scheduler family ``from_pretrained`` converts the stored config to (``"ddim"``,
            ``"pndm"``), or ``None`` to build the class the checkpoint names.
    """

    default_num_inference_steps: ClassVar[int] = 1000
    scheduler_type: ClassVar[str | None] = None

    #: diffusers' list of components a pipeline may lack; a ddpm pipeline needs both of its parts.
    _optional_components: ClassVar[list[str]] = []
    #: The tensors ``callback_on_step_end_tensor_inputs`` may name (diffusers' attribute for them).
    _callback_tensor_inputs: ClassVar[list[str]] = list(CALLBACK_TENSOR_INPUTS)
    #: diffusers' ``DiffusionPipeline.numpy_to_pil``: NHWC floats in [0, 1] -> a list of PIL images.
    numpy_to_pil = staticmethod(numpy_to_pil)

    unet: UNet2DModel
    scheduler: SchedulerLike

    def __init__(self, unet: UNet2DModel | None = None, scheduler: SchedulerLike | None = None) -> None:
        self._progress_bar_config: dict[str, Any] = {}
        self._interrupt = False
        self._num_timesteps = 0
        self._fast: UNetRunner | None = None
        if unet is not None or scheduler is not None:
            self.register_modules(unet=unet, scheduler=scheduler)

    def register_modules(self, **modules: Any) -> None:
        """Set the pipeline's parts by name: ``self.register_modules(unet=unet, scheduler=scheduler)``.

        diffusers' way for a subclass's ``__init__`` to store its components after ``super().__init__()``; the
        constructor calls it too. Each part is checked before any is set.

        Raises:
            TypeError: A name other than ``unet`` and ``scheduler``, a ``unet`` that is not a model with a
                ``config``, or a ``scheduler`` without ``set_timesteps()`` and ``step()``.
        """
        unknown = sorted(set(modules) - {"unet", "scheduler"})
        if unknown:
            raise TypeError(f"a ddpm pipeline has two components, unet and scheduler; got {unknown}")
        unet = modules.get("unet")
        if "unet" in modules and (not isinstance(unet, torch.nn.Module) or not hasattr(unet, "config")):
            raise TypeError(f"unet must be a UNet2DModel (a torch.nn.Module with a .config), got {type(unet).__name__}")
        scheduler = modules.get("scheduler")
        for method in ("set_timesteps", "step") if "scheduler" in modules else ():
            if not callable(getattr(scheduler, method, None)):
                raise TypeError(
                    f"scheduler must have set_timesteps() and step(); {type(scheduler).__name__} has no {method}()"
                )
        for name, part in modules.items():
            setattr(self, name, part)

    def __repr__(self) -> str:
        if not hasattr(self, "unet") or not hasattr(self, "scheduler"):
            return f"{type(self).__name__}(components not registered yet)"
        return (
            f"{type(self).__name__}(unet={type(self.unet).__name__}, scheduler={type(self.scheduler).__name__}, "
            f"device={self.device}, dtype={self.dtype})"
        )

    # ------------------------------------------------------------------ components, device and dtype
    @property
    def components(self) -> dict[str, Any]:
        """The parts by name, ready for another pipeline: ``DDIMPipeline(**pipe.components)``."""
        return {"unet": self.unet, "scheduler": self.scheduler}

    @property
    def config(self) -> Mapping[str, Any]:
        """diffusers' ``pipe.config``: a read-only mapping of each component to its ``(library, class name)``.

        For example ``{"unet": ("diffusers", "UNet2DModel"), "scheduler": ("diffusers", "DDIMScheduler")}``: the
        component entries ``save_pretrained`` writes to ``model_index.json`` (which adds ``_class_name`` and the
        version). It follows the parts: after ``pipe.scheduler = DDIMScheduler(...)`` it names the new class.
        """
        return types.MappingProxyType(dict(ModelIndex.of(self).components()))

    @property
    def device(self) -> torch.device:
        """The device the UNet's weights are on; sampling runs there."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's floating-point dtype; the noise is drawn in it, as diffusers does."""
        return next(self.unet.parameters()).dtype

    def to(
        self: P,
        *args: Any,
        device: torch.device | str | int | None = None,
        dtype: torch.dtype | None = None,
        silence_dtype_warnings: bool = False,
    ) -> P:
        """Move the UNet to a device and/or cast it to a dtype; returns the pipeline.

        Accepts ``pipe.to("cuda")``, ``pipe.to(torch.float16)``, ``pipe.to("cuda", torch.float16)`` and the keyword
        forms ``device=...``, ``dtype=...``. Schedulers move their tables at ``set_timesteps`` time.
        ``silence_dtype_warnings`` is accepted for diffusers' signature; ddpm warns about nothing here.

        Raises:
            TypeError: An argument is neither a device nor a dtype, or a dtype is not a floating-point type.
            ValueError: A device string torch does not understand, or a device or dtype given twice.
        """
        for arg in args:
            if isinstance(arg, torch.dtype):
                if dtype is not None:
                    raise ValueError(f"pipe.to() got two dtypes: {dtype} and {arg}")
                dtype = arg
            elif isinstance(arg, (str, torch.device, int)) and not isinstance(arg, bool):
                if device is not None:
                    raise ValueError(f"pipe.to() got two devices: {device} and {arg}")
                device = arg
            else:
                raise TypeError(f"pipe.to() takes a device and/or a dtype, got {arg!r}")
        if device is not None:
            try:
                device = torch.device(device)
            except RuntimeError as exc:
                raise ValueError(f"pipe.to(): {device!r} is not a device ({exc})") from None
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"pipe.to(): the UNet needs a floating-point dtype, got {dtype}")
        self.unet.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ fast sampling
    def enable_fast_sampling(
        self: P,
        dtype: torch.dtype | None = None,
        *,
        cuda_graph: bool = True,
        compile: str | bool | None = False,
        compile_budget_s: float | None = 120.0,
        channels_last: bool | None = None,
        tf32: bool = True,
    ) -> P:
        """Switch this pipeline to the fast path (see :mod:`ddpm.fast`); returns the pipeline.

        Call it after ``pipe.to(device)``. It casts the UNet's weights to ``dtype`` (default: bf16 on CUDA and on a
        CPU with native bf16, fp32 elsewhere) and puts the UNet in eval mode. Later calls then keep x_t, the noise
        and every scheduler step in float32, cast only the UNet's input and output, and on CUDA replay the UNet as
        a CUDA graph captured per batch shape, with no host synchronisation inside the loop. Images for a seed stay
        those of the float32 pipeline up to the UNet's rounding. Calling it again replaces the settings;
        :meth:`disable_fast_sampling` turns it off.

        Args:
            dtype: The UNet's dtype: ``torch.bfloat16`` (the default on CUDA), ``torch.float16`` or
                ``torch.float32``; None picks ``ddpm.fast.default_fast_dtype(pipe.device)``.
            cuda_graph: Capture and replay the UNet as a CUDA graph (CUDA only).
            compile: Also ``torch.compile`` the UNet: a mode from ``ddpm.fast.COMPILE_MODES``, or True for
                ``"max-autotune-no-cudagraphs"``. Off by default; the compile time is in ``pipe.fast_sampler.stats``.
            compile_budget_s: The most seconds a compilation may take before the UNet runs uncompiled (None: no
                limit).
            channels_last: Convolution weights and activations channels_last (True) or standard (False); None picks
                the device's faster layout (channels_last on the CPU, standard on CUDA).
            tf32: Allow TF32 math for a float32 UNet on CUDA (only while the UNet runs).

        Returns:
            The pipeline.

        Raises:
            TypeError: ``dtype`` is not a floating-point torch dtype, or a flag is not a bool.
            ValueError: An unknown ``compile`` mode or a non-positive budget.
        """
        options = FastSamplingOptions(
            dtype=dtype, cuda_graph=cuda_graph, compile=compile, compile_budget_s=compile_budget_s,
            channels_last=channels_last, tf32=tf32,
        )  # fmt: skip
        unet_dtype, layout = options.unet_dtype(self.device), options.memory_format(self.device)
        # Module.to takes memory_format (it re-lays 4-d weights), but torch's type stub does not list it.
        self.unet.to(dtype=unet_dtype, memory_format=layout).eval()  # type: ignore[call-overload]
        self._fast = UNetRunner.from_options(self.unet, options)
        return self

    def disable_fast_sampling(self: P) -> P:
        """Go back to the plain loop (the UNet keeps its dtype and layout); returns the pipeline."""
        self._fast = None
        return self

    @property
    def fast_sampler(self) -> UNetRunner | None:
        """The fast path's UNet runner (its ``stats`` give capture and compile times), or None when it is off."""
        return self._fast

    # ------------------------------------------------------------------ memory options of diffusers
    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Accepted for diffusers compatibility; does nothing, and images are the same with or without it.

        diffusers' attention slicing computes attention a few heads or images at a time, to bound the memory of the
        (H·W × H·W) score matrix. ddpm's attention calls ``torch.nn.functional.scaled_dot_product_attention``,
        whose fused kernels (flash and memory-efficient attention on CUDA, the flash kernel on the CPU) work block
        by block and never hold that matrix, so there is nothing to slice; slicing would only add kernel launches.

        Args:
            slice_size: diffusers' values: ``"auto"``, ``"max"``, a positive int, or None. Checked, then ignored.

        Raises:
            ValueError: ``slice_size`` is none of those.
        """
        valid_int = isinstance(slice_size, int) and not isinstance(slice_size, bool) and slice_size > 0
        if slice_size not in (None, "auto", "max") and not valid_int:
            raise ValueError(f'slice_size must be "auto", "max", a positive int or None, got {slice_size!r}')

    def disable_attention_slicing(self) -> None:
        """Accepted for diffusers compatibility; does nothing (see :meth:`enable_attention_slicing`)."""

    # ------------------------------------------------------------------ progress bar
    def set_progress_bar_config(self, **tqdm_kwargs: Any) -> None:
        """Set keyword arguments for the tqdm progress bar of later calls, e.g. ``disable=True`` or ``leave=False``.

        Each call replaces the previous settings.
        """
        self._progress_bar_config = dict(tqdm_kwargs)

    def progress_bar(self, iterable: Iterable[Any] | None = None, total: int | None = None) -> Any:
        """A tqdm bar configured by ``set_progress_bar_config``, wrapping ``iterable`` or counting to ``total``.

        Raises:
            ValueError: Neither ``iterable`` nor ``total`` is given.
        """
        from tqdm.auto import tqdm

        if iterable is None and total is None:
            raise ValueError("progress_bar() needs an iterable or a total")
        return tqdm(iterable, total=total, **self._progress_bar_config)

    @property
    def num_timesteps(self) -> int:
        """The number of denoising steps of the current or last call (``len(scheduler.timesteps)``); 0 before any."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """True once a ``callback_on_step_end`` has set ``pipe._interrupt = True`` (or a ``callback`` returned True)
        during the current call."""
        return self._interrupt

    def check_batch_fits(
        self,
        batch_size: int,
        *,
        lower: str = "use a smaller batch_size (with one generator per image, the images do not depend on it)",
    ) -> None:
        """Refuse a ``batch_size`` whose sampling would not fit in memory on this pipeline's device, before any
        allocation. ``__call__`` runs it first; callers that prepare a batch (generators, files) can run it earlier.

        Args:
            batch_size: Images sampled at once.
            lower: How to lower the request, for the message.

        Raises:
            ResourceLimitError: The estimate (:func:`ddpm.memory.sampling_bytes`) exceeds
                :func:`ddpm.memory.memory_limit`.
        """
        _, _, height, width = self._sample_shape(batch_size)
        check_sampling_fits(self.unet.config, batch_size, height, width, self.dtype, lower=lower, device=self.device)

    # ------------------------------------------------------------------ sampling
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
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate a batch of images.

        Args:
            batch_size: How many images to generate.
            generator: A ``torch.Generator`` (a CPU one gives the same images on every device), a list of
                ``batch_size`` generators (image ``i`` then depends only on generator ``i``, not on the batch it is
                in), or ``None`` for torch's global RNG.
            num_inference_steps: Denoising steps; defaults to ``default_num_inference_steps`` (1000 for
                DDPMPipeline, 50 for DDIMPipeline and PNDMPipeline). The UNet runs ``len(scheduler.timesteps)``
                times: PNDM's Runge-Kutta warm-up makes that more than ``num_inference_steps``.
            output_type: ``"pil"`` (list of PIL images), ``"np"`` (NHWC float32 array in [0, 1]), ``"pt"``
                (NCHW tensor in [0, 1] on the pipeline's device) or ``"latent"`` (the final sample itself, NCHW in
                the model's range [-1, 1], not post-processed).
            return_dict: Return an ``ImagePipelineOutput`` (``.images``); ``False`` returns the
                tuple ``(images,)``.
            eta: DDIM's η in [0, 1] (0 deterministic DDIM, 1 DDPM-like noise), set on the scheduler for this call
                only. ``None`` keeps the scheduler's own ``eta`` (0.0 unless you built it
                otherwise). A scheduler without ``eta`` (DDPM, PNDM) accepts ``eta=0`` and ignores it; any other value
                raises ``ValueError``.
            use_clipped_model_output: DDIM only, set for this call like ``eta``; ``None`` keeps the scheduler's
                setting.
            callback: Called after every step as ``callback(step_index, timestep, sample, pred_original_sample)``
                with the 0-based step index, the timestep as an int, the new sample x_{t-1} (B, C, H, W) and the
                scheduler's estimate of x_0 (same shape, or ``None`` if the scheduler gives none). Return ``True``
                to stop: the remaining steps are skipped and the current sample is post-processed and returned
                (it runs as a step-end callback that sets ``pipe._interrupt``, before ``callback_on_step_end``).
                Any other return value (``None`` included) continues. Do not modify the tensors in place.
            callback_on_step_end: diffusers' form, called as ``callback_on_step_end(pipe, step_index, timestep,
                callback_kwargs)`` where ``callback_kwargs`` maps each name in
                ``callback_on_step_end_tensor_inputs`` to its tensor. It may return a dict whose ``"latents"``
                replaces the current sample, and may set ``pipe._interrupt = True`` to stop like ``callback``.
            callback_on_step_end_tensor_inputs: Which tensors ``callback_on_step_end`` receives: any of
                ``"latents"`` (the sample), ``"pred_original_sample"``, ``"model_output"`` (the list is
                ``pipe._callback_tensor_inputs``).
            check_finite: After every step, check the UNet output and the new sample for NaN or infinity and raise
                ``FloatingPointError`` naming the step. Costs one device sync per step, so it is off by default.

        Returns:
            ``ImagePipelineOutput`` with ``images``, or ``(images,)`` if ``return_dict=False``.

        Raises:
            TypeError: ``batch_size`` or ``num_inference_steps`` is not an int, or a generator is not a
                ``torch.Generator``.
            ValueError: ``batch_size`` or ``num_inference_steps`` < 1, unknown ``output_type``, a generator list
                whose length is not ``batch_size``, a CUDA generator for a CPU pipeline, ``eta`` for a scheduler
                without it, or an unknown callback tensor name.
            FloatingPointError: ``check_finite=True`` and a step produced NaN or infinity.
            ResourceLimitError: The batch would need more memory than :func:`ddpm.memory.memory_limit` allows
                (:func:`ddpm.memory.check_sampling_fits`); nothing was allocated.
        """
        steps = self._check_call_inputs(batch_size, generator, num_inference_steps, output_type)
        self.check_batch_fits(batch_size)  # before any noise is drawn
        on_step_end = StepEnd.for_call(callback, callback_on_step_end, callback_on_step_end_tensor_inputs, check_finite)
        with self._scheduler_overrides(eta=eta, use_clipped_model_output=use_clipped_model_output):
            sample = self._denoise(batch_size, generator, steps, on_step_end)
        images = postprocess(sample, output_type)  # [-1, 1] -> images
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _denoise(self, batch_size: int, generator: Generators, steps: int, on_step_end: StepEnd) -> torch.Tensor:
        """Algorithm 2: draw x_T, then take the scheduler's steps down to x_0; returns x_0, (B, C, H, W) in [-1, 1]."""
        scheduler = self.scheduler
        # x_T ~ N(0, I), in the UNet's dtype (float32 on the fast path); a CPU generator draws on the CPU
        sample = randn_tensor(self._sample_shape(batch_size), generator, self.device, self._loop_dtype())
        scheduler.set_timesteps(steps, device=self.device)  # e.g. 999, 979, ..., 19 for DDIM-50, "leading" spacing
        return self._denoise_loop(sample * scheduler.init_noise_sigma, scheduler.timesteps, generator, on_step_end)

    def _loop_dtype(self) -> torch.dtype:
        """The dtype of x_t, the noise and the scheduler's math: the UNet's, or float32 for a half UNet on the fast
        path."""
        return self.dtype if self._fast is None else running_dtype(self.dtype)

    def _denoise_loop(
        self, sample: torch.Tensor, timesteps: Sequence[Any] | torch.Tensor, generator: Generators, on_step_end: StepEnd
    ) -> torch.Tensor:
        """Take the scheduler's steps at ``timesteps`` from ``sample`` (B, C, H, W), already scaled for the first
        of them; returns the last sample. ``timesteps`` is ``scheduler.timesteps`` after ``set_timesteps``, or a tail
        of it (``timesteps[k:]``: a loop that starts part-way, as image-to-image does).
        """
        scheduler, fast = self.scheduler, self._fast
        self._interrupt = False
        self._num_timesteps = len(timesteps)
        for i, t in enumerate(self.progress_bar(timesteps, total=len(timesteps))):
            model_input = scheduler.scale_model_input(sample, t)
            model_output = self.unet(model_input, t).sample if fast is None else fast(model_input, t)  # eps(x_t, t)
            out = scheduler.step(model_output, t, sample, generator=generator)  # x_t -> x_{t-1}
            x0 = getattr(out, "pred_original_sample", None)  # the scheduler's estimate of x_0, if it makes one
            sample = on_step_end(self, i, t, out.prev_sample, x0, model_output)
            if self._interrupt:
                logger.debug("sampling stopped by a callback after step %d of %d", i, len(timesteps))
                break
        return sample

    def _check_call_inputs(
        self, batch_size: int, generator: Generators, num_inference_steps: int | None, output_type: str
    ) -> int:
        """Check a call's arguments before any work; returns the number of steps."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        steps = self.default_num_inference_steps if num_inference_steps is None else num_inference_steps
        if not isinstance(steps, int) or isinstance(steps, bool):
            raise TypeError(f"num_inference_steps must be an int, got {steps!r}")
        if steps < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {steps}")
        check_output_type(output_type)
        check_generators(generator, batch_size, self.device, batch=f"batch_size={batch_size}")
        return steps

    def _sample_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        config = self.unet.config
        size = config.sample_size
        if size is None:
            raise TypeError("the UNet's config has no sample_size, so the pipeline cannot tell the image size")
        height, width = (size, size) if isinstance(size, int) else size
        return (batch_size, config.in_channels, height, width)  # (B, C, H, W)

    @contextlib.contextmanager
    def _scheduler_overrides(self, **values: Any) -> Iterator[None]:
        """Set DDIM's per-call knobs (``eta``, ``use_clipped_model_output``) and restore them afterwards.

        ``eta`` follows DDIM's rule (a finite number in [0, 1]) whatever the scheduler; a scheduler without the knob
        accepts only a falsy value (``eta=0``), which it ignores.
        """
        scheduler = self.scheduler
        if values.get("eta") is not None:
            values["eta"] = _check_eta(values["eta"])
        changes = {name: value for name, value in values.items() if value is not None and hasattr(scheduler, name)}
        for name, value in values.items():
            if value and name not in changes:
                raise ValueError(
                    f"{name}={value!r} applies only to DDIMScheduler, and this pipeline's scheduler is "
                    f"{type(scheduler).__name__}; swap it first: "
                    "pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)"
                )
        previous = {name: getattr(scheduler, name) for name in changes}
        try:
            for name, value in changes.items():
                setattr(scheduler, name, value)
            yield
        finally:
            for name, value in previous.items():
                setattr(scheduler, name, value)

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls: type[P],
        repo_id_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        torch_dtype: DtypeOption = None,
        dtype: DtypeOption = None,
        use_safetensors: bool | None = None,
        variant: str | None = None,
        device_map: str | int | torch.device | Mapping[str, str | int | torch.device] | None = None,
        low_cpu_mem_usage: bool | None = None,
        unet: UNet2DModel | None = None,
        scheduler: SchedulerLike | None = None,
    ) -> P:
        """Load a pipeline from a local folder, a bundled model, or a Hugging Face Hub repo.

        Reads ``model_index.json`` when there is one (a missing one means a UNet plus a DDPM scheduler), then loads
        the UNet from ``unet/`` and the scheduler from ``scheduler/``, falling back to the repo root for the flat
        google/ddpm-* repos. Only the configs and the UNet's weights are downloaded; with ``HF_HUB_OFFLINE=1`` or
        ``local_files_only=True`` nothing is, and the files must be in the cache.

        ``DDIMPipeline`` and ``PNDMPipeline`` build their own scheduler from the stored (usually DDPM) scheduler
        config; ``DDPMPipeline`` builds the class the checkpoint names. Calling ``DiffusionPipeline.from_pretrained``
        returns the pipeline class named in ``model_index.json``.

        Args:
            repo_id_or_path: A Hub id (``"google/ddpm-ema-celebahq-256"``), a local folder, or a bundled model name.
            revision: A branch, tag or commit of the Hub repo.
            cache_dir: The Hugging Face cache folder (default: ``HF_HUB_CACHE``).
            local_files_only: Never download; use only the cache or the local folder.
            token: A Hub token for private or gated repos.
            torch_dtype: Load the UNet weights in this dtype (e.g. ``torch.float16``; default float32), or a dict of
                component name -> dtype with an optional ``"default"`` entry, as in diffusers
                (``{"unet": torch.float16, "default": torch.float32}``).
            dtype: The same option under diffusers' newer name; passing both with different values is an error.
            use_safetensors: None prefers safetensors, True allows only safetensors, False only ``.bin``.
            variant: Load the UNet weights of this variant (``"fp16"``); absent, a ``VariantNotFoundError``.
            device_map: The one device of the UNet (``"cpu"``, ``"cuda"``, ``0``, ``{"": "cuda"}``), or ``"auto"`` /
                ``"balanced"`` for the first GPU, else the CPU.
            low_cpu_mem_usage: Accepted and ignored: loading never makes a second copy of the model.
            unet: A UNet to use as it is instead of loading the repo's (nothing of it is read then).
            scheduler: A scheduler to use as it is instead of building one from the repo's config, as in diffusers:
                ``DDPMPipeline.from_pretrained(repo, scheduler=DDIMScheduler.from_pretrained(repo))``.

        The last four are the UNet's :meth:`~ddpm.models.modeling.ModelMixin.from_pretrained` options, which it
        documents in full.

        Returns:
            The pipeline, UNet in eval mode (on the CPU unless ``device_map`` says otherwise).

        Raises:
            CheckpointNotFoundError: The id is neither a folder nor available from the cache or the Hub; offline,
                the message says how to make it available. A missing variant raises
                :class:`~ddpm.errors.VariantNotFoundError` (also a ``ValueError``, as in diffusers).
            ConfigError: A config file (``model_index.json``, ``config.json``, ``scheduler_config.json``) is not
                valid JSON, holds a bad value, or names a class ddpm does not implement; the message names the file.
            WeightsError: The UNet weights are damaged or do not fit its config.
            UnsafeCheckpointError: The UNet weights are a pickle that references code; nothing in it ran.
            ValueError: A dtype, variant or device_map is malformed.
        """
        del low_cpu_mem_usage  # loading never makes a second copy of the model (ModelMixin.from_pretrained)
        options = hub.HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        load = WeightsOptions(
            dtype=component_dtype(torch_dtype, dtype, "unet"),
            device=resolve_device_map(device_map),
            use_safetensors=use_safetensors,
            variant=variant,
        )
        return load_pipeline(
            cls,
            repo_id_or_path,
            options,
            load,
            class_from_index=cls is DiffusionPipeline,
            unet=unet,
            scheduler=scheduler,
        )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        overwrite: bool = False,
        **push_kwargs: Any,
    ) -> Path:
        """Save the pipeline as ``model_index.json`` + ``unet/`` + ``scheduler/``, a layout diffusers loads too.

        All files are written to temporary names first and renamed into place together, ``model_index.json`` last:
        an interrupted save leaves the previous pipeline intact, and a folder with ``model_index.json`` is complete.

        Args:
            save_directory: The folder to write (created if needed). A ddpm pipeline saved there is replaced.
            safe_serialization: Write the UNet weights as safetensors (default) or a ``.bin`` pickle.
            variant: Insert this name into the UNet weights file names (``"fp16"``); see
                :meth:`~ddpm.models.modeling.ModelMixin.save_pretrained`.
            max_shard_size: The largest UNet weights file (None: the model's default, ``"10GB"``).
            push_to_hub: Then upload the folder to the Hub repo ``repo_id`` (default: the folder's name).
            overwrite: Also replace another kind of model: by default a folder with a ``model_index.json`` of
                another pipeline class, a bare model folder (``config.json`` without ``model_index.json``), or
                ``unet/`` / ``scheduler/`` folders holding other models are refused.
            **push_kwargs: With ``push_to_hub``: ``repo_id``, ``commit_message``, ``private``, ``token``,
                ``create_pr``, ``revision``.

        Returns:
            The folder.

        Raises:
            OverwriteError: The folder holds another kind of model (and ``overwrite`` is False), or is a file.
            ValueError: ``variant`` or ``max_shard_size`` is malformed.
            TypeError: An unknown keyword argument.
        """
        check_push_kwargs(push_kwargs)
        folder = save_pipeline(
            self,
            save_directory,
            overwrite=overwrite,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=DEFAULT_MAX_SHARD_SIZE if max_shard_size is None else max_shard_size,
        )
        if push_to_hub:
            push_folder(folder, type(self).__name__, **push_kwargs)
        return folder


def _check_eta(eta: Any) -> float:
    """DDIM's rule for η, checked before any work: a finite number in [0, 1] (the DDIM scheduler checks it too)."""
    is_number = isinstance(eta, (int, float)) and not isinstance(eta, bool)
    if not is_number or not 0.0 <= eta <= 1.0:  # (NaN fails the comparison)
        raise ValueError(f"eta must be a finite number in [0, 1] (0 = DDIM, 1 = DDPM-like noise), got {eta!r}")
    return float(eta)
