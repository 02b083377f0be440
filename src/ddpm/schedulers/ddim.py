"""DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models").

A non-Markovian reverse process with the same marginals q(x_t | x_0) as DDPM, so a DDPM-trained model samples with
it unchanged. With η = 0 each step is deterministic (an ODE step) and 20-100 steps give good samples; η = 1
recovers DDPM's noise level.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple, overload

import numpy as np
import torch

from ..outputs import SchedulerOutput
from ..utils import Generators
from .base import Scheduler, StepInput, per_step
from .config import ClippingSchedulerConfig
from .math import clip_or_threshold, eps_from_x0

__all__ = ["DDIMScheduler", "DDIMSchedulerConfig"]


@dataclasses.dataclass(frozen=True)
class DDIMSchedulerConfig(ClippingSchedulerConfig):
    """Config of :class:`DDIMScheduler` (``scheduler_config.json``, diffusers key names).

    Attributes:
        set_alpha_to_one: The last step goes to ᾱ = 1 (a clean sample); False uses ᾱ_0 instead.
    """

    _class_name: ClassVar[str] = "DDIMScheduler"

    set_alpha_to_one: bool = True


_DEFAULTS = DDIMSchedulerConfig  # the constructor's defaults are the config's


class DDIMScheduler(Scheduler):
    """The DDIM sampler: deterministic with ``eta=0`` (default), one model call per timestep.

    ``eta`` and ``use_clipped_model_output`` are attributes of the scheduler, set in the constructor, in
    :meth:`from_config` / :meth:`from_pretrained` (``DDIMScheduler.from_config(cfg, eta=1.0)``) or later by
    assignment. They are not config keys and are not saved, so Hub configs load unchanged. ``step()`` also takes
    them per call, as diffusers does (``step(model_output, t, sample, eta)``); a per-call value is used for that
    call only.

    Difference from diffusers 0.42.1: the previous timestep comes from ``timesteps`` itself. diffusers computes it as
    ``t - num_train_timesteps // num_inference_steps``, which is wrong whenever the spacing is not that uniform stride
    (``linspace`` always, ``trailing`` when n does not divide T; diffusers#11347, #12633): every step then reads ᾱ
    of a timestep that is never visited. For ``leading`` spacing and for ``trailing`` with n dividing T, both rules
    agree and the outputs match diffusers.
    """

    config_class: ClassVar[type[DDIMSchedulerConfig]] = DDIMSchedulerConfig
    _constructor_only: ClassVar[tuple[str, ...]] = ("eta", "use_clipped_model_output")
    config: DDIMSchedulerConfig

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
        thresholding: bool = _DEFAULTS.thresholding,
        dynamic_thresholding_ratio: float = _DEFAULTS.dynamic_thresholding_ratio,
        clip_sample_range: float = _DEFAULTS.clip_sample_range,
        sample_max_value: float = _DEFAULTS.sample_max_value,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        *,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``eta`` is a config key, described in :class:`DDIMSchedulerConfig` and
        :class:`~ddpm.schedulers.config.ClippingSchedulerConfig`; its default is the config's. Keys the caller gives
        override ``config``. Values are checked by the config (the string keys' allowed values are listed there).

        Args:
            eta: η of Eq. (16), the weight of the noise added each step: 0 is DDIM, 1 is DDPM-like.
            use_clipped_model_output: Re-derive ε from the clipped x̂_0 before the step (as GLIDE does).
            config: Any scheduler's config, a diffusers config or a dict (see :class:`Scheduler`).
            **kwargs: Config keys of the other schedulers of the package, carried along.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid.
            ValueError: ``eta`` is outside [0, 1].
        """
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)
        self.eta = eta
        self.use_clipped_model_output = use_clipped_model_output

    @property
    def eta(self) -> float:
        """η of Eq. (16) in [0, 1]: 0 gives deterministic DDIM steps, 1 the DDPM noise level."""
        return self._eta

    @eta.setter
    def eta(self, value: float) -> None:
        self._eta = _check_eta(value)
        if self._schedule is not None:
            self._coefficients = self._per_step_coefficients(self._eta)  # σ_t depends on η

    @property
    def use_clipped_model_output(self) -> bool:
        """Whether ε is re-derived from the clipped x̂_0 before the step."""
        return self._use_clipped_model_output

    @use_clipped_model_output.setter
    def use_clipped_model_output(self, value: bool) -> None:
        self._use_clipped_model_output = _check_use_clipped(value)

    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
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
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        generator: Generators = None,
        variance_noise: torch.Tensor | None = None,
        *,
        return_dict: Literal[False],
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float | None,
        use_clipped_model_output: bool | None,
        generator: Generators,
        variance_noise: torch.Tensor | None,
        return_dict: Literal[False],
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float | None = None,
        use_clipped_model_output: bool | None = None,
        generator: Generators = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Scheduler.step`, with DDIM's options per call, in diffusers' order (all may be positional).

        Args:
            eta: η for this call only (None: the scheduler's :attr:`eta`).
            use_clipped_model_output: For this call only (None: the scheduler's attribute).
            variance_noise: z of Eq. (12) itself, used when η > 0 instead of drawing it from ``generator``.

        The other arguments, the return value and the errors are :meth:`Scheduler.step`'s; also ValueError for an
        ``eta`` outside [0, 1].
        """
        options = _Options(
            eta=self.eta if eta is None else _check_eta(eta),
            use_clipped_model_output=(
                self.use_clipped_model_output
                if use_clipped_model_output is None
                else _check_use_clipped(use_clipped_model_output)
            ),
        )
        return self._advance(model_output, timestep, sample, generator, variance_noise, return_dict, options)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """As :meth:`Scheduler.set_timesteps`; also computes each step's weights in Eq. (12) and σ_t(η), Eq. (16)."""
        super().set_timesteps(num_inference_steps, device, timesteps)
        self._coefficients = self._per_step_coefficients(self.eta)

    def _per_step_coefficients(self, eta: float, steps: slice = slice(None)) -> list[_Coefficients]:
        # Notation (Song et al. 2021, whose α_t is our ᾱ_t), for the step from t to the next timestep:
        # - alpha_bar_t, alpha_bar_prev -> α_t and α_{t-1} of the paper (the final ᾱ after the last step)
        # - sigma                       -> σ_t(η), Eq. (16)
        # - direction_coeff             -> sqrt(1 - α_{t-1} - σ_t²), the weight of ε in Eq. (12)
        # One float32 value per step, computed once per schedule (and η) so that step() reads no tensor; a step
        # with another η (given to step()) computes its own row the same way (``steps`` selects it).
        assert self._schedule is not None
        alpha_bar_t = self._alpha_bar_at(self._schedule[steps])
        alpha_bar_prev = self._alpha_bar_at(self._prev_timesteps()[steps])
        one_minus_alpha_bar_prev = 1 - alpha_bar_prev

        # σ_t(η) = η sqrt((1 - α_{t-1}) / (1 - α_t)) sqrt(1 - α_t / α_{t-1}), Eq. (16)
        variance = (one_minus_alpha_bar_prev / (1 - alpha_bar_t)) * (1 - alpha_bar_t / alpha_bar_prev)
        sigma = eta * variance.sqrt()
        direction_coeff = (one_minus_alpha_bar_prev - sigma**2).clamp(min=0).sqrt()
        return per_step(
            _Coefficients, sqrt_alpha_bar_prev=alpha_bar_prev.sqrt(), sigma=sigma, direction_coeff=direction_coeff
        )

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: as in _per_step_coefficients, and
        # - eps       -> ε_θ^(t)(x_t)
        # - x0        -> f_θ^(t)(x_t), the predicted x_0, Eq. (9)
        # - direction -> "direction pointing to x_t" in Eq. (12)
        # - the result -> x_{t-1} of Eq. (12)
        # step.variance is not read: DDIM's steps do not use the model's variance.
        options: _Options = step.options
        if options.eta == self.eta:
            c = self._coefficients[step.i]
        else:  # this call's own η: its row, computed like the table's
            c = self._per_step_coefficients(options.eta, slice(step.i, step.i + 1))[0]

        # 1. predicted x_0, Eq. (9), and ε, from whatever the model predicts
        x0 = step.predicted_x0()
        eps = step.predicted_eps()

        # 2. clip or threshold x_0 (and, if asked, re-derive ε from the clipped x_0)
        x0 = clip_or_threshold(x0, self.config)
        if options.use_clipped_model_output:
            eps = eps_from_x0(x0, step.sample, step.sqrt_alpha_bar, step.sqrt_one_minus_alpha_bar)

        # 3. x_{t-1} = sqrt(α_{t-1}) x̂_0 + sqrt(1 - α_{t-1} - σ_t²) ε + σ_t z with z ~ N(0, I), Eq. (12)
        direction = c.direction_coeff * eps
        prev_sample = c.sqrt_alpha_bar_prev * x0 + direction
        if options.eta > 0:
            prev_sample = prev_sample + c.sigma * step.noise()
        return prev_sample, x0


def _check_eta(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {value!r}")
    return float(value)


def _check_use_clipped(value: bool) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"use_clipped_model_output must be True or False, got {value!r}")
    return value


class _Options(NamedTuple):
    """DDIM's per-call options (:attr:`StepInput.options`): the attributes, or the values given to ``step()``."""

    eta: float
    use_clipped_model_output: bool


class _Coefficients(NamedTuple):
    """The scalars of one step (float32 values as Python floats), by name."""

    sqrt_alpha_bar_prev: float
    sigma: float
    direction_coeff: float
