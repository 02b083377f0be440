"""DDPM ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2).

Each step draws x_{t'} from the model's reverse distribution p_θ(x_{t'} | x_t) = N(μ̃_t(x_t, x̂_0), σ_t² I),
where t' is the next timestep of the schedule: t - 1 with all T steps; with fewer steps, a larger jump treated as
one step of the sub-chain with α = ᾱ_t / ᾱ_{t'}.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple, get_args, overload

import numpy as np
import torch

from ..outputs import SchedulerOutput
from ..utils import Generators
from .base import Scheduler, StepInput, per_step
from .config import ClippingSchedulerConfig
from .math import clip_or_threshold

__all__ = ["VARIANCE_TYPES", "DDPMScheduler", "DDPMSchedulerConfig", "VarianceType"]

VarianceType = Literal["fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"]
#: Accepted values of ``variance_type``: the σ_t² of each reverse step.
VARIANCE_TYPES: tuple[str, ...] = get_args(VarianceType)

# β̃_t is 0 on the last step (ᾱ_{t'} = 1); it is clamped so that its logarithm stays finite.
_MIN_VARIANCE = 1e-20
_LEARNED = ("learned", "learned_range")


@dataclasses.dataclass(frozen=True)
class DDPMSchedulerConfig(ClippingSchedulerConfig):
    """Config of :class:`DDPMScheduler` (``scheduler_config.json``, diffusers key names).

    Attributes:
        variance_type: σ_t² of the reverse step (Ho et al. 2020, Sec. 3.2; Nichol & Dhariwal 2021, Sec. 3.1):
            ``fixed_small`` β̃_t (the posterior variance), ``fixed_large`` β_t, their ``_log`` variants (the same
            values computed through logarithms), ``learned`` (the model's extra channels are σ_t² itself) or
            ``learned_range`` (they interpolate log β̃_t and log β_t).
    """

    _class_name: ClassVar[str] = "DDPMScheduler"

    variance_type: VarianceType = "fixed_small"


_DEFAULTS = DDPMSchedulerConfig  # the constructor's defaults are the config's


class DDPMScheduler(Scheduler):
    """The DDPM sampler: stochastic, one model call per timestep, the reference for quality (1000 steps).

    Construct it with diffusers' keywords (``DDPMScheduler(variance_type="fixed_large")``), from any scheduler's config
    (:meth:`from_config`), or from a repo (:meth:`from_pretrained`). Fewer steps (``set_timesteps(50)``) still work:
    each step then spans several training steps, with α = ᾱ_t / ᾱ_{t'}.

    Differences from diffusers 0.42.1 (all where diffusers gives NaN, a crash or an error):

    * ``fixed_large_log`` adds noise with σ_t = exp(½ log β_t); diffusers takes the square root of log β_t (NaN,
      diffusers#14569).
    * ``learned`` clamps the predicted variance at 0 before the square root (diffusers gives NaN for negative values).
    * A (B, 2C, H, W) output with a fixed ``variance_type`` is accepted: the variance half is dropped.
    """

    config_class: ClassVar[type[DDPMSchedulerConfig]] = DDPMSchedulerConfig
    _steps_without_set_timesteps: ClassVar[bool] = True
    config: DDPMSchedulerConfig

    def __init__(
        self,
        num_train_timesteps: int = _DEFAULTS.num_train_timesteps,
        beta_start: float = _DEFAULTS.beta_start,
        beta_end: float = _DEFAULTS.beta_end,
        beta_schedule: str = _DEFAULTS.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _DEFAULTS.trained_betas,
        variance_type: str = _DEFAULTS.variance_type,
        clip_sample: bool = _DEFAULTS.clip_sample,
        prediction_type: str = _DEFAULTS.prediction_type,
        thresholding: bool = _DEFAULTS.thresholding,
        dynamic_thresholding_ratio: float = _DEFAULTS.dynamic_thresholding_ratio,
        clip_sample_range: float = _DEFAULTS.clip_sample_range,
        sample_max_value: float = _DEFAULTS.sample_max_value,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        steps_offset: int = _DEFAULTS.steps_offset,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``config`` is a config key, described in :class:`DDPMSchedulerConfig` and
        :class:`~ddpm.schedulers.config.ClippingSchedulerConfig`; its default is the config's. Keys the caller gives
        override ``config``. Values are checked by the config (the string keys' allowed values are listed there).

        Args:
            config: Any scheduler's config, a diffusers config or a dict (see :class:`Scheduler`).
            **kwargs: Config keys of the other schedulers of the package, carried along.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid.
        """
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)

    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: Generators = None,
        return_dict: Literal[True] = True,
        *,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput: ...

    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: Generators = None,
        *,
        return_dict: Literal[False],
        variance_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: Generators,
        return_dict: Literal[False],
        *,
        variance_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: Generators = None,
        return_dict: bool = True,
        *,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Scheduler.step`, with ``generator`` and ``return_dict`` also positional (diffusers' order).

        Without :meth:`set_timesteps`, it steps over the T training timesteps (t to t - 1), at any of them.
        """
        return self._advance(model_output, timestep, sample, generator, variance_noise, return_dict, None)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """As :meth:`Scheduler.set_timesteps`; also computes each step's weights of μ̃_t, Eq. (7), and its σ_t."""
        super().set_timesteps(num_inference_steps, device, timesteps)
        # Notation (Ho et al. 2020), for the step from t to t', the next timestep of the schedule (-1 at the end):
        # - alpha_bar_t, alpha_bar_prev -> ᾱ_t, ᾱ_{t'} (ᾱ_{-1} = 1: the chain ends at the clean x_0)
        # - alpha_t, beta_t             -> α_t = ᾱ_t / ᾱ_{t'} and β_t = 1 - α_t (the paper's when t' = t - 1)
        # - beta_tilde                  -> β̃_t = (1 - ᾱ_{t'}) / (1 - ᾱ_t) β_t, the posterior variance, Eq. (7)
        # - x0_coeff, xt_coeff          -> the weights of x̂_0 and x_t in the posterior mean μ̃_t, Eq. (7)
        # - sigma                       -> σ_t, the standard deviation of p_θ(x_{t'} | x_t)
        # One float32 value per step, computed here once so that step() reads no tensor.
        assert self._schedule is not None
        alpha_bar_t = self._alpha_bar_at(self._schedule)
        alpha_bar_prev = self._alpha_bar_at(self._prev_timesteps())
        one_minus_alpha_bar_t = 1 - alpha_bar_t
        one_minus_alpha_bar_prev = 1 - alpha_bar_prev
        alpha_t = alpha_bar_t / alpha_bar_prev
        beta_t = 1 - alpha_t

        # μ̃_t(x_t, x_0) = sqrt(ᾱ_{t'}) β_t / (1 - ᾱ_t) x_0 + sqrt(α_t) (1 - ᾱ_{t'}) / (1 - ᾱ_t) x_t, Eq. (7)
        x0_coeff = (alpha_bar_prev.sqrt() * beta_t) / one_minus_alpha_bar_t
        xt_coeff = alpha_t.sqrt() * one_minus_alpha_bar_prev / one_minus_alpha_bar_t
        # β̃_t is 0 on the last step; clamped so that its logarithm stays finite
        beta_tilde = (one_minus_alpha_bar_prev / one_minus_alpha_bar_t * beta_t).clamp(min=_MIN_VARIANCE)

        variance_type = self.config.variance_type
        nan = torch.full_like(beta_t, math.nan)
        log_beta_t = log_beta_tilde = nan  # only the learned types read them, in _step
        if variance_type == "fixed_small":  # σ_t² = β̃_t (Ho et al. 2020, Sec. 3.2)
            sigma = beta_tilde.sqrt()
        elif variance_type == "fixed_small_log":  # the same, through the logarithm
            sigma = torch.exp(0.5 * beta_tilde.log())
        elif variance_type == "fixed_large":  # σ_t² = β_t (Ho et al. 2020, Sec. 3.2)
            sigma = beta_t.sqrt()
        elif variance_type == "fixed_large_log":  # GLIDE's "max_log": σ_t = exp(½ log β_t)
            sigma = torch.exp(0.5 * beta_t.log())
        elif variance_type in _LEARNED:  # σ_t comes from the model output
            sigma, log_beta_t, log_beta_tilde = nan, beta_t.log(), beta_tilde.log()
        else:
            allowed = ", ".join(VARIANCE_TYPES)
            raise ValueError(f"variance_type {variance_type!r} is not supported; use one of {allowed}")
        self._coefficients = per_step(
            _Coefficients,
            x0_coeff=x0_coeff,
            xt_coeff=xt_coeff,
            sigma=sigma,
            log_beta_t=log_beta_t,
            log_beta_tilde=log_beta_tilde,
        )

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: as in set_timesteps, and x0 -> x̂_0, mean -> μ̃_t(x_t, x̂_0), the result -> x_{t'}.
        cfg, c = self.config, self._coefficients[step.i]
        if cfg.variance_type in _LEARNED and step.variance is None:
            raise ValueError(
                f"variance_type={cfg.variance_type!r} needs a model that predicts its variance: model_output must "
                "have twice the channels of sample"
            )

        # 1. x̂_0 from the model output (Eq. 15 for ε-prediction), clipped or thresholded
        x0 = clip_or_threshold(step.predicted_x0(), cfg)

        # 2. the posterior mean μ̃_t(x_t, x̂_0), Eq. (7)
        mean = c.x0_coeff * x0 + c.xt_coeff * step.sample

        # 3. x_{t'} = μ̃_t + σ_t z with z ~ N(0, I), and z = 0 at t = 0 (Algorithm 2, line 3)
        if step.t == 0:
            return mean, x0
        noise = step.noise()
        if step.variance is None or cfg.variance_type not in _LEARNED:
            return mean + c.sigma * noise, x0
        if cfg.variance_type == "learned":  # the model outputs σ_t² itself
            sigma = step.variance.clamp(min=0.0).sqrt()
        else:
            # learned_range, Nichol & Dhariwal 2021, Eq. (15): log σ_t² = v log β_t + (1 - v) log β̃_t, with the
            # model output in [-1, 1] mapped to v = (output + 1) / 2
            v = (step.variance + 1) / 2
            sigma = torch.exp(0.5 * (v * c.log_beta_t + (1 - v) * c.log_beta_tilde))
        return mean + sigma * noise, x0


class _Coefficients(NamedTuple):
    """The scalars of one step (float32 values as Python floats), by name."""

    x0_coeff: float
    xt_coeff: float
    sigma: float
    log_beta_t: float
    log_beta_tilde: float
