"""The scheduler configs: one ``scheduler_config.json`` that every scheduler of the package reads.

* :class:`SchedulerConfig`: the keys every scheduler reads (the training noise schedule, the model's
  parameterisation, the timestep spacing).
* :class:`ClippingSchedulerConfig`: adds the x_0 clipping / thresholding keys of DDPM and DDIM.
* Each scheduler's own config (``DDPMSchedulerConfig``, ...) subclasses one of them, in the scheduler's file.

Keys a scheduler does not use are ignored quietly, and keys that another scheduler of the package uses are carried
along, so ``DDPM -> PNDM -> DDPM`` keeps ``variance_type`` (diffusers does the same). Keys filled from defaults are
listed under ``_use_default_values`` and treated as absent by the next scheduler, which applies its own default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, TypeVar, get_args

import numpy as np
import torch

from ..config import MAX_TRAIN_TIMESTEPS, SIDE_STATE, ConfigBase, check, check_keys, config_to_dict, show_value
from ..errors import ConfigError
from .schedules import BetaSchedule

__all__ = [
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "ClippingSchedulerConfig",
    "PredictionType",
    "SchedulerConfig",
    "TimestepSpacing",
    "scheduler_config_keys",
]

PredictionType = Literal["epsilon", "sample", "v_prediction"]
TimestepSpacing = Literal["leading", "linspace", "trailing"]
#: Accepted values of ``prediction_type``: what the model outputs (ε, x_0 or v).
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)
#: Accepted values of ``timestep_spacing`` (Lin et al. 2024, Table 2).
TIMESTEP_SPACINGS: tuple[str, ...] = get_args(TimestepSpacing)

SC = TypeVar("SC", bound="SchedulerConfig")

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)

#: Every scheduler config class defined so far (filled by ``SchedulerConfig.__init_subclass__``).
_CONFIG_CLASSES: list[type[SchedulerConfig]] = []


def scheduler_config_keys() -> frozenset[str]:
    """Every config key that some scheduler of this package uses (the keys a scheduler carries along)."""
    return frozenset(name for cls in _CONFIG_CLASSES for name in cls._field_names())


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
        timestep_spacing: How ``set_timesteps(n)`` picks n of the T timesteps (see
            :func:`~ddpm.schedulers.math.spaced_timesteps`).
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

    #: This scheduler's keys that were filled from its defaults, written as ``_use_default_values`` (side state).
    _defaulted: tuple[str, ...] = dataclasses.field(
        default=(), compare=False, repr=False, kw_only=True, metadata=SIDE_STATE
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CONFIG_CLASSES.append(cls)

    # The mapping holds ``_use_default_values`` too while some key took its default (as diffusers' config does):
    # ``dict(scheduler.config)`` has it after construction, not after a save / load round trip.
    def __getitem__(self, key: str) -> Any:
        if key == "_use_default_values" and self._defaulted:
            return list(self._defaulted)
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        yield from super().__iter__()
        if self._defaulted:
            yield "_use_default_values"

    def __len__(self) -> int:
        return super().__len__() + (1 if self._defaulted else 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        # A key changed since it was defaulted (by dataclasses.replace) is a choice now, not a default.
        defaults = {f.name: f.default for f in self._key_fields()}
        chosen = tuple(k for k in self._defaulted if k in defaults and getattr(self, k) == defaults[k])
        if chosen != self._defaulted:
            object.__setattr__(self, "_defaulted", chosen)

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
    def from_dict(cls: type[SC], config: Any, *, source: str | os.PathLike[str] | None = None, **overrides: Any) -> SC:
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
        own = set(cls._field_names())
        carried = {k: data[k] for k in sorted(data) if k in scheduler_config_keys() and k not in own}
        return cls._from_keys(data, source=source, _carried=carried, _defaulted=tuple(sorted(own - set(data))))

    def to_dict(self) -> dict[str, Any]:
        """This scheduler's keys, the carried keys of the other schedulers, and ``_use_default_values``."""
        out = super().to_dict()
        if self._defaulted:
            out["_use_default_values"] = list(self._defaulted)
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
