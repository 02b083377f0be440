"""DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models").

A non-Markovian reverse process with the same marginals q(x_t | x_0) as DDPM, so a DDPM-trained model samples with
it unchanged. With η = 0 each step is deterministic (an ODE step) and 20-100 steps give good samples; η = 1
recovers DDPM's noise level.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch

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


class DDIMScheduler(Scheduler):
    """The DDIM sampler: deterministic with ``eta=0`` (default), one model call per timestep.

    ``eta`` and ``use_clipped_model_output`` are attributes of the scheduler, set in the constructor, in
    :meth:`from_config` / :meth:`from_pretrained` (``DDIMScheduler.from_config(cfg, eta=1.0)``) or later by
    assignment. They are not config keys and are not saved, so Hub configs load unchanged.

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
        self, *, config: Any = None, eta: float = 0.0, use_clipped_model_output: bool = False, **kwargs: Any
    ) -> None:
        """Build the scheduler.

        Args:
            config: As for :class:`~ddpm.schedulers.base.Scheduler`.
            eta: η of Eq. (16), the weight of the noise added each step: 0 is DDIM, 1 is DDPM-like.
            use_clipped_model_output: Re-derive ε from the clipped x̂_0 before the step (as GLIDE does).
            **kwargs: Config keys.

        Raises:
            ValueError: ``eta`` is outside [0, 1].
        """
        super().__init__(config=config, **kwargs)
        self.eta = eta
        self.use_clipped_model_output = use_clipped_model_output

    @property
    def eta(self) -> float:
        """η of Eq. (16) in [0, 1]: 0 gives deterministic DDIM steps, 1 the DDPM noise level."""
        return self._eta

    @eta.setter
    def eta(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1] (0: deterministic DDIM, 1: DDPM-like), got {value!r}")
        self._eta = float(value)
        if self._schedule is not None:
            self._coefficients = self._per_step_coefficients()  # σ_t depends on η

    @property
    def use_clipped_model_output(self) -> bool:
        """Whether ε is re-derived from the clipped x̂_0 before the step."""
        return self._use_clipped_model_output

    @use_clipped_model_output.setter
    def use_clipped_model_output(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"use_clipped_model_output must be True or False, got {value!r}")
        self._use_clipped_model_output = value

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """As :meth:`Scheduler.set_timesteps`; also computes each step's weights in Eq. (12) and σ_t(η), Eq. (16)."""
        super().set_timesteps(num_inference_steps, device)
        self._coefficients = self._per_step_coefficients()

    def _per_step_coefficients(self) -> list[_Coefficients]:
        # Notation (Song et al. 2021, whose α_t is our ᾱ_t), for the step from t to the next timestep:
        # - alpha_bar_t, alpha_bar_prev -> α_t and α_{t-1} of the paper (the final ᾱ after the last step)
        # - sigma                       -> σ_t(η), Eq. (16)
        # - direction_coeff             -> sqrt(1 - α_{t-1} - σ_t²), the weight of ε in Eq. (12)
        # One float32 value per step, computed once per schedule (and η) so that step() reads no tensor.
        assert self._schedule is not None
        alpha_bar_t = self._alpha_bar_at(self._schedule)
        alpha_bar_prev = self._alpha_bar_at(self._prev_timesteps())
        one_minus_alpha_bar_prev = 1 - alpha_bar_prev

        # σ_t(η) = η sqrt((1 - α_{t-1}) / (1 - α_t)) sqrt(1 - α_t / α_{t-1}), Eq. (16)
        variance = (one_minus_alpha_bar_prev / (1 - alpha_bar_t)) * (1 - alpha_bar_t / alpha_bar_prev)
        sigma = self.eta * variance.sqrt()
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
        c = self._coefficients[step.i]

        # 1. predicted x_0, Eq. (9), and ε, from whatever the model predicts
        x0 = step.predicted_x0()
        eps = step.predicted_eps()

        # 2. clip or threshold x_0 (and, if asked, re-derive ε from the clipped x_0)
        x0 = clip_or_threshold(x0, self.config)
        if self.use_clipped_model_output:
            eps = eps_from_x0(x0, step.sample, step.sqrt_alpha_bar, step.sqrt_one_minus_alpha_bar)

        # 3. x_{t-1} = sqrt(α_{t-1}) x̂_0 + sqrt(1 - α_{t-1} - σ_t²) ε + σ_t z with z ~ N(0, I), Eq. (12)
        direction = c.direction_coeff * eps
        prev_sample = c.sqrt_alpha_bar_prev * x0 + direction
        if self.eta > 0:
            prev_sample = prev_sample + c.sigma * step.noise()
        return prev_sample, x0


class _Coefficients(NamedTuple):
    """The scalars of one step (float32 values as Python floats), by name."""

    sqrt_alpha_bar_prev: float
    sigma: float
    direction_coeff: float
