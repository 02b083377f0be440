"""Heun's 2nd-order sampler in σ-space (Karras et al. 2022, "EDM", Algorithm 1).

Each step from level σ_i to σ_{i+1} makes two model calls: an Euler step (the predictor) and, unless σ_{i+1} = 0, a
second evaluation at its end that averages the two slopes (the trapezoidal corrector). ``timesteps`` lists every
call, so ``len(timesteps)`` = 2n - 1 UNet calls for n levels: [t_0, t_1, t_1, t_2, t_2, ..., t_{n-1}, t_{n-1}].
The σ-space machinery (levels, input scaling, ``add_noise``) is :class:`~ddpm.schedulers.euler.SigmaScheduler`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import check
from .base import StepInput
from .config import SchedulerConfig, TimestepSpacing
from .euler import SigmaScheduler, check_sigma_options

__all__ = ["HeunDiscreteScheduler", "HeunDiscreteSchedulerConfig"]


@dataclasses.dataclass(frozen=True)
class HeunDiscreteSchedulerConfig(SchedulerConfig):
    """Config of :class:`HeunDiscreteScheduler` (``scheduler_config.json``, diffusers key names and defaults).

    Attributes:
        beta_start, beta_end: diffusers' Heun defaults, 0.00085 and 0.012 (Stable Diffusion's); a config loaded from
            a file or another scheduler keeps its own values.
        timestep_spacing: ``linspace`` by default (fractional timesteps, unrounded).
        use_karras_sigmas: Levels of Karras et al. 2022, Eq. (5), ρ = 7, between the first and last spaced σ.
        use_exponential_sigmas: Levels evenly spaced in log σ between the same ends.
        use_beta_sigmas: Beta-distributed levels; refused (needs scipy).
        clip_sample: Clamp the denoised estimate D to [-clip_sample_range, clip_sample_range].
        clip_sample_range: The clamp bound.
    """

    _class_name: ClassVar[str] = "HeunDiscreteScheduler"

    beta_start: float = 0.00085
    beta_end: float = 0.012
    timestep_spacing: TimestepSpacing = "linspace"
    use_karras_sigmas: bool | None = False
    use_exponential_sigmas: bool | None = False
    use_beta_sigmas: bool | None = False
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    def validate(self) -> None:
        super().validate()
        check_sigma_options(self)
        check(
            0 < self.clip_sample_range < float("inf"), self, "clip_sample_range", "it must be a positive finite number"
        )


_DEFAULTS = HeunDiscreteSchedulerConfig


class HeunDiscreteScheduler(SigmaScheduler):
    """Heun's method on the probability-flow ODE in σ-space (EDM Alg. 1): 2nd order, two model calls per step.

    ``order`` is 2. A loop may start part-way at the first call of a step (an even position of ``timesteps``:
    ``timesteps[2 k:]`` starts at level k, as diffusers' image-to-image does with ``t_start * order``); a start at
    the second call of a step is refused. A timestep given by value (not a view of ``timesteps``) is the step that
    starts at that level, as in diffusers.

    Differences from diffusers 0.42.1: ``use_beta_sigmas`` and the ``exp`` beta schedule are refused;
    ``rescale_betas_zero_snr`` is honoured; custom ``timesteps`` must be integers.
    """

    config_class: ClassVar[type[HeunDiscreteSchedulerConfig]] = HeunDiscreteSchedulerConfig
    config: HeunDiscreteSchedulerConfig
    order: ClassVar[int] = 2

    def __init__(
        self,
        num_train_timesteps: int = _DEFAULTS.num_train_timesteps,
        beta_start: float = _DEFAULTS.beta_start,
        beta_end: float = _DEFAULTS.beta_end,
        beta_schedule: str = _DEFAULTS.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _DEFAULTS.trained_betas,
        prediction_type: str = _DEFAULTS.prediction_type,
        use_karras_sigmas: bool | None = _DEFAULTS.use_karras_sigmas,
        use_exponential_sigmas: bool | None = _DEFAULTS.use_exponential_sigmas,
        use_beta_sigmas: bool | None = _DEFAULTS.use_beta_sigmas,
        clip_sample: bool = _DEFAULTS.clip_sample,
        clip_sample_range: float = _DEFAULTS.clip_sample_range,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        steps_offset: int = _DEFAULTS.steps_offset,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``config`` is a config key, described in :class:`HeunDiscreteSchedulerConfig` and
        :class:`~ddpm.schedulers.config.SchedulerConfig`; its default is the config's (diffusers' Heun defaults).
        ``rescale_betas_zero_snr`` (last) is not a key of diffusers' Heun, which ignores it; here it is honoured.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid.
        """
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)

    def _calls_from_levels(self, levels: np.ndarray, timesteps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every level but the first and the last is visited twice: [σ_0, σ_1, σ_1, ..., σ_{n-1}, σ_{n-1}, σ_n]."""
        sigmas = np.concatenate([levels[:1], np.repeat(levels[1:-1], 2), levels[-1:]])
        return sigmas, np.concatenate([timesteps[:1], np.repeat(timesteps[1:], 2)])

    def _set_calls(self, sigmas: np.ndarray, timesteps: np.ndarray, device: str | torch.device | None) -> None:
        super()._set_calls(sigmas, timesteps, device)
        assert self._schedule is not None
        # a level given by value starts the step from it (its later, first-order call), as diffusers looks it up
        self._positions = {value: position for position, value in enumerate(self._schedule)}
        self._predictor: tuple[torch.Tensor, torch.Tensor] | None = None

    def _start_at(self, i: int) -> None:
        """A loop starts at the first call of a step (an even position); the predictor state is dropped."""
        if i % 2 == 1:
            raise ValueError(
                f"a Heun loop cannot start at position {i} of timesteps: that model call is the second half of the "
                f"step that starts at position {i - 1}; start at an even position (timesteps[2 * k:])"
            )
        self._predictor = None

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation (Karras et al. 2022, Alg. 1), for the step from t_i to t_{i+1}:
        # - call 2k (predictor), x = x_i at t_i:          d_i = (x_i - D_θ(x_i; t_i)) / t_i,
        #                                                 x' = x_i + (t_{i+1} - t_i) d_i
        # - call 2k+1 (corrector), x = x' at t_{i+1}:     d'_i = (x' - D_θ(x'; t_{i+1})) / t_{i+1},
        #                                                 x_{i+1} = x_i + (t_{i+1} - t_i) (d_i + d'_i) / 2
        # The last step (t_{i+1} = 0) is the Euler predictor alone (Alg. 1 line 7).
        c = self._calls[step.i]
        x0 = self.predicted_x0(step, c.sigma, c.v_skip, c.v_out)
        if self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        d = (step.sample - x0) / c.sigma
        if step.i % 2 == 0:  # predictor: Alg. 1 lines 4-5
            self._predictor = (step.sample, d)
            return step.sample + d * c.dt, x0
        assert self._predictor is not None, "the corrector runs after its predictor (_start_at refuses odd starts)"
        x_i, d_i = self._predictor
        self._predictor = None
        dt = self._calls[step.i - 1].dt  # t_{i+1} - t_i of the step's predictor
        return x_i + ((d_i + d) / 2) * dt, x0  # Alg. 1 line 8
