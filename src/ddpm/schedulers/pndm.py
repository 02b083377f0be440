"""PNDM sampling (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds").

Every step moves x along the DDIM "transfer" φ (the deterministic DDIM step, Eq. (9) of the paper), but with a noise
estimate ε' that combines several model evaluations like a classical ODE solver: a pseudo Runge-Kutta warm-up (4
model calls per step for the first 3 steps), then the pseudo linear multistep method (PLMS: 4th-order
Adams-Bashforth weights over the last 4 noise estimates, one model call per step).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .base import Scheduler, StepInput, per_step
from .config import SchedulerConfig

__all__ = ["PNDMScheduler", "PNDMSchedulerConfig"]

_RK_STEPS = 3  # Runge-Kutta warm-up steps, each 4 model calls
_RK_CALLS = 4 * _RK_STEPS


@dataclasses.dataclass(frozen=True)
class PNDMSchedulerConfig(SchedulerConfig):
    """Config of :class:`PNDMScheduler` (``scheduler_config.json``, diffusers key names).

    PNDM works on ε and never forms a clipped x_0, so ``clip_sample`` and thresholding do not apply (as in diffusers).

    Attributes:
        skip_prk_steps: Replace the Runge-Kutta warm-up by one improved-Euler step and lower-order multistep steps
            (the PLMS of Stable Diffusion); needs 1 model call per timestep plus one.
        set_alpha_to_one: The last step goes to ᾱ = 1 (a clean sample); False (the default) uses ᾱ_0.
    """

    _class_name: ClassVar[str] = "PNDMScheduler"

    skip_prk_steps: bool = False
    set_alpha_to_one: bool = False


_DEFAULTS = PNDMSchedulerConfig  # the constructor's defaults are the config's


class PNDMScheduler(Scheduler):
    """The PNDM sampler: deterministic, higher order; good samples in about 50 model calls.

    ``timesteps`` lists one entry per model call, so ``len(timesteps)`` is the number of model calls: n + 9 for
    ``set_timesteps(n)`` with the Runge-Kutta warm-up (n ≥ 4), n + 1 with ``skip_prk_steps`` (1 for n = 1). Some
    timesteps appear twice in a row (the model is evaluated twice at the same noise level from different samples).

    Differences from diffusers 0.42.1:

    * With ``prediction_type="v_prediction"`` (or ``"sample"``), each model output is converted to ε at the sample
      and timestep where it was evaluated *before* the multistep combination. diffusers combines the raw v outputs
      and converts once (diffusers#14816), which is only right for a single output; it has no ``"sample"`` support.
    * The previous timestep of every (sub)step is taken from ``timesteps``; diffusers uses strides
      (``T // n`` and ``T // n // 2``), which differ for ``linspace`` spacing, for ``trailing`` when n does not
      divide T, and for the Runge-Kutta half steps when ``T // n`` is odd.
    * ``rescale_betas_zero_snr`` is honoured (diffusers' PNDM has no such key and silently uses the un-rescaled
      schedule). ``step()`` returns ``pred_original_sample`` (the x_0 implied by the current model output) and, with
      ``return_dict=False``, a 2-tuple like the other schedulers.
    """

    config_class: ClassVar[type[PNDMSchedulerConfig]] = PNDMSchedulerConfig
    config: PNDMSchedulerConfig

    def __init__(
        self,
        num_train_timesteps: int = _DEFAULTS.num_train_timesteps,
        beta_start: float = _DEFAULTS.beta_start,
        beta_end: float = _DEFAULTS.beta_end,
        beta_schedule: str = _DEFAULTS.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _DEFAULTS.trained_betas,
        skip_prk_steps: bool = _DEFAULTS.skip_prk_steps,
        set_alpha_to_one: bool = _DEFAULTS.set_alpha_to_one,
        prediction_type: str = _DEFAULTS.prediction_type,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        steps_offset: int = _DEFAULTS.steps_offset,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``config`` is a config key, described in :class:`PNDMSchedulerConfig` and
        :class:`~ddpm.schedulers.config.SchedulerConfig`; its default is the config's. Keys the caller gives
        override ``config``. Values are checked by the config (the string keys' allowed values are listed there).

        Args:
            config: Any scheduler's config, a diffusers config or a dict (see :class:`Scheduler`).
            **kwargs: Config keys of the other schedulers of the package, carried along.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid.
        """
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)

    def _model_call_timesteps(self, spaced: list[int]) -> list[int]:
        """One timestep per model call, from the spaced timesteps s_0 > s_1 > ... > s_{n-1}.

        * Runge-Kutta warm-up: for k = 0, 1, 2 the calls [s_k, s_{k+1} + h, s_{k+1} + h, s_{k+1}] with the half step
          h = ⌊⌊T / n⌋ / 2⌋ (diffusers' layout; ⌊(s_k - s_{k+1}) / 2⌋ where a custom schedule's gap is smaller),
          then s_3, ..., s_{n-1} for the multistep phase.
        * ``skip_prk_steps``: [s_0, s_1, s_1, s_2, ..., s_{n-1}]; the second call at s_1 completes the improved-Euler
          first step.
        """
        n = len(spaced)
        if not self.config.skip_prk_steps and n < _RK_STEPS + 1:
            raise ValueError(
                f"num_inference_steps={n} is too small: {type(self).__name__} needs at least {_RK_STEPS + 1} (the "
                f"Runge-Kutta warm-up spans {_RK_STEPS} steps and is followed by at least one multistep step; use "
                "skip_prk_steps=True for fewer steps)"
            )
        if float(self.alphas_cumprod[spaced[0]]) == 0.0:
            raise ValueError(
                f"PNDMScheduler cannot start at timestep {spaced[0]}: its ᾱ is 0 (rescale_betas_zero_snr=True, or "
                "betas so large that ᾱ underflows), and the PNDM transfer divides by sqrt(ᾱ_t); use DDIMScheduler, "
                "or timestep_spacing='leading' with rescale_betas_zero_snr"
            )
        if self.config.skip_prk_steps:
            return spaced[:1] + spaced[1:2] + spaced[1:]
        half = self.config.num_train_timesteps // n // 2
        warm_up = []
        for k in range(_RK_STEPS):  # s_k, the half step twice, s_{k+1}
            # diffusers' half step lies inside (s_{k+1}, s_k) for every spacing; a custom schedule with a smaller gap
            # gets the midpoint instead, so the Runge-Kutta stage never leaves the interval it integrates over
            mid = half if spaced[k + 1] + half < spaced[k] else (spaced[k] - spaced[k + 1]) // 2
            warm_up += [spaced[k], spaced[k + 1] + mid, spaced[k + 1] + mid, spaced[k + 1]]
        return warm_up + spaced[_RK_STEPS:]

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """As :meth:`Scheduler.set_timesteps`; also resets the multistep state and computes the transfers, Eq. (9)."""
        super().set_timesteps(num_inference_steps, device, timesteps)
        self._reset_multistep_state()

        # Notation (Liu et al. 2022), for the transfer from t to t - δ that call i makes:
        # - alpha_bar_t, alpha_bar_to -> ᾱ_t and ᾱ_{t-δ}
        # - x_coeff                   -> sqrt(ᾱ_{t-δ} / ᾱ_t), the weight of x_t in φ
        # - eps_numerator             -> ᾱ_{t-δ} - ᾱ_t
        # - eps_denominator           -> ᾱ_t sqrt(1 - ᾱ_{t-δ}) + sqrt(ᾱ_t (1 - ᾱ_t) ᾱ_{t-δ})
        # One float32 value per call, computed here once so that step() reads no tensor.
        assert self._schedule is not None
        starts, ends = zip(*(self._transfer_interval(i) for i in range(len(self._schedule))))
        alpha_bar_t = self._alpha_bar_at(list(starts))
        alpha_bar_to = self._alpha_bar_at(list(ends))

        # the transfer φ(x_t, ε, t, t - δ), Eq. (9)
        x_coeff = (alpha_bar_to / alpha_bar_t).sqrt()
        eps_numerator = alpha_bar_to - alpha_bar_t
        cross = (alpha_bar_t * (1 - alpha_bar_t) * alpha_bar_to).sqrt()
        eps_denominator = alpha_bar_t * (1 - alpha_bar_to).sqrt() + cross
        self._coefficients = per_step(
            _Coefficients, x_coeff=x_coeff, eps_numerator=eps_numerator, eps_denominator=eps_denominator
        )

    def _reset_multistep_state(self) -> None:
        # The multistep state is bounded: at most 4 noise estimates, the sample and sum of one Runge-Kutta step.
        self._eps_history: collections.deque[torch.Tensor] = collections.deque(maxlen=4)
        self._rk_sample: torch.Tensor | None = None  # x_t at the start of the current Runge-Kutta step
        self._rk_eps_sum: torch.Tensor | None = None  # (e_1 + 2 e_2 + 2 e_3) / 6 so far
        self._euler_sample: torch.Tensor | None = None  # x_t at the start of the first improved-Euler step

    def _start_at(self, i: int) -> None:
        """A loop that starts at call ``i`` starts a fresh multistep history; it cannot start inside a step that
        spans several model calls (a Runge-Kutta step, or the improved-Euler first step)."""
        if (not self.config.skip_prk_steps and i < _RK_CALLS and i % 4 != 0) or (self.config.skip_prk_steps and i == 1):
            raise ValueError(
                f"a PNDM loop cannot start at position {i} of timesteps: that model call continues a step that "
                "started at an earlier call; start at the beginning of a step"
            )
        self._reset_multistep_state()

    def _transfer_interval(self, i: int) -> tuple[int, int]:
        """(t, t - δ) of the transfer that step ``i`` makes, looked up in the schedule (-1: past its end).

        A Runge-Kutta step k spans calls 4k..4k+3 and always starts from its first timestep; its first two calls go to
        the half step, the last two to the full step. The second call of the ``skip_prk_steps`` warm-up repeats the
        first step. Every other call goes from its own timestep to the next one.
        """
        assert self._schedule is not None
        schedule = self._schedule
        if not self.config.skip_prk_steps and i < _RK_CALLS:
            k, j = divmod(i, 4)
            return schedule[4 * k], schedule[4 * k + (1 if j < 2 else 3)]
        if self.config.skip_prk_steps and i == 1:
            return schedule[0], schedule[1]
        return schedule[i], schedule[i + 1] if i + 1 < len(schedule) else -1

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation (Liu et al. 2022), with s = step.t the timestep of this model call:
        # - eps          -> ε_θ(x_s, s), this call's noise estimate (e_1..e_4 within a Runge-Kutta step)
        # - eps_prime    -> ε', the combined estimate the transfer uses
        # - x_from       -> x_t, where the transfer starts (see _transfer_interval for t and t - δ)
        # - prev_sample  -> φ(x_t, ε', t, t - δ), Eq. (9)
        # step.variance is not read (deterministic steps), and no noise is drawn.
        i, sample, c = step.i, step.sample, self._coefficients[step.i]
        skip_prk = self.config.skip_prk_steps

        # 1. ε at the point (x_s, s) where the model was evaluated. Converting v / x_0 outputs here, before any
        #    combination, keeps the multistep formulas exact for every prediction_type.
        eps = step.predicted_eps()
        x0 = step.predicted_x0()

        # 2. the combined noise estimate ε' and the sample the transfer starts from
        if not skip_prk and i < _RK_CALLS:
            # pseudo Runge-Kutta: e_1 at (x_t, t), e_2 and e_3 at the half step, e_4 at t - δ;
            # ε' = (e_1 + 2 e_2 + 2 e_3 + e_4) / 6
            j = i % 4
            if j == 0:
                self._eps_history.append(eps)
                self._rk_sample = sample
                self._rk_eps_sum = (1 / 6) * eps
                eps_prime = eps
            elif j in (1, 2):
                assert self._rk_eps_sum is not None
                self._rk_eps_sum = self._rk_eps_sum + (1 / 3) * eps
                eps_prime = eps
            else:
                assert self._rk_eps_sum is not None
                eps_prime = self._rk_eps_sum + (1 / 6) * eps
                self._rk_eps_sum = None
            assert self._rk_sample is not None
            x_from = self._rk_sample
        elif skip_prk and i == 1:
            # second call of the first step (improved Euler): ε' = (e(x'_{t-δ}, t - δ) + e(x_t, t)) / 2, from x_t
            assert self._euler_sample is not None
            eps_prime = (eps + self._eps_history[-1]) / 2
            x_from = self._euler_sample
            self._euler_sample = None
        else:
            # pseudo linear multistep: Adams-Bashforth over the last (up to 4) noise estimates
            self._eps_history.append(eps)
            eps_prime = _adams_bashforth(self._eps_history)
            if skip_prk and i == 0:
                self._euler_sample = sample
            x_from = sample

        # 3. the transfer φ(x_t, ε', t, t - δ), Eq. (9)
        prev_sample = c.x_coeff * x_from - c.eps_numerator * eps_prime / c.eps_denominator
        return prev_sample, x0


def _adams_bashforth(history: collections.deque[torch.Tensor]) -> torch.Tensor:
    """ε' from the last 1-4 noise estimates, newest last, with the Adams-Bashforth weights of that order.

    The 4th order is the PLMS rule ε' = (55 e_t - 59 e_{t+δ} + 37 e_{t+2δ} - 9 e_{t+3δ}) / 24; the lower orders
    start the multistep phase of ``skip_prk_steps``.
    """
    e = list(reversed(history))
    if len(e) == 1:
        return e[0]
    if len(e) == 2:
        return (3 * e[0] - e[1]) / 2
    if len(e) == 3:
        return (23 * e[0] - 16 * e[1] + 5 * e[2]) / 12
    if len(e) == 4:
        return (1 / 24) * (55 * e[0] - 59 * e[1] + 37 * e[2] - 9 * e[3])
    raise AssertionError(f"the noise history holds {len(e)} estimates; at most 4 are kept")


class _Coefficients(NamedTuple):
    """The scalars of one model call (float32 values as Python floats), by name."""

    x_coeff: float
    eps_numerator: float
    eps_denominator: float
