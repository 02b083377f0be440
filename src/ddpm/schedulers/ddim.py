"""DDIM sampling (Song et al. 2021, "Denoising Diffusion Implicit Models").

A non-Markovian reverse process with the same marginals q(x_t | x_0) as DDPM, so a DDPM-trained model samples with
it unchanged. With η = 0 each step is deterministic (an ODE step) and 20-100 steps give good samples; η = 1
recovers DDPM's noise level.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import torch

from .base import ClippingSchedulerConfig, NoiseSource, Scheduler, clip_or_threshold

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
            self._prepare()  # σ_t depends on η

    @property
    def use_clipped_model_output(self) -> bool:
        """Whether ε is re-derived from the clipped x̂_0 before the step."""
        return self._use_clipped_model_output

    @use_clipped_model_output.setter
    def use_clipped_model_output(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"use_clipped_model_output must be True or False, got {value!r}")
        self._use_clipped_model_output = value

    def _final_alpha_bar(self) -> float:
        return 1.0 if self.config.set_alpha_to_one else float(self.alphas_cumprod[0])

    def _prepare(self) -> None:
        # Notation (Song et al. 2021, whose α_t is our ᾱ_t), for the step from t to the next timestep:
        # - alpha_bar_t, alpha_bar_prev -> α_t and α_{t-1} of the paper (the final ᾱ after the last step)
        # - sigma                       -> σ_t(η), Eq. (16)
        # - direction_coeff             -> sqrt(1 - α_{t-1} - σ_t²), the weight of ε in Eq. (12)
        # One float32 value per step, computed here once so that step() reads no tensor.
        assert self._schedule is not None
        alpha_bar_t = self._alpha_bar_at(self._schedule)
        alpha_bar_prev = self._alpha_bar_at(self._prev_timesteps())
        one_minus_alpha_bar_prev = 1 - alpha_bar_prev

        # σ_t(η) = η sqrt((1 - α_{t-1}) / (1 - α_t)) sqrt(1 - α_t / α_{t-1}), Eq. (16)
        variance = (one_minus_alpha_bar_prev / (1 - alpha_bar_t)) * (1 - alpha_bar_t / alpha_bar_prev)
        sigma = self.eta * variance.sqrt()
        direction_coeff = (one_minus_alpha_bar_prev - sigma**2).clamp(min=0).sqrt()
        columns = (alpha_bar_prev.sqrt(), sigma, direction_coeff)
        self._coefficients = _Coefficients(*(column.tolist() for column in columns))

    def _step(
        self,
        i: int,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        predicted_variance: torch.Tensor | None,
        draw_noise: NoiseSource,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: as in _prepare, and
        # - eps       -> ε_θ^(t)(x_t)
        # - x0        -> f_θ^(t)(x_t), the predicted x_0, Eq. (9)
        # - direction -> "direction pointing to x_t" in Eq. (12)
        # - the result -> x_{t-1} of Eq. (12)
        # predicted_variance is dropped: DDIM's steps do not use the model's variance.
        c = self._coefficients

        # 1. predicted x_0, Eq. (9), and ε, from whatever the model predicts
        x0 = self._predict_x0(i, model_output, sample)
        eps = self._predict_eps(i, model_output, sample)

        # 2. clip or threshold x_0 (and, if asked, re-derive ε from the clipped x_0)
        x0 = clip_or_threshold(x0, self.config)
        if self.use_clipped_model_output:
            eps = self._eps_from_x0(i, x0, sample)

        # 3. x_{t-1} = sqrt(α_{t-1}) x̂_0 + sqrt(1 - α_{t-1} - σ_t²) ε + σ_t z with z ~ N(0, I), Eq. (12)
        direction = c.direction_coeff[i] * eps
        prev_sample = c.sqrt_alpha_bar_prev[i] * x0 + direction
        if self.eta > 0:
            prev_sample = prev_sample + c.sigma[i] * draw_noise()
        return prev_sample, x0


class _Coefficients(NamedTuple):
    """One float32 value per step (as Python floats), by name."""

    sqrt_alpha_bar_prev: list[float]
    sigma: list[float]
    direction_coeff: list[float]
