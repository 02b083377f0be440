"""DDIM inversion: the deterministic DDIM chain run backwards, from an image x_0 up to its noise x_T.

Song et al. 2021 ("Denoising Diffusion Implicit Models"), Sec. 4.3: with η = 0 DDIM is an Euler discretisation of
the ODE of Eq. (14), dx̄ = ε_θ(x̄ / sqrt(σ² + 1), t) dσ with x̄ = x / sqrt(ᾱ) and σ = sqrt((1 - ᾱ) / ᾱ), and the same
ODE can be integrated from x_0 to x_T to encode an image (Sec. 5.4, where the encoding is decoded again with DDIM).

One step goes from the level s of the sample (the previous entry of ``timesteps``; the clean image, ᾱ = 1, before
the first) up to the level t it is called with, Eq. (13) with the roles of the two levels swapped::

    x_t / sqrt(ᾱ_t) = x_s / sqrt(ᾱ_s) + (σ_t - σ_s) ε,     i.e.     x_t = sqrt(ᾱ_t) x̂_0 + sqrt(1 - ᾱ_t) ε

where x̂_0 = (x_s - sqrt(1 - ᾱ_s) ε) / sqrt(ᾱ_s) and ε is the model's output at (x_s, t). The pairs (s, t) are
exactly the pairs (t, s) of :class:`~ddpm.schedulers.DDIMScheduler` with the same config and step count, in the
opposite order, so that DDIM sampling from the result retraces the chain: the round trip is exact up to the
discretisation (the model is evaluated at x_s where the sampling step evaluates it at x_t).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from ..config import check
from .base import Scheduler, StepInput, per_step
from .config import SchedulerConfig
from .math import eps_from_x0, predict_eps, predict_x0

__all__ = ["DDIMInverseScheduler", "DDIMInverseSchedulerConfig"]


@dataclasses.dataclass(frozen=True)
class DDIMInverseSchedulerConfig(SchedulerConfig):
    """Config of :class:`DDIMInverseScheduler` (``scheduler_config.json``, diffusers' key names and defaults).

    Attributes:
        clip_sample: Clamp x̂_0 to [-clip_sample_range, clip_sample_range] in every step (diffusers' default, True).
            Clamping is not part of the ODE: an inversion meant to be undone should turn it off (see the class).
        clip_sample_range: The clamp bound.
        set_alpha_to_one: The chain starts at ᾱ = 1 (the clean image; default), or at ᾱ_0 when False. Use the value
            of the :class:`~ddpm.schedulers.DDIMScheduler` that is to undo the inversion (whose last step ends there).
    """

    _class_name: ClassVar[str] = "DDIMInverseScheduler"

    clip_sample: bool = True
    set_alpha_to_one: bool = True
    clip_sample_range: float = 1.0

    def validate(self) -> None:
        super().validate()
        check(
            0 < self.clip_sample_range <= _FLOAT32_MAX,
            self,
            "clip_sample_range",
            f"it must be > 0 and at most {_FLOAT32_MAX:.4g} (float32)",
        )


_FLOAT32_MAX = float(torch.finfo(torch.float32).max)
_DEFAULTS = DDIMInverseSchedulerConfig  # the constructor's defaults are the config's
#: diffusers' deprecated name of ``set_alpha_to_one`` (its value is taken as ``set_alpha_to_one``, as there).
_DEPRECATED_ALIAS = "set_alpha_to_zero"


class DDIMInverseScheduler(Scheduler):
    """DDIM inversion (Song et al. 2021, Sec. 4.3 and 5.4): x_0 -> x_T, the deterministic DDIM chain run upwards.

    The loop is the sampling loop with this scheduler, whose ``timesteps`` ascend::

        inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config, clip_sample=False)
        inverse.set_timesteps(50)
        x = image                                   # (B, C, H, W) in [-1, 1]
        for t in inverse.timesteps:                 # 0, 20, ..., 980
            x = inverse.step(unet(x, t).sample, t, x).prev_sample
        noise = x                                   # DDIMScheduler(clip_sample=False), 50 steps, gives image back

    Not a sampler (it is not in ``SCHEDULERS``): ``step()`` adds noise. :class:`ddpm.DDIMInversionPipeline` wraps
    inversion, reconstruction and interpolation.

    Differences from diffusers 0.42.1 (same keys, defaults and results otherwise; see docs/editing.md):

    * the level a step starts from is the previous entry of ``timesteps`` itself. diffusers computes it as
      ``t - num_train_timesteps // num_inference_steps``, which is another timestep whenever the spacing is not that
      stride (``trailing`` when n does not divide T; ``leading`` with ``steps_offset`` ≥ T // n). The direction is
      right in diffusers: diffusers#10695 asks for ``t + T // n``, which would make every step a denoising step;
    * ``trailing`` spacing gives n timesteps (diffusers gives n + 1 for 62 values of n ≤ 1000, the first being -1,
      which indexes ᾱ_{T-1}), and ``linspace`` spacing is supported (diffusers refuses it);
    * with ``prediction_type="sample"`` the first step from the clean image (ᾱ = 1) takes ε from the model's x̂_0 at
      its own level t; diffusers divides by sqrt(1 - ᾱ) = 0 there and returns inf or NaN;
    * ``set_timesteps(timesteps=[...])`` takes a custom ascending schedule.
    """

    config_class: ClassVar[type[DDIMInverseSchedulerConfig]] = DDIMInverseSchedulerConfig
    config: DDIMInverseSchedulerConfig

    def __init__(
        self,
        num_train_timesteps: int = _DEFAULTS.num_train_timesteps,
        beta_start: float = _DEFAULTS.beta_start,
        beta_end: float = _DEFAULTS.beta_end,
        beta_schedule: str = _DEFAULTS.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _DEFAULTS.trained_betas,
        clip_sample: bool = _DEFAULTS.clip_sample,
        set_alpha_to_one: bool = _DEFAULTS.set_alpha_to_one,
        steps_offset: int = _DEFAULTS.steps_offset,
        prediction_type: str = _DEFAULTS.prediction_type,
        clip_sample_range: float = _DEFAULTS.clip_sample_range,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every named parameter is a config key, described in :class:`DDIMInverseSchedulerConfig` and
        :class:`~ddpm.schedulers.config.SchedulerConfig`; keys the caller gives override ``config``.

        Args:
            config: Any scheduler's config, a diffusers config or a dict (see :class:`Scheduler`).
            **kwargs: Config keys of the other schedulers of the package, carried along; ``set_alpha_to_zero``,
                diffusers' deprecated name, sets ``set_alpha_to_one`` to its value with a ``FutureWarning``.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid.
        """
        named = self._named_keys(locals())
        if _DEPRECATED_ALIAS in kwargs:
            named["set_alpha_to_one"] = _alias_value(kwargs.pop(_DEPRECATED_ALIAS))
            self.__dict__["_given_keys"] = self.__dict__.get("_given_keys", frozenset()) | {"set_alpha_to_one"}
        super().__init__(config=config, **named, **kwargs)

    @classmethod
    def _build_config(cls, config: Any, overrides: dict[str, Any], *, source: Any = None) -> SchedulerConfig:
        """As the base, reading diffusers' deprecated ``set_alpha_to_zero`` (in a config or a keyword) as
        ``set_alpha_to_one``."""
        overrides = dict(overrides)
        if _DEPRECATED_ALIAS in overrides:
            overrides["set_alpha_to_one"] = _alias_value(overrides.pop(_DEPRECATED_ALIAS))
        if config is not None and not isinstance(config, SchedulerConfig):
            from ..config import config_to_dict

            data = dict(config_to_dict(config))
            if _DEPRECATED_ALIAS in data:
                value = data.pop(_DEPRECATED_ALIAS)
                if value is not None:
                    overrides.setdefault("set_alpha_to_one", _alias_value(value))
            config = data
        return super()._build_config(config, overrides, source=source)

    # ------------------------------------------------------------------------------------------------ the schedule
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """Choose the n timesteps of the inversion, in ascending order: the timesteps of DDIM sampling with the same
        config and n, reversed (``leading``, 50 steps: 0, 20, ..., 980), and reset to the first step.

        Args:
            num_inference_steps: n, 1 ≤ n ≤ ``num_train_timesteps``.
            device: Where ``self.timesteps`` lives.
            timesteps: A custom schedule instead of n: distinct training timesteps in ascending order.

        Raises:
            TypeError, ValueError: As :meth:`Scheduler.set_timesteps` (a custom schedule must ascend).
        """
        descending = None
        if timesteps is not None:
            values = timesteps.tolist() if isinstance(timesteps, torch.Tensor) else list(timesteps)
            if all(isinstance(v, numbers.Integral) for v in values) and any(a >= b for a, b in zip(values, values[1:])):
                raise ValueError(
                    f"timesteps of an inversion must be in ascending order (each one larger than the one before), "
                    f"got {values}"
                )
            descending = values[::-1]
        super().set_timesteps(num_inference_steps, device, descending)
        self._coefficients = self._per_step_coefficients()

    def _model_call_timesteps(self, spaced: list[int]) -> list[int]:
        return spaced[::-1]  # the sampler's timesteps, in the opposite order

    def _join_schedule_at(self, timestep: float | torch.Tensor) -> bool:
        return False  # an inversion starts at the image: a timestep outside the schedule is refused

    def _per_step_coefficients(self) -> list[_Coefficients]:
        # Notation (Song et al. 2021, whose α is our ᾱ), for the step from level s up to level t:
        # - alpha_bar_s -> α_s of the sample: ᾱ at the previous timestep of the schedule; before the first step, 1
        #                  (set_alpha_to_one) or ᾱ_0: _alpha_bar_at(-1)
        # - alpha_bar_t -> α_t of the timestep the step is called with
        assert self._schedule is not None
        alpha_bar_s = self._alpha_bar_at([-1, *self._schedule[:-1]])
        alpha_bar_t = self._alpha_bar_at(self._schedule)
        return per_step(
            _Coefficients,
            sqrt_alpha_bar_s=alpha_bar_s.sqrt(),
            sqrt_one_minus_alpha_bar_s=(1 - alpha_bar_s).sqrt(),
            sqrt_alpha_bar_t=alpha_bar_t.sqrt(),
            sqrt_one_minus_alpha_bar_t=(1 - alpha_bar_t).sqrt(),
        )

    # ------------------------------------------------------------------------------------------------------ step
    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: as in _per_step_coefficients, and
        # - sample -> x_s, the current sample; model_output -> what the model predicts at (x_s, t)
        # - x0     -> x̂_0 = (x_s - sqrt(1 - α_s) ε) / sqrt(α_s), Eq. (9) at level s
        # - the result -> x_t = sqrt(α_t) x̂_0 + sqrt(1 - α_t) ε, Eq. (13) from s up to t (η = 0: no noise)
        c = self._coefficients[step.i]
        kind = step.prediction_type
        a_s, b_s = c.sqrt_alpha_bar_s, c.sqrt_one_minus_alpha_bar_s

        # 1. x̂_0 and ε at level s, from whatever the model predicts
        x0 = predict_x0(step.model_output, step.sample, a_s, b_s, kind)
        if kind == "sample" and b_s == 0.0:
            # x_s is the clean image (α_s = 1), where ε cannot be read off x_s: take the model's own view of level t
            eps = eps_from_x0(x0, step.sample, c.sqrt_alpha_bar_t, c.sqrt_one_minus_alpha_bar_t)
        else:
            eps = predict_eps(step.model_output, step.sample, a_s, b_s, kind)

        # 2. clamp x̂_0 (diffusers' clip_sample; not part of the ODE)
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)

        # 3. x_t = sqrt(α_t) x̂_0 + sqrt(1 - α_t) ε
        prev_sample = c.sqrt_alpha_bar_t * x0 + c.sqrt_one_minus_alpha_bar_t * eps
        return prev_sample, x0


def _alias_value(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{_DEPRECATED_ALIAS} must be True or False, got {value!r}")
    import warnings

    warnings.warn(
        f"{_DEPRECATED_ALIAS} is diffusers' deprecated name of set_alpha_to_one; use set_alpha_to_one={value}",
        FutureWarning,
        stacklevel=4,
    )
    return value


class _Coefficients(NamedTuple):
    """The scalars of one inversion step (float32 values as Python floats), by name."""

    sqrt_alpha_bar_s: float
    sqrt_one_minus_alpha_bar_s: float
    sqrt_alpha_bar_t: float
    sqrt_one_minus_alpha_bar_t: float
