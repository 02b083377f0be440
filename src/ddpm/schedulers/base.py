"""What the DDPM, DDIM and PNDM schedulers share, written once.

* :class:`SchedulerConfig` and :class:`ClippingSchedulerConfig`: frozen configs with diffusers' key names. One
  ``scheduler_config.json`` feeds every scheduler: keys a scheduler does not use are ignored quietly, and keys that
  another scheduler of the family uses are carried along, so ``DDPM -> PNDM -> DDPM`` keeps ``variance_type``.
* :func:`spaced_timesteps`: the ``leading`` / ``linspace`` / ``trailing`` spacings of Lin et al. 2024, Table 2.
* x_0 / ε / v conversions (:func:`predict_x0`, :func:`predict_eps`), ``clip_sample`` and dynamic thresholding.
* :class:`Scheduler`: loading and saving, ``set_timesteps``, the single ``step()`` entry point with its step-index
  bookkeeping and checks, ``add_noise`` and ``get_velocity``.

Notation (Ho et al. 2020): ᾱ_t = ``alpha_bar``, x_t = ``sample``, x_0 = ``x0``, ε = ``eps``; v = sqrt(ᾱ_t) ε -
sqrt(1 - ᾱ_t) x_0 is the "velocity" of Salimans & Ho 2022 ("Progressive Distillation"), Sec. 4.

Precision and host-device synchronisation: β_t and ᾱ_t are computed in float64 and rounded once to float32.
``set_timesteps`` turns them into the per-step scalar coefficients of the chosen schedule, computed in float32 with
the same operations diffusers applies to its float32 schedule (so, for the same ᾱ, results agree to the last bit)
and kept on the host as Python floats. ``step()`` therefore never reads a tensor value and touches no schedule
tensor: the step index is a Python int, the timesteps a Python list, and scalars reach the kernels as arguments.
The loop can run ahead of the GPU and be captured in a CUDA graph. ``add_noise`` and ``get_velocity`` gather from
copies of sqrt(ᾱ_t) and sqrt(1 - ᾱ_t) that are moved to each device once and cached.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args

import numpy as np
import torch

from ..config import MAX_TRAIN_TIMESTEPS, ConfigBase, check, check_keys, config_to_dict, read_json, show_value
from ..errors import ConfigError
from ..hub import HubOptions, require_file
from ..io import Writer, atomic_write_files, check_save_folder, remove_stale_temporaries
from ..outputs import SchedulerOutput
from ..utils import Generators, extract, randn_tensor
from .schedules import BetaSchedule, alphas_cumprod_from_betas, make_betas

__all__ = [
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "ClippingSchedulerConfig",
    "PredictionType",
    "Scheduler",
    "SchedulerConfig",
    "TimestepSpacing",
    "clip_or_threshold",
    "dynamic_threshold",
    "eps_from_x0",
    "predict_eps",
    "predict_x0",
    "scheduler_config_keys",
    "spaced_timesteps",
]

PredictionType = Literal["epsilon", "sample", "v_prediction"]
TimestepSpacing = Literal["leading", "linspace", "trailing"]
#: Accepted values of ``prediction_type``: what the model outputs (ε, x_0 or v).
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)
#: Accepted values of ``timestep_spacing`` (Lin et al. 2024, Table 2).
TIMESTEP_SPACINGS: tuple[str, ...] = get_args(TimestepSpacing)

S = TypeVar("S", bound="Scheduler")

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


# ---------------------------------------------------------------------------------------------------------- configs

_CONFIG_CLASSES: list[type[SchedulerConfig]] = []


def scheduler_config_keys() -> frozenset[str]:
    """Every config key that some scheduler of this package uses (the keys a scheduler carries along)."""
    return frozenset(f.name for cls in _CONFIG_CLASSES for f in dataclasses.fields(cls))


@dataclasses.dataclass(frozen=True)
class SchedulerConfig(ConfigBase):
    """The keys every scheduler reads: the training noise schedule, the model's parameterisation and the spacing.

    Attributes:
        num_train_timesteps: T, the length of the forward chain the model was trained on.
        beta_start: β of the first step (``linear``, ``scaled_linear``, ``sigmoid``).
        beta_end: β of the last step (same schedules).
        beta_schedule: How β_t runs from ``beta_start`` to ``beta_end``; see :mod:`ddpm.schedulers.schedules`.
        trained_betas: Explicit β_t (T values), overriding ``beta_schedule``.
        prediction_type: What the model predicts: the noise ε (``epsilon``), x_0 (``sample``) or
            v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0 (``v_prediction``).
        timestep_spacing: How ``set_timesteps(n)`` picks n of the T timesteps (see :func:`spaced_timesteps`).
        steps_offset: Added to every timestep with ``leading`` spacing (Stable Diffusion uses 1).
        rescale_betas_zero_snr: Rescale β so that the last timestep is pure noise (Lin et al. 2024).
    """

    config_name: ClassVar[str] = "scheduler_config.json"

    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: BetaSchedule = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: PredictionType = "epsilon"
    timestep_spacing: TimestepSpacing = "leading"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CONFIG_CLASSES.append(cls)

    def validate(self) -> None:
        check(self.num_train_timesteps >= 1, self, "num_train_timesteps", "it must be at least 1")
        check(
            self.num_train_timesteps <= MAX_TRAIN_TIMESTEPS,
            self,
            "num_train_timesteps",
            f"it must be at most {MAX_TRAIN_TIMESTEPS} (real models use 1000 to 4000)",
        )
        check(
            self.num_train_timesteps >= 2 or not self.rescale_betas_zero_snr,
            self,
            "num_train_timesteps",
            "rescale_betas_zero_snr=True needs at least 2 timesteps (it pins the first and the last one)",
        )
        if self.trained_betas is not None:
            check(
                len(self.trained_betas) == self.num_train_timesteps,
                self,
                "trained_betas",
                f"it must hold num_train_timesteps={self.num_train_timesteps} values, not {len(self.trained_betas)}",
            )
            in_range = all(0.0 < b <= 1.0 for b in self.trained_betas)
            check(in_range, self, "trained_betas", "every beta must be in (0, 1]")
        elif self.beta_schedule != "squaredcos_cap_v2":
            for key in ("beta_start", "beta_end"):
                check(0.0 < getattr(self, key) < 1.0, self, key, "a beta must be in (0, 1)")
        check(self.steps_offset >= 0, self, "steps_offset", "it must be 0 or more")

    @classmethod
    def from_dict(cls, config: Any, *, source: str | os.PathLike[str] | None = None, **overrides: Any) -> Any:
        """Build the config from any scheduler's config or a plain mapping (see :meth:`ConfigBase.from_dict`).

        Two pieces of bookkeeping make one config travel between schedulers the way it does in diffusers:

        * keys that another scheduler of this package uses are kept aside and written back by :meth:`to_dict`, so
          ``DDPM -> PNDM -> DDPM`` keeps ``variance_type`` (other unknown keys, e.g. the stale ``timestep_values`` of
          old Hub files, are dropped quietly);
        * keys that were filled from defaults are listed under ``_use_default_values`` (diffusers' name) and are
          treated as absent by the next scheduler, which then applies its own default: DDIM defaults to
          ``set_alpha_to_one=True``, PNDM to False.
        """
        data = {**config_to_dict(config), **overrides}
        check_keys(data, source)
        defaulted = data.pop("_use_default_values", None) or ()
        if not (isinstance(defaulted, (list, tuple)) and all(isinstance(k, str) for k in defaulted)):
            raise ConfigError(
                f"{source or 'the config'}: _use_default_values has value {show_value(defaulted)}; expected a list of "
                "config key names"
            )
        for name in set(defaulted) - set(overrides):
            data.pop(name, None)
        for key, value in data.items():
            if isinstance(value, (np.ndarray, torch.Tensor)):
                data[key] = value.tolist()  # e.g. trained_betas given as an array, as diffusers allows
        obj = super().from_dict(data, source=source)
        own = set(cls._field_names())
        carried = {k: data[k] for k in sorted(data) if k in scheduler_config_keys() and k not in own}
        object.__setattr__(obj, "_carried", carried)
        object.__setattr__(obj, "_defaulted", tuple(sorted(own - set(data))))
        return obj

    def replace(self, **changes: Any) -> Any:
        """Return a copy with some keys changed (validated like any new config)."""
        return type(self).from_dict(self.to_dict(), source=self._source(), **changes)

    def to_dict(self) -> dict[str, Any]:
        """This scheduler's keys, the carried keys of the other schedulers, and ``_use_default_values``."""
        out = {**super().to_dict(), **self.__dict__.get("_carried", {})}
        defaulted = self.__dict__.get("_defaulted", ())
        if defaulted:
            out["_use_default_values"] = list(defaulted)
        return out

    def to_json_string(self) -> str:
        """The JSON file content: every key written out, without the in-memory ``_use_default_values`` list."""
        data = self.to_dict()
        data.pop("_use_default_values", None)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


@dataclasses.dataclass(frozen=True)
class ClippingSchedulerConfig(SchedulerConfig):
    """Keys of the schedulers that form an explicit x_0 estimate each step and may clip it (DDPM, DDIM).

    Attributes:
        clip_sample: Clamp the predicted x_0 to [-clip_sample_range, clip_sample_range].
        clip_sample_range: The clamp bound.
        thresholding: Use dynamic thresholding (Saharia et al. 2022) instead of the fixed clamp.
        dynamic_thresholding_ratio: The percentile of |x_0| used as the threshold s.
        sample_max_value: The largest allowed s.
    """

    clip_sample: bool = True
    clip_sample_range: float = 1.0
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0

    def validate(self) -> None:
        super().validate()
        check(0.0 < self.dynamic_thresholding_ratio <= 1.0, self, "dynamic_thresholding_ratio", "it must be in (0, 1]")
        for key in ("clip_sample_range", "sample_max_value"):  # clamp bounds: positive, representable in float32
            check(getattr(self, key) > 0, self, key, "it must be > 0")
            check(getattr(self, key) <= _FLOAT32_MAX, self, key, f"it must be at most {_FLOAT32_MAX:.4g} (float32)")


# ------------------------------------------------------------------------------------------------ timestep spacing


def spaced_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int = 0
) -> list[int]:
    """Pick ``num_inference_steps`` of the training timesteps 0..T-1, largest first.

    The three spacings of Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Table 2,
    with T = ``num_train_timesteps`` and n = ``num_inference_steps``:

    * ``leading``: k · ⌊T/n⌋ + steps_offset for k = n-1, ..., 0 (the DDIM paper's choice; never visits T-1);
    * ``linspace``: round(k · (T-1)/(n-1)), evenly spread over [0, T-1] including both ends;
    * ``trailing``: round(T - k · T/n) - 1 for k = 0, ..., n-1 (starts at T-1).

    The values equal diffusers' for every n, except that for ``trailing`` diffusers' floating-point ``arange``
    returns n+1 values ending in -1 for 62 values of n ≤ 1000 (61, 103, ...); the spurious entry is dropped here.

    Raises:
        ValueError: ``spacing`` is unknown, or ``steps_offset`` pushes a ``leading`` timestep past T-1.
    """
    t, n = num_train_timesteps, num_inference_steps
    if spacing == "leading":
        ratio = t // n
        steps = [k * ratio + steps_offset for k in range(n - 1, -1, -1)]
        if steps[0] >= t:
            raise ValueError(
                f"steps_offset={steps_offset} makes the first of {n} leading timesteps {steps[0]}, but timesteps "
                f"must be below num_train_timesteps={t}; lower steps_offset or num_inference_steps"
            )
        return steps
    if spacing == "linspace":
        return np.linspace(0, t - 1, n).round()[::-1].astype(np.int64).tolist()
    if spacing == "trailing":
        return (np.round(np.arange(t, 0, -t / n))[:n].astype(np.int64) - 1).tolist()
    raise ValueError(f"timestep_spacing {spacing!r} is not supported; use one of {', '.join(TIMESTEP_SPACINGS)}")


# -------------------------------------------------------------------------------------- x_0 / ε / v parameterisations


def predict_x0(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    sqrt_alpha_bar: float,
    sqrt_one_minus_alpha_bar: float,
    prediction_type: str,
) -> torch.Tensor:
    """The model's estimate of x_0 from x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (Ho et al. 2020, Eq. (4) and (15)).

    * ε-prediction: x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε_θ) / sqrt(ᾱ_t), Eq. (15);
    * x_0-prediction: the output itself;
    * v-prediction: x̂_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v_θ (Salimans & Ho 2022, Sec. 4).
    """
    if prediction_type == "epsilon":
        return (sample - sqrt_one_minus_alpha_bar * model_output) / sqrt_alpha_bar
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return sqrt_alpha_bar * sample - sqrt_one_minus_alpha_bar * model_output
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")


def eps_from_x0(
    x0: torch.Tensor, sample: torch.Tensor, sqrt_alpha_bar: float, sqrt_one_minus_alpha_bar: float
) -> torch.Tensor:
    """ε = (x_t - sqrt(ᾱ_t) x_0) / sqrt(1 - ᾱ_t), Eq. (4) of Ho et al. 2020 solved for ε."""
    return (sample - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar


def predict_eps(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    sqrt_alpha_bar: float,
    sqrt_one_minus_alpha_bar: float,
    prediction_type: str,
) -> torch.Tensor:
    """The model's estimate of the noise ε in x_t, whatever it was trained to predict.

    For v-prediction, ε̂ = sqrt(ᾱ_t) v_θ + sqrt(1 - ᾱ_t) x_t (Salimans & Ho 2022, Sec. 4).
    """
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return eps_from_x0(model_output, sample, sqrt_alpha_bar, sqrt_one_minus_alpha_bar)
    if prediction_type == "v_prediction":
        return sqrt_alpha_bar * model_output + sqrt_one_minus_alpha_bar * sample
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding of Saharia et al. 2022 ("Imagen"), Sec. 2.3.

    Per sample, s is the ``ratio`` percentile of |x̂_0|, clamped to [1, max_value]; x̂_0 is clamped to [-s, s] and
    divided by s. With s = 1 this is the ordinary clamp to [-1, 1].

    Args:
        x0: The predicted x_0, shape (B, C, H, W), float32 or float64.
    """
    flat = x0.reshape(x0.shape[0], -1)  # (B, C*H*W)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape)


def clip_or_threshold(x0: torch.Tensor, config: ClippingSchedulerConfig) -> torch.Tensor:
    """Apply dynamic thresholding when ``thresholding`` is on, else the ``clip_sample`` clamp, else nothing."""
    if config.thresholding:
        return dynamic_threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    if config.clip_sample:
        return x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    return x0


# ------------------------------------------------------------------------------------------------------ scheduler

#: ``_step``'s way to draw the step noise: a zero-argument callable returning N(0, I) noise shaped like x_t.
NoiseSource = Callable[[], torch.Tensor]


class Scheduler:
    """Base of :class:`DDPMScheduler`, :class:`DDIMScheduler` and :class:`PNDMScheduler`.

    Usage is the same for all three::

        scheduler = DDIMScheduler.from_pretrained("google/ddpm-cifar10-32")   # any scheduler's config works
        scheduler.set_timesteps(50)
        x = torch.randn(1, 3, 32, 32) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample

    Schedulers hold no weights: a scheduler is its config plus the position in the current schedule.

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
    order: ClassVar[int] = 1
    init_noise_sigma: ClassVar[float] = 1.0

    def __init__(self, *, config: Any = None, **kwargs: Any) -> None:
        """Build a scheduler from a config and/or config keywords.

        Args:
            config: A config of this scheduler, another scheduler's config, a diffusers config (``FrozenDict``) or a
                plain dict. Keys this scheduler does not use are ignored.
            **kwargs: Config keys (diffusers' constructor keywords), overriding those in ``config``.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid; the message names the key, the value and what is allowed.
        """
        self.config: Any = self._build_config(config, kwargs)
        cfg = self.config
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
        # (device, dtype) -> (sqrt(ᾱ_t), sqrt(1 - ᾱ_t)) for add_noise / get_velocity.
        self._device_tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(cfg.num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._schedule: list[int] | None = None
        self._step_index = 0

    @classmethod
    def _build_config(
        cls, config: Any, overrides: dict[str, Any], *, source: str | os.PathLike[str] | None = None
    ) -> Any:
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
        path = require_file(
            repo_id_or_path, cls.config_class.config_name, subfolder=subfolder, options=options, what="scheduler config"
        )
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
    def _final_alpha_bar(self) -> float:
        """ᾱ of the step after the last one (the clean sample): 1 here; DDIM and PNDM honour ``set_alpha_to_one``."""
        return 1.0

    def _alpha_bar_at(self, timesteps: list[int]) -> torch.Tensor:
        """ᾱ at each of ``timesteps`` as a float32 CPU tensor; -1 (past the end of the schedule) gives the final ᾱ.

        The per-step coefficients are computed from it with torch's float32 CPU kernels, the ones diffusers applies
        to its 0-d schedule tensors, so that each coefficient rounds identically.
        """
        index = torch.tensor(timesteps, dtype=torch.int64)
        alpha_bar = self.alphas_cumprod[index.clamp(min=0)]
        return torch.where(index >= 0, alpha_bar, torch.tensor(self._final_alpha_bar(), dtype=torch.float32))

    def _prev_timesteps(self) -> list[int]:
        """For each step, the next timestep of the materialised schedule (never recomputed by a stride).

        -1 after the last step, where :meth:`_alpha_bar_at` gives the final ᾱ.
        """
        assert self._schedule is not None
        return self._schedule[1:] + [-1]

    def _prepare(self) -> None:
        """Compute the per-step scalar coefficients of the new schedule (called by :meth:`set_timesteps`)."""

    def _predict_x0(self, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """:func:`predict_x0` at the timestep of step ``i``."""
        sqrt_ab, sqrt_1m_ab = self._sqrt_alpha_bar[i], self._sqrt_one_minus_alpha_bar[i]
        return predict_x0(model_output, sample, sqrt_ab, sqrt_1m_ab, self.config.prediction_type)

    def _predict_eps(self, i: int, model_output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """:func:`predict_eps` at the timestep of step ``i``."""
        sqrt_ab, sqrt_1m_ab = self._sqrt_alpha_bar[i], self._sqrt_one_minus_alpha_bar[i]
        return predict_eps(model_output, sample, sqrt_ab, sqrt_1m_ab, self.config.prediction_type)

    def _eps_from_x0(self, i: int, x0: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        """:func:`eps_from_x0` at the timestep of step ``i``."""
        return eps_from_x0(x0, sample, self._sqrt_alpha_bar[i], self._sqrt_one_minus_alpha_bar[i])

    def _min_inference_steps(self) -> int:
        return 1

    def _layout(self, spaced: list[int]) -> list[int]:
        """Turn the spaced timesteps into the order ``step()`` visits them (PNDM repeats some)."""
        return spaced

    def _reset_state(self) -> None:
        """Forget the multistep history (PNDM); called by :meth:`set_timesteps`."""

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose the timesteps of the sampling loop and reset the scheduler to its first step.

        Args:
            num_inference_steps: n, the number of denoising steps, 1 ≤ n ≤ ``num_train_timesteps``.
            device: Where ``self.timesteps`` lives (default CPU). ``step()`` works for samples on any device.

        Raises:
            TypeError: ``num_inference_steps`` is not an integer.
            ValueError: It is below the scheduler's minimum (1; 4 for PNDM with its Runge-Kutta warm-up) or above
                ``num_train_timesteps``, or ``steps_offset`` is too large for it.
        """
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, numbers.Integral):
            raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
        n, t = int(num_inference_steps), self.config.num_train_timesteps
        lowest = self._min_inference_steps()
        if n < lowest:
            why = "" if lowest == 1 else f" ({self._min_steps_reason()})"
            name = type(self).__name__
            raise ValueError(f"num_inference_steps={n} is too small: {name} needs at least {lowest}{why}")
        if n > t:
            raise ValueError(
                f"num_inference_steps={n} is larger than num_train_timesteps={t}: a discrete scheduler can only "
                f"visit the {t} timesteps the model was trained on; use at most {t}"
            )
        schedule = self._layout(spaced_timesteps(t, n, self.config.timestep_spacing, self.config.steps_offset))
        self._schedule = schedule
        self.num_inference_steps = n
        self.timesteps = torch.tensor(schedule, dtype=torch.int64, device=device)
        self._step_index = 0
        # sqrt(ᾱ) and sqrt(1 - ᾱ) where each step evaluates the model, for the x_0 / ε / v conversions
        alpha_bar = self._alpha_bar_at(schedule)
        self._sqrt_alpha_bar: list[float] = alpha_bar.sqrt().tolist()
        self._sqrt_one_minus_alpha_bar: list[float] = (1 - alpha_bar).sqrt().tolist()
        self._reset_state()
        self._prepare()

    def _min_steps_reason(self) -> str:
        return ""

    @property
    def step_index(self) -> int | None:
        """How many steps of the current schedule have been taken, or None before :meth:`set_timesteps`."""
        return None if self._schedule is None else self._step_index

    # ------------------------------------------------------------------------------------------------------ step
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        *,
        generator: Generators = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """Go from x_t to the next sample of the schedule.

        The same signature for all three schedulers. Call it once per entry of ``timesteps``, in order.

        Args:
            model_output: The model's output at (x_t, t), shape (B, C, H, W), or (B, 2C, H, W) for a model that also
                predicts its variance (DDPM uses the second half when ``variance_type`` is ``learned`` or
                ``learned_range``; DDIM and PNDM take deterministic steps and drop it). fp16/bf16 is computed in fp32.
            timestep: The current timestep: a Python int or a 0-d / 1-element tensor, normally the ``t`` of
                ``for t in scheduler.timesteps``.
            sample: x_t, shape (B, C, H, W).
            generator: Random source for stochastic steps (DDPM; DDIM with ``eta > 0``), drawn exactly as diffusers
                does so seeded runs match. PNDM ignores it.
            return_dict: Return a :class:`SchedulerOutput` (default) or the tuple
                ``(prev_sample, pred_original_sample)``.

        Returns:
            ``prev_sample`` (the next x, shape (B, C, H, W)) and ``pred_original_sample`` (the x_0 estimate), both in
            ``sample``'s dtype.

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called, or the schedule is already finished.
            ValueError: ``timestep`` is not the next timestep of the schedule, or ``model_output`` has the wrong shape.
        """
        i = self._begin_step(timestep)
        eps_or_x0_or_v, predicted_variance = self._split_model_output(model_output, sample)
        compute = torch.float64 if sample.dtype == torch.float64 else torch.float32

        def draw_noise() -> torch.Tensor:
            # diffusers' rule: shape, device and dtype of the (split) model output.
            noise = randn_tensor(
                eps_or_x0_or_v.shape, generator=generator, device=eps_or_x0_or_v.device, dtype=eps_or_x0_or_v.dtype
            )
            return noise.to(compute)

        prev_sample, x0 = self._step(
            i,
            eps_or_x0_or_v.to(compute),
            sample.to(compute),
            None if predicted_variance is None else predicted_variance.to(compute),
            draw_noise,
        )
        self._step_index = i + 1
        out = SchedulerOutput(prev_sample=prev_sample.to(sample.dtype), pred_original_sample=x0.to(sample.dtype))
        return out if return_dict else out.to_tuple()

    def _step(
        self,
        i: int,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        predicted_variance: torch.Tensor | None,
        draw_noise: NoiseSource,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The algorithm of one step ``i`` (float32/64 inputs); returns (prev_sample, pred_original_sample)."""
        raise NotImplementedError

    def _begin_step(self, timestep: int | torch.Tensor) -> int:
        """Check that ``timestep`` is the next one of the schedule and return the step index, reading no tensor."""
        if self._schedule is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() was called before set_timesteps(); call "
                "scheduler.set_timesteps(num_inference_steps) first, then loop over scheduler.timesteps"
            )
        i, n = self._step_index, len(self._schedule)
        if i >= n:
            raise RuntimeError(
                f"the schedule of {n} timesteps is finished; call set_timesteps() again to start a new sampling loop"
            )
        got = self._timestep_value(timestep)
        expected = self._schedule[i]
        if got is not None and got != expected:
            where = "is not the next one" if got in self._schedule else "is not in the schedule"
            raise ValueError(
                f"step() got timestep {got}, which {where}: the schedule set by set_timesteps("
                f"{self.num_inference_steps}) expects timestep {expected} at step {i} of {n}. Call step() once per "
                "entry of scheduler.timesteps, in order; call set_timesteps() again to restart"
            )
        return i

    def _timestep_value(self, timestep: int | torch.Tensor) -> int | None:
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
        index = timestep.storage_offset() - ts.storage_offset()
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
