"""The :class:`Scheduler` base: what every scheduler does the same way, so that a scheduler file holds its algorithm.

The base owns loading and saving (:meth:`Scheduler.from_pretrained`, :meth:`Scheduler.save_pretrained`), the noise
schedule β_t / ᾱ_t, :meth:`Scheduler.set_timesteps`, the single :meth:`Scheduler.step` entry point with its
timestep bookkeeping and checks, and the forward process (:meth:`Scheduler.add_noise`,
:meth:`Scheduler.get_velocity`). The configs live in :mod:`ddpm.schedulers.config`, the shared formulas in
:mod:`ddpm.schedulers.math`; both are re-exported here.

Writing a scheduler (see ``ddim.py`` for a short one):

1. **A config**: a frozen dataclass subclassing :class:`SchedulerConfig` (or :class:`ClippingSchedulerConfig` when
   the algorithm clips x̂_0) that adds the scheduler's own keys and sets ``_class_name``; and a constructor that
   names every key with the config's default (``beta_end: float = MyConfig.beta_end``), then a keyword-only
   ``config`` and ``**kwargs``, and passes them on: ``super().__init__(config=config, **self._named_keys(locals()),
   **kwargs)`` (the base knows which keys the caller gave; see ``ddpm.py``).
2. **The update**, :meth:`Scheduler._step`: one call of ``step()`` as a :class:`StepInput` in, ``(prev_sample,
   pred_original_sample)`` out, written top to bottom with the paper's equation numbers. The input already holds
   the model output in the compute dtype, converts it to x̂_0 or ε̂ (:meth:`StepInput.predicted_x0`,
   :meth:`StepInput.predicted_eps`) and draws the step noise the way diffusers does (:meth:`StepInput.noise`).
3. Optionally, **set_timesteps**: override it, call ``super().set_timesteps(...)`` first, then compute the
   per-step scalars of the new schedule (``self._alpha_bar_at(...)``, :func:`per_step`) and reset any multistep
   state. The signature stays the base's. A loop may start part-way: override :meth:`Scheduler._start_at` to
   reset multistep state or refuse a start inside a multi-call step.
5. Optionally, **per-call options** (DDIM's ``eta``): override ``step`` with them between ``sample`` and
   ``generator`` (with defaults), keep ``generator``, ``variance_noise`` and ``return_dict``, and call
   :meth:`Scheduler._advance` with the options; ``_step`` reads them as ``step.options``.
4. Optionally, **the model-call schedule**, :meth:`Scheduler._model_call_timesteps`: when the model is evaluated
   more than once per spaced timestep (PNDM's Runge-Kutta warm-up), or when some step counts are impossible.

Register the class in ``SCHEDULERS`` (``ddpm/schedulers/__init__.py``).

Precision and host-device synchronisation: β_t and ᾱ_t are computed in float64 and rounded once to float32.
``set_timesteps`` turns them into the per-step scalar coefficients of the chosen schedule, computed in float32 with
the same operations diffusers applies to its float32 schedule (so, for the same ᾱ, results agree to the last bit)
and kept on the host as Python floats. ``step()`` therefore never reads a tensor value and touches no schedule
tensor: the step index is a Python int, the timesteps a Python list, and scalars reach the kernels as arguments.
A loop that starts part-way costs a lookup, not a sync: an element of ``timesteps`` is located by its storage
offset, an int or a CPU tensor in a host table.
The loop can run ahead of the GPU and be captured in a CUDA graph. ``add_noise`` and ``get_velocity`` gather from
copies of sqrt(ᾱ_t) and sqrt(1 - ᾱ_t) that are moved to each device once and cached.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, overload

import torch

from ..config import read_json
from ..hub import HubOptions, require
from ..io import Writer, atomic_write_files, check_save_folder, remove_stale_temporaries
from ..mixins import ConfigMixin, PushToHubMixin
from ..outputs import SchedulerOutput
from ..utils import Generators, extract, randn_tensor
from .config import (
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    ClippingSchedulerConfig,
    PredictionType,
    SchedulerConfig,
    TimestepSpacing,
    scheduler_config_keys,
)
from .math import (
    clip_or_threshold,
    dynamic_threshold,
    eps_from_x0,
    output_from_x0,
    predict_eps,
    predict_x0,
    spaced_timesteps,
)
from .schedules import alphas_cumprod_from_betas, make_betas

__all__ = [
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "ClippingSchedulerConfig",
    "PredictionType",
    "Scheduler",
    "SchedulerConfig",
    "StepInput",
    "TimestepSpacing",
    "clip_or_threshold",
    "dynamic_threshold",
    "eps_from_x0",
    "output_from_x0",
    "per_step",
    "predict_eps",
    "predict_x0",
    "scheduler_config_keys",
    "spaced_timesteps",
]

S = TypeVar("S", bound="Scheduler")
Row = TypeVar("Row")


# ------------------------------------------------------------------------------------------------ the step's input


@dataclasses.dataclass(frozen=True, eq=False)
class StepInput:
    """One call of :meth:`Scheduler.step` as the algorithm (:meth:`Scheduler._step`) sees it.

    Tensors are in the compute dtype (float32, or float64 for a float64 sample), shape (B, C, H, W).

    Attributes:
        i: The position of this model call in ``timesteps`` (0 for the first).
        t: Its timestep, ``timesteps[i]``.
        model_output: What the model predicts at (x_t, t): ε, x_0 or v (``prediction_type``).
        sample: x_t.
        variance: The model's variance channels, for a model that predicts them (a (B, 2C, H, W) output), else None.
        sqrt_alpha_bar: sqrt(ᾱ_t), float32 rounded.
        sqrt_one_minus_alpha_bar: sqrt(1 - ᾱ_t), float32 rounded.
        prediction_type: The config's ``prediction_type``.
        generator: The ``generator`` given to ``step()``.
        noise_dtype: The dtype the step noise is drawn in (the model output's), before it is cast to the compute dtype.
        variance_noise: The ``variance_noise`` given to ``step()``: the z of this step, used instead of drawing one.
        options: The scheduler's own per-call options, as its ``step()`` made them (DDIM: η and
            ``use_clipped_model_output``); None for a scheduler without any.
    """

    i: int
    t: int
    model_output: torch.Tensor
    sample: torch.Tensor
    variance: torch.Tensor | None
    sqrt_alpha_bar: float
    sqrt_one_minus_alpha_bar: float
    prediction_type: PredictionType
    generator: Generators
    noise_dtype: torch.dtype
    variance_noise: torch.Tensor | None = None
    options: Any = None

    def predicted_x0(self) -> torch.Tensor:
        """x̂_0, the model's estimate of the clean sample (:func:`~ddpm.schedulers.math.predict_x0`)."""
        return predict_x0(
            self.model_output, self.sample, self.sqrt_alpha_bar, self.sqrt_one_minus_alpha_bar, self.prediction_type
        )

    def predicted_eps(self) -> torch.Tensor:
        """ε̂, the model's estimate of the noise in x_t (:func:`~ddpm.schedulers.math.predict_eps`)."""
        return predict_eps(
            self.model_output, self.sample, self.sqrt_alpha_bar, self.sqrt_one_minus_alpha_bar, self.prediction_type
        )

    def noise(self) -> torch.Tensor:
        """z ~ N(0, I) shaped like x_t, drawn as diffusers draws it (so seeded runs match), in the compute dtype.

        The ``variance_noise`` given to ``step()`` is returned instead when there is one.
        """
        out = self.model_output
        if self.variance_noise is not None:
            return self.variance_noise.to(device=out.device, dtype=out.dtype)
        z = randn_tensor(out.shape, generator=self.generator, device=out.device, dtype=self.noise_dtype)
        return z.to(out.dtype)


def _custom_timesteps(timesteps: Sequence[int] | torch.Tensor, num_train_timesteps: int) -> list[int]:
    """Check a custom schedule given to ``set_timesteps(timesteps=...)`` and return it as Python ints."""
    if isinstance(timesteps, torch.Tensor):
        if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dim() > 1:
            raise TypeError(f"timesteps must be a 1-d integer tensor or a list of ints, got {timesteps!r}")
        timesteps = timesteps.tolist()  # read once, at set-up (a sync for a device tensor)
    values = list(timesteps)
    if not values:
        raise ValueError("timesteps must hold at least one timestep")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values):
        raise TypeError(f"timesteps must be integers, got {values!r}")
    values = [int(v) for v in values]
    if any(a <= b for a, b in zip(values, values[1:])):
        raise ValueError(f"timesteps must be in descending order (each one smaller than the one before), got {values}")
    if values[0] >= num_train_timesteps:
        raise ValueError(
            f"timesteps must start below num_train_timesteps={num_train_timesteps} (the model was trained on "
            f"0..{num_train_timesteps - 1}), got {values[0]}"
        )
    if values[-1] < 0:
        raise ValueError(f"timesteps must be 0 or more, got {values[-1]}")
    return values


def per_step(row: Callable[..., Row], **columns: torch.Tensor) -> list[Row]:
    """Turn per-step columns (float32 tensors, one value per model call) into one row of Python floats per call.

    ``per_step(_Coefficients, sigma=sigma, ...)[i].sigma`` is step i's σ as a float, read by ``_step`` without
    touching a tensor.
    """
    names = list(columns)
    rows = zip(*(columns[name].tolist() for name in names))
    return [row(**dict(zip(names, values))) for values in rows]


def _records_given_keys(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a scheduler's ``__init__`` so that the base knows which parameters the caller gave.

    The named config parameters have their config dataclass's defaults; a key the caller did not give is a default,
    which must neither override ``config=`` nor count as chosen (diffusers' ``_use_default_values``). The outermost
    ``__init__`` records (a subclass that passes every key on to its parent keeps its own caller's choice).
    """
    signature = inspect.signature(init)
    varkw = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]

    @functools.wraps(init)
    def __init__(self: Scheduler, *args: Any, **kwargs: Any) -> None:
        if "_given_keys" not in self.__dict__:
            try:
                arguments = signature.bind(self, *args, **kwargs).arguments
            except TypeError:
                pass  # the call itself raises the error
            else:
                extra = arguments.pop(varkw[0], {}) if varkw else {}
                self.__dict__["_given_keys"] = frozenset(arguments) | frozenset(extra)
        init(self, *args, **kwargs)

    return __init__


# ------------------------------------------------------------------------------------------------------ scheduler


class Scheduler(ConfigMixin, PushToHubMixin):
    """Base of :class:`DDPMScheduler`, :class:`DDIMScheduler` and :class:`PNDMScheduler`.

    Usage is the same for all three::

        scheduler = DDIMScheduler.from_pretrained("google/ddpm-cifar10-32")   # any scheduler's config works
        scheduler.set_timesteps(50)
        x = torch.randn(1, 3, 32, 32) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample

    Schedulers hold no weights: a scheduler is its config plus the position in the current schedule. A subclass
    writes its update in :meth:`_step` and may override :meth:`set_timesteps` (per-step scalars, multistep state)
    and :meth:`_model_call_timesteps`; the module docstring says how.

    Attributes:
        config: The frozen config (attribute or mapping access, diffusers key names).
        timesteps: The int64 timesteps ``step()`` expects, in order; T-1..0 until :meth:`set_timesteps` is called.
        num_inference_steps: The ``n`` of the last :meth:`set_timesteps`, or None.
        betas, alphas, alphas_cumprod: β_t, α_t and ᾱ_t as float32 CPU tensors (computed in float64).
        order: 1 for all three schedulers (the model is called once per entry of ``timesteps``).
        init_noise_sigma: The standard deviation of the starting noise x_T, 1.0.
    """

    config_class: ClassVar[type[SchedulerConfig]] = SchedulerConfig
    #: Constructor keywords that are scheduler attributes, not config keys (DDIM's ``eta``).
    _constructor_only: ClassVar[tuple[str, ...]] = ()
    #: Whether ``step()`` may be called before :meth:`set_timesteps`, over all T training timesteps (DDPM).
    _steps_without_set_timesteps: ClassVar[bool] = False
    #: Whether timesteps may be fractional (the σ-space schedulers' float32 timesteps); integers otherwise.
    _fractional_timesteps: ClassVar[bool] = False
    order: ClassVar[int] = 1
    init_noise_sigma: ClassVar[float] = 1.0
    config: SchedulerConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _records_given_keys(init)  # type: ignore[method-assign]

    def __init__(self, *, config: Any = None, **kwargs: Any) -> None:
        """Build a scheduler from a config and/or config keywords.

        A scheduler class lists its config keys as named constructor parameters (their defaults are its config
        dataclass's) and passes them here; only the keys its caller actually gave override ``config``, the others
        are defaults (listed under ``_use_default_values``, as diffusers does).

        Args:
            config: A config of this scheduler, another scheduler's config, a diffusers config (``FrozenDict``) or a
                plain dict. Keys this scheduler does not use are ignored.
            **kwargs: Config keys (diffusers' constructor keywords), overriding those in ``config``; keys of the
                other schedulers of the package are carried along.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid; the message names the key, the value and what is allowed.
        """
        given = self.__dict__.pop("_given_keys", None)
        if given is not None:  # drop the named parameters the caller left at their defaults
            own = set(self.config_class._field_names())
            kwargs = {k: v for k, v in kwargs.items() if k not in own or k in given}
        self._apply_config(self._build_config(config, kwargs))

    def _apply_config(self, cfg: SchedulerConfig) -> None:
        """Make ``cfg`` the config: compute the noise schedule and reset to the state before :meth:`set_timesteps`."""
        self.config = cfg
        betas = make_betas(
            cfg.beta_schedule,
            cfg.num_train_timesteps,
            cfg.beta_start,
            cfg.beta_end,
            cfg.trained_betas,
            cfg.rescale_betas_zero_snr,
        )
        alphas_cumprod = alphas_cumprod_from_betas(betas)
        self.betas = betas.float()
        self.alphas = (1.0 - betas).float()
        self.alphas_cumprod = alphas_cumprod.float()
        self._alphas_cumprod64 = alphas_cumprod
        # ᾱ after the last step: 1 (the chain ends at the clean x_0), or ᾱ_0 where the config has
        # set_alpha_to_one=False (DDIM and PNDM have that key; DDPM always ends at 1).
        self._final_alpha_bar = 1.0 if getattr(cfg, "set_alpha_to_one", True) else float(self.alphas_cumprod[0])
        # (device, dtype) -> (sqrt(ᾱ_t), sqrt(1 - ᾱ_t)) for add_noise / get_velocity.
        self._device_tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(cfg.num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._schedule: list[int] | None = None
        self._positions: dict[float, int] = {}  # timestep -> position (int keys, or float ones in σ-space)
        self._step_index = 0
        self._begin_index = 0  # where the current loop starts; its first step may start elsewhere (a lookup)
        self._implicit_schedule = False  # the T training timesteps, made by step() without set_timesteps

    @classmethod
    def _named_keys(cls, names: dict[str, Any]) -> dict[str, Any]:
        """The config keys among a constructor's ``locals()`` (its named config parameters), by name."""
        return {k: names[k] for k in cls.config_class._field_names() if k in names}

    @property
    def compatibles(self) -> list[type[Scheduler]]:
        """The scheduler classes that load this scheduler's config: every scheduler of the package (``SCHEDULERS``).

        ``[cls.from_config(scheduler.config) for cls in scheduler.compatibles]`` gives each sampler on the same noise
        schedule.
        """
        from . import SCHEDULERS

        return list(SCHEDULERS.values())

    def register_to_config(self, **kwargs: Any) -> None:
        """Change config keys after construction, or record extra keys with the config (diffusers' method).

        This scheduler's keys are validated like constructor keywords; the noise schedule is recomputed and the
        scheduler returns to its state before :meth:`set_timesteps` (call it again). Other keys are not validated:
        they travel with the config like the keys of the other schedulers (written to ``scheduler_config.json``,
        readable as deprecated attributes, ``scheduler.test_key``), and a scheduler that reads the file later
        ignores those it does not use.

        Raises:
            ConfigError: A value of one of this scheduler's keys is invalid.
        """
        own = set(self.config_class._field_names())
        changes = {k: v for k, v in kwargs.items() if k in own}
        extra = {k: v for k, v in kwargs.items() if k not in own}
        config = self.config.replace(**changes) if changes else self.config
        if extra:
            config = dataclasses.replace(config, _carried={**self.config._carried, **extra})
        if changes:
            self._apply_config(config)
        else:
            self.config = config

    @classmethod
    def _build_config(
        cls, config: Any, overrides: dict[str, Any], *, source: str | os.PathLike[str] | None = None
    ) -> SchedulerConfig:
        unknown = sorted(k for k in overrides if k not in scheduler_config_keys())
        if unknown:
            raise TypeError(
                f"{cls.__name__} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"its config keys are {', '.join(cls.config_class._field_names())}"
            )
        if config is None:
            return cls.config_class.from_dict({}, **overrides)
        if isinstance(config, cls.config_class) and not overrides:
            return config
        return cls.config_class.from_dict(config, source=source, **overrides)

    # ------------------------------------------------------------------------------------------- loading / saving
    @classmethod
    def from_config(cls: type[S], config: Any, **overrides: Any) -> S:
        """Build this scheduler from any scheduler's config: the one-line swap.

        ``DDIMScheduler.from_config(pipe.scheduler.config)`` keeps the noise schedule the model was trained with and
        changes only the sampler. Keys of ``config`` this scheduler does not use are ignored quietly.

        Args:
            config: A ddpm or diffusers scheduler config, a plain dict, or a scheduler.
            **overrides: Config keys to change, or constructor keywords such as DDIM's ``eta``.

        Raises:
            TypeError: An override is neither a config key nor a constructor keyword.
            ConfigError: A value is invalid.
        """
        init_kwargs = {k: overrides.pop(k) for k in cls._constructor_only if k in overrides}
        return cls(config=cls._build_config(config, overrides), **init_kwargs)

    @classmethod
    def from_pretrained(
        cls: type[S],
        repo_id_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **overrides: Any,
    ) -> S:
        """Load ``scheduler_config.json`` from a folder or a Hub repo (``subfolder`` first, then the root).

        The google/ddpm-* repos are flat (the file sits at the root), diffusers pipelines keep it in ``scheduler/``;
        both work with or without ``subfolder="scheduler"``. Any scheduler's config file loads into any scheduler.

        Args:
            repo_id_or_path: A local folder or a Hub id such as ``"google/ddpm-cifar10-32"``.
            subfolder: The folder to try before the root, e.g. ``"scheduler"``.
            revision: Hub branch, tag or commit.
            cache_dir: Hugging Face cache folder (default: ``HF_HUB_CACHE``).
            local_files_only: Never download; use the cache only.
            token: Hub token for private repos.
            **overrides: As for :meth:`from_config`.

        Raises:
            CheckpointNotFoundError: No ``scheduler_config.json`` in ``subfolder`` or the root.
            ConfigError: The file is not valid JSON or holds an invalid value (the message names the file).
        """
        options = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        path = require(repo_id_or_path, cls.config_class.config_name, subfolder, options, what="scheduler config").path
        init_kwargs = {k: overrides.pop(k) for k in cls._constructor_only if k in overrides}
        config = cls._build_config(read_json(path), overrides, source=path)
        return cls(config=config, **init_kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``save_directory/scheduler_config.json`` atomically (diffusers reads it too) and return its path.

        Args:
            save_directory: The folder (created if missing). Any scheduler's config there is replaced.
            overwrite: Also write into a pipeline folder (``model_index.json``; save into its ``scheduler/``
                instead) or over a ``scheduler_config.json`` that is not a scheduler's; refused by default.

        Raises:
            OverwriteError: The folder holds another kind of model (and ``overwrite`` is False), or is a file.
        """
        files = self._save_plan(save_directory, overwrite=overwrite)
        remove_stale_temporaries(files)
        atomic_write_files(files)
        return next(iter(files))

    def _save_plan(self, save_directory: str | os.PathLike[str], *, overwrite: bool = False) -> dict[Path, Writer]:
        """Check the folder (see :meth:`save_pretrained`) and return the file to write there, unwritten."""
        name = self.config_class.config_name
        folder = check_save_folder(
            save_directory,
            what=f"a {type(self).__name__}",
            owned={name: lambda class_name: class_name.endswith("Scheduler")},
            foreign={"model_index.json": "a pipeline; save the scheduler into its scheduler/ folder"},
            overwrite=overwrite,
        )
        text = self.config.to_json_string()
        return {folder / name: lambda tmp: tmp.write_text(text, encoding="utf-8")}

    # ------------------------------------------------------------------------------------------------ the schedule
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """Choose the timesteps of the sampling loop and reset the scheduler to its first step.

        Args:
            num_inference_steps: n, the number of denoising steps, 1 ≤ n ≤ ``num_train_timesteps``, spaced by the
                config's ``timestep_spacing``.
            device: Where ``self.timesteps`` lives (default CPU). ``step()`` works for samples on any device.
            timesteps: A custom schedule instead of ``num_inference_steps``: distinct training timesteps in
                descending order (a list, or a 1-d integer tensor, read once here).

        Raises:
            TypeError: ``num_inference_steps`` is not an integer.
            ValueError: Both or neither of ``num_inference_steps`` and ``timesteps`` are given; n is below the
                scheduler's minimum (1; 4 for PNDM with its Runge-Kutta warm-up) or above ``num_train_timesteps``,
                or ``steps_offset`` is too large for it; ``timesteps`` is not descending or holds a timestep outside
                [0, num_train_timesteps).
        """
        t = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or timesteps to set_timesteps, not both")
            spaced = _custom_timesteps(timesteps, t)
        elif num_inference_steps is None:
            raise ValueError("set_timesteps needs num_inference_steps or a custom list of timesteps")
        else:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral):
                raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
            n = int(num_inference_steps)
            if n < 1:
                raise ValueError(f"num_inference_steps={n} is too small: it must be at least 1")
            if n > t:
                raise ValueError(
                    f"num_inference_steps={n} is larger than num_train_timesteps={t}: a discrete scheduler can only "
                    f"visit the {t} timesteps the model was trained on; use at most {t}"
                )
            spaced = self._spaced_timesteps(n)
        schedule = self._model_call_timesteps(spaced)
        self._schedule = schedule
        # timestep -> its first position in the schedule, for a loop that jumps (see _begin_step)
        self._positions = {}
        for position, timestep in enumerate(schedule):
            self._positions.setdefault(timestep, position)
        self.num_inference_steps = len(spaced)
        self._spaced: list[int] = spaced
        self.timesteps = torch.tensor(schedule, dtype=torch.int64, device=device)
        self._step_index = self._begin_index = 0
        self._implicit_schedule = False
        # sqrt(ᾱ) and sqrt(1 - ᾱ) at each model call, for the x_0 / ε / v conversions of StepInput
        alpha_bar = self._alpha_bar_at(schedule)
        self._sqrt_alpha_bar: list[float] = alpha_bar.sqrt().tolist()
        self._sqrt_one_minus_alpha_bar: list[float] = (1 - alpha_bar).sqrt().tolist()

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the next ``step()`` at position ``begin_index`` of ``timesteps`` (the img2img loop).

        ``for t in scheduler.timesteps[k:]`` works without it (the first ``step()`` finds its timestep in the
        schedule); this says where the loop starts beforehand, for a loop whose timesteps ``step()`` cannot look up
        (e.g. copies on a device).

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called.
            ValueError: ``begin_index`` is outside ``timesteps``.
        """
        schedule = self._require_schedule()
        if isinstance(begin_index, bool) or not isinstance(begin_index, numbers.Integral):
            raise TypeError(f"begin_index must be an int, got {type(begin_index).__name__}")
        if not 0 <= begin_index < len(schedule):
            raise ValueError(f"begin_index={begin_index} is outside the schedule of {len(schedule)} timesteps")
        if begin_index != self._step_index:
            self._start_at(int(begin_index))
        self._step_index = self._begin_index = int(begin_index)

    def begin_index_for_step(self, step: int) -> int:
        """The position in ``timesteps`` where spaced step ``step`` (0 ≤ step < ``num_inference_steps``) begins: the
        start of a loop that skips the first ``step`` steps (image-to-image, ``ImageToImagePipeline.get_timesteps``).

        It is the last model call at the step's timestep: ``step * order`` where every step makes ``order`` calls,
        and past the Runge-Kutta calls of PNDM's warm-up, whose positions are not a multiple of the step.

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called.
            ValueError: ``step`` is outside the schedule.
        """
        schedule = self._require_schedule()
        spaced = self._spaced
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step < len(spaced):
            raise ValueError(f"step must be an int from 0 to {len(spaced) - 1}, got {step!r}")
        t = spaced[step]
        return max(p for p, s in enumerate(schedule) if s == t)

    def previous_timestep(self, timestep: int | torch.Tensor) -> torch.Tensor:
        """The timestep after ``timestep`` in the schedule, as a 0-d int64 tensor (-1 after the last step).

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called (and this scheduler needs it).
            ValueError: ``timestep`` is not in the schedule.
        """
        schedule = self._require_schedule()
        position = self._position_of(timestep, self._step_index)
        if position is None:
            raise ValueError(f"timestep {self._timestep_value(timestep)} is not in the schedule {schedule}")
        return torch.tensor(schedule[position + 1] if position + 1 < len(schedule) else -1)

    def _spaced_timesteps(self, num_inference_steps: int) -> list[int]:
        """The n timesteps of ``set_timesteps(n)``, largest first: the config's ``timestep_spacing``
        (:func:`~ddpm.schedulers.math.spaced_timesteps`). Override it for a scheduler with its own spacing rule; it may
        raise a ``ValueError`` that says why a step count is impossible."""
        cfg = self.config
        return spaced_timesteps(cfg.num_train_timesteps, num_inference_steps, cfg.timestep_spacing, cfg.steps_offset)

    def _model_call_timesteps(self, spaced: list[int]) -> list[int]:
        """The timestep of every model call, in order, from the n spaced timesteps (one call each by default).

        Override it where the model is evaluated more than once per spaced timestep (PNDM), or to refuse a step
        count the algorithm cannot run with a ``ValueError`` that says why.
        """
        return spaced

    @property
    def step_index(self) -> int | None:
        """The position in ``timesteps`` of the next ``step()``, or None before :meth:`set_timesteps`."""
        return None if self._schedule is None else self._step_index

    def _alpha_bar_at(self, timesteps: list[int]) -> torch.Tensor:
        """ᾱ at each of ``timesteps`` as a float32 CPU tensor; -1 (past the end of the schedule) gives the final ᾱ.

        The per-step coefficients are computed from it with torch's float32 CPU kernels, the ones diffusers applies
        to its 0-d schedule tensors, so that each coefficient rounds identically.
        """
        index = torch.tensor(timesteps, dtype=torch.int64)
        alpha_bar = self.alphas_cumprod[index.clamp(min=0)]
        return torch.where(index >= 0, alpha_bar, torch.tensor(self._final_alpha_bar, dtype=torch.float32))

    def _prev_timesteps(self) -> list[int]:
        """For each step, the next timestep of the materialised schedule (never recomputed by a stride).

        -1 after the last step, where :meth:`_alpha_bar_at` gives the final ᾱ.
        """
        assert self._schedule is not None
        return self._schedule[1:] + [-1]

    # ------------------------------------------------------------------------------------------------------ step
    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: Literal[True] = True,
    ) -> SchedulerOutput: ...

    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: Literal[False],
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """Go from x_t to the next sample of the schedule.

        Every scheduler accepts this call (``generator``, ``variance_noise`` and ``return_dict`` by keyword), so any
        scheduler drops into any loop. A scheduler may add its own per-call options between ``sample`` and
        ``generator`` and take them positionally where diffusers does (DDIM's ``eta``); it then calls
        :meth:`_advance`. Subclasses implement :meth:`_step`.

        Call it once per entry of ``timesteps``, in order. The first call after :meth:`set_timesteps` (or
        :meth:`set_begin_index`) may start anywhere in the schedule: ``for t in scheduler.timesteps[k:]`` (the
        img2img loop). A scheduler that allows it (DDPM) may be stepped over the T training timesteps without
        :meth:`set_timesteps`; each of those steps may be at any training timestep.

        Args:
            model_output: The model's output at (x_t, t), shape (B, C, H, W), or (B, 2C, H, W) for a model that also
                predicts its variance (DDPM uses the second half when ``variance_type`` is ``learned`` or
                ``learned_range``; DDIM and PNDM take deterministic steps and drop it). fp16/bf16 is computed in fp32.
            timestep: The current timestep: a Python int or a 0-d / 1-element tensor, normally the ``t`` of
                ``for t in scheduler.timesteps``.
            sample: x_t, shape (B, C, H, W).
            generator: Random source for stochastic steps (DDPM; DDIM with ``eta > 0``), drawn exactly as diffusers
                does so seeded runs match. PNDM ignores it.
            variance_noise: The step's noise z itself, shape (B, C, H, W), instead of drawing it (with
                ``generator``, not both). Deterministic steps ignore it.
            return_dict: Return a :class:`SchedulerOutput` (default) or the tuple
                ``(prev_sample, pred_original_sample)``.

        Returns:
            ``prev_sample`` (the next x, shape (B, C, H, W)) and ``pred_original_sample`` (the x_0 estimate), both in
            ``sample``'s dtype.

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called (and the scheduler needs it), or the schedule is
                already finished.
            ValueError: ``timestep`` is not the next timestep of the schedule (or, for the first step, not in it),
                ``model_output`` has the wrong shape, or both ``generator`` and ``variance_noise`` are given.
        """
        return self._advance(model_output, timestep, sample, generator, variance_noise, return_dict, None)

    def _advance(
        self,
        model_output: torch.Tensor,
        timestep: float | torch.Tensor,
        sample: torch.Tensor,
        generator: Generators,
        variance_noise: torch.Tensor | None,
        return_dict: bool,
        options: Any,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """The body of every ``step()``; ``options``: the scheduler's own per-call options (``StepInput.options``)."""
        if generator is not None and variance_noise is not None:
            raise ValueError("pass either generator or variance_noise to step(), not both")
        i, t = self._begin_step(timestep)
        prediction, variance = self._split_model_output(model_output, sample)
        compute = torch.float64 if sample.dtype == torch.float64 else torch.float32
        step = StepInput(
            i=i,
            t=t,
            model_output=prediction.to(compute),
            sample=sample.to(compute),
            variance=None if variance is None else variance.to(compute),
            sqrt_alpha_bar=self._sqrt_alpha_bar[i],
            sqrt_one_minus_alpha_bar=self._sqrt_one_minus_alpha_bar[i],
            prediction_type=self.config.prediction_type,
            generator=generator,
            noise_dtype=prediction.dtype,  # diffusers' rule: noise shaped, placed and typed like the model output
            variance_noise=variance_noise,
            options=options,
        )
        prev_sample, x0 = self._step(step)
        self._step_index = i + 1
        prev_sample, x0 = prev_sample.to(sample.dtype), x0.to(sample.dtype)
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=x0) if return_dict else (prev_sample, x0)

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        """The algorithm: one update from ``step.sample`` = x_t. Every scheduler writes this method.

        Returns:
            ``(prev_sample, pred_original_sample)`` in the compute dtype, shape (B, C, H, W) each.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement _step")

    def _start_at(self, i: int) -> None:
        """Called when a loop starts at position ``i`` other than the expected one; refuse with a ``ValueError``
        where the algorithm cannot start there (PNDM inside a Runge-Kutta step), or reset multistep state."""

    def _require_schedule(self) -> list[int]:
        """The schedule of model-call timesteps; the T training timesteps for a scheduler that allows stepping
        without :meth:`set_timesteps` (made on first use, on the host)."""
        if self._schedule is None:
            if not self._steps_without_set_timesteps:
                raise RuntimeError(
                    f"{type(self).__name__}.step() was called before set_timesteps(); call "
                    "scheduler.set_timesteps(num_inference_steps) first, then loop over scheduler.timesteps"
                )
            t = self.config.num_train_timesteps
            self.set_timesteps(timesteps=range(t - 1, -1, -1), device=self.timesteps.device)
            self.num_inference_steps = None
            self._implicit_schedule = True
        assert self._schedule is not None
        return self._schedule

    def _begin_step(self, timestep: float | torch.Tensor) -> tuple[int, int]:
        """Find this step's position in the schedule; return (step index, timestep), reading no device tensor.

        In order, the position is the step counter (the timestep is only checked). Where the loop may jump (its
        first step, or any step over the implicit training schedule), ``timestep`` is looked up: a view of
        ``self.timesteps`` by its storage offset, a value in a table; a device tensor that is neither is trusted.
        """
        schedule = self._require_schedule()
        i, n = self._step_index, len(schedule)
        free = self._implicit_schedule or i == self._begin_index
        if free:
            position = self._position_of(timestep, i)
            if position is not None and position != i:
                self._start_at(position)
                i = position
            elif position is None and self._join_schedule_at(timestep):
                schedule = self._require_schedule()
                i, n = 0, len(schedule)
        if i >= n:
            raise RuntimeError(
                f"the schedule of {n} timesteps is finished; call set_timesteps() again to start a new sampling loop"
            )
        got = self._timestep_value(timestep)
        expected = schedule[i]
        if got is not None and got != expected:
            where = "is not the next one" if got in self._positions else "is not in the schedule"
            raise ValueError(
                f"step() got timestep {got}, which {where}: the schedule set by set_timesteps("
                f"{self.num_inference_steps}) expects timestep {expected} at step {i} of {n}. Call step() once per "
                "entry of scheduler.timesteps, in order; call set_timesteps() again to restart"
            )
        return i, expected

    def _join_schedule_at(self, timestep: float | torch.Tensor) -> bool:
        """A loop's first step at a training timestep t that is not in the schedule (SDEdit's start, diffusers'
        ``step()`` at any t): the schedule becomes t followed by the scheduled timesteps below it, so the loop
        continues on the schedule. Returns False (the caller refuses the step) when t is unknown without a sync,
        outside [0, T), or the scheduler cannot start there."""
        got = self._timestep_value(timestep)
        if got is None or isinstance(got, float) or self._implicit_schedule:
            return False
        if not 0 <= got < self.config.num_train_timesteps:
            return False
        spaced, device = self._spaced, self.timesteps.device
        try:
            self.set_timesteps(device=device, timesteps=[got, *(s for s in spaced if s < got)])
        except ValueError:  # e.g. too few timesteps left for PNDM's warm-up: keep the schedule, refuse the step
            self.set_timesteps(device=device, timesteps=spaced)
            return False
        return True

    def _position_of(self, timestep: float | torch.Tensor, start: int) -> int | None:
        """The position of ``timestep`` in the schedule: ``start`` when it is the timestep there, else its first
        position; None when not in the schedule, or when it is a device tensor whose value would need a sync."""
        assert self._schedule is not None
        if isinstance(timestep, torch.Tensor):
            index = self._index_in_timesteps(timestep)
            if index is not None:
                return index
        got = self._timestep_value(timestep)
        if got is None:
            return None
        if start < len(self._schedule) and self._schedule[start] == got:
            return start
        return self._positions.get(got)

    def _timestep_value(self, timestep: float | torch.Tensor) -> int | float | None:
        """The value of ``timestep`` when it can be known without waiting for a device, else None (trusted)."""
        if isinstance(timestep, torch.Tensor):
            if timestep.dim() > 1 or timestep.numel() == 0:
                raise ValueError(
                    f"timestep must be an int or a tensor with one value, got shape {tuple(timestep.shape)}"
                )
            index = self._index_in_timesteps(timestep)
            if index is not None:  # an element (or a broadcast view of one) of self.timesteps
                assert self._schedule is not None
                return self._schedule[index]
            if timestep.device.type != "cpu":
                return None  # reading a device tensor would synchronise; the step index decides
            values = {float(v) for v in timestep.reshape(-1).tolist()}
            if len(values) != 1:
                raise ValueError(f"step() takes one timestep for the whole batch, got the values {sorted(values)}")
            value = values.pop()
        elif isinstance(timestep, bool):
            raise TypeError("timestep must be an int or a tensor, not a bool")
        elif isinstance(timestep, numbers.Integral):
            return int(timestep)
        elif isinstance(timestep, numbers.Real):
            value = float(timestep)
        else:
            raise TypeError(f"timestep must be an int or a tensor, got {type(timestep).__name__}")
        if self._fractional_timesteps and not value.is_integer():
            return value
        if not value.is_integer():
            raise ValueError(f"timestep must be a whole number, got {value}")
        return int(value)

    def _index_in_timesteps(self, timestep: torch.Tensor) -> int | None:
        """The position in ``self.timesteps`` that ``timestep`` views, from tensor metadata only (no value read)."""
        ts = self.timesteps
        if timestep.device != ts.device or timestep.dtype != ts.dtype or ts.dim() != 1 or ts.stride(0) != 1:
            return None
        if timestep.untyped_storage().data_ptr() != ts.untyped_storage().data_ptr():
            return None
        if timestep.numel() > 1 and any(s != 0 for s in timestep.stride()):
            return None
        index = int(timestep.storage_offset() - ts.storage_offset())
        return index if 0 <= index < ts.shape[0] else None

    @staticmethod
    def _split_model_output(
        model_output: torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split a learned-variance output (B, 2C, H, W) into its prediction and variance halves, (B, C, H, W) each."""
        if model_output.shape == sample.shape:
            return model_output, None
        if (
            sample.dim() >= 2
            and model_output.dim() == sample.dim()
            and model_output.shape[0] == sample.shape[0]
            and model_output.shape[1] == 2 * sample.shape[1]
            and model_output.shape[2:] == sample.shape[2:]
        ):
            channels = sample.shape[1]
            return model_output[:, :channels], model_output[:, channels:]
        raise ValueError(
            f"model_output has shape {tuple(model_output.shape)} but sample has shape {tuple(sample.shape)}; the model "
            "must output the sample's shape, or twice its channels when it also predicts the variance"
        )

    # ------------------------------------------------------------------------------------------- forward process
    def _tables(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(ᾱ_t) and sqrt(1 - ᾱ_t) of the whole schedule on ``device``, made once per (device, dtype).

        float32 tables are computed from the float32 ᾱ exactly as diffusers does, so fp32 ``add_noise`` agrees with
        diffusers' to the last bit; float64 tables come from the float64 ᾱ.
        """
        key = (device, dtype)
        tables = self._device_tables.get(key)
        if tables is None:
            alpha_bar = self._alphas_cumprod64 if dtype == torch.float64 else self.alphas_cumprod
            tables = (alpha_bar.sqrt().to(device), (1 - alpha_bar).sqrt().to(device))
            self._device_tables[key] = tables
        return tables

    def _gather(
        self, timesteps: int | torch.Tensor, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        if isinstance(timesteps, torch.Tensor):
            if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dtype == torch.bool:
                raise TypeError(f"timesteps must be an integer tensor, got dtype {timesteps.dtype}")
            t = timesteps.to(device=like.device, dtype=torch.long)
        elif isinstance(timesteps, numbers.Integral) and not isinstance(timesteps, bool):
            t = torch.tensor(int(timesteps), device=like.device)
        else:
            raise TypeError(
                f"timesteps must be an integer tensor of shape (B,) or an int, got {type(timesteps).__name__}"
            )
        compute = torch.float64 if like.dtype == torch.float64 else torch.float32
        sqrt_ab, sqrt_1m_ab = self._tables(like.device, compute)
        return extract(sqrt_ab, t, like.shape), extract(sqrt_1m_ab, t, like.shape), compute

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: int | torch.Tensor
    ) -> torch.Tensor:
        """Sample q(x_t | x_0): x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (Ho et al. 2020, Eq. (4)).

        Args:
            original_samples: x_0, shape (B, C, H, W).
            noise: ε, same shape.
            timesteps: Integer timesteps, shape (B,) (or one int for all), on any device.

        Returns:
            x_t in ``original_samples``' dtype (computed in float32, or float64 for float64 input).
        """
        a, b, compute = self._gather(timesteps, original_samples)
        return (a * original_samples.to(compute) + b * noise.to(compute)).to(original_samples.dtype)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: int | torch.Tensor) -> torch.Tensor:
        """The v-prediction target v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0 (Salimans & Ho 2022, Sec. 4).

        Args:
            sample: x_0, shape (B, C, H, W).
            noise: ε, same shape.
            timesteps: Integer timesteps, shape (B,) (or one int), on any device.
        """
        a, b, compute = self._gather(timesteps, sample)
        return (a * noise.to(compute) - b * sample.to(compute)).to(sample.dtype)

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        """Return ``sample`` unchanged: x_t goes to the model as is (kept so that loops stay interchangeable)."""
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
