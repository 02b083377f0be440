"""What the multistep exponential-integrator samplers share (DPM-Solver++, UniPC): noise levels, λ, the history.

These samplers (Lu et al. 2022, "DPM-Solver++"; Zhao et al. 2023, "UniPC") step between noise levels rather than
timesteps. With α_t = sqrt(ᾱ_t), σ_t = sqrt(1 - ᾱ_t) and the half log-SNR λ_t = log(α_t / σ_t), each step goes from
level s to the next level t with h = λ_t - λ_s > 0, and combines the model's last few predictions (the history) with
weights that are functions of h and of the previous steps' h. This module owns:

* the schedule: diffusers' multistep spacing (n of n + 1 spaced points, the last point t = 0 being where the final
  step lands), or Karras et al. 2022's levels (``use_karras_sigmas``), then the final level (``final_sigmas_type``);
* per level, as float32 tensors computed with diffusers' operations: the VE level ``sigmas`` = σ_t / α_t, α_t, σ_t
  and λ_t (+inf at a final level 0); a subclass turns them into per-step weights in its ``set_timesteps``;
* the history of model predictions, cleared by ``set_timesteps`` and by a loop that starts part-way;
* the config keys these samplers share (:class:`MultistepSchedulerConfig`).

A subclass writes its config (adding its keys), its ``set_timesteps`` (``super().set_timesteps(...)`` first, then its
weights from ``self._alpha``, ``self._sigma``, ``self._lambda``), :meth:`MultistepScheduler._order_limit` and ``_step``
(push the prediction with ``self._history.append``, use ``min(len(self._history), self._highest_order[i])``).
Where a solver keeps its books differently (UniPC, as diffusers' UniPC does), it overrides the hook that holds that
piece: ``_karras_range``, ``_final_level``, ``_half_log_snr``, ``_check_spacing``, and
``_reset_history`` to clear more state; its config may reword the shared refusals (``_solver_order_rule``,
``_unsupported_switch_error``).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import torch

from ..errors import ConfigError, UnsupportedConfigError
from .base import Scheduler
from .config import SchedulerConfig, TimestepSpacing
from .config import check as check_key
from .sigmas import karras_sigmas, nonzero_alphas_cumprod, timesteps_from_sigmas, training_sigmas

__all__ = ["MultistepScheduler", "MultistepSchedulerConfig"]

# diffusers' keys for level schedules this package does not implement: accepted when off, refused when on
_UNSUPPORTED_SWITCHES = ("use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting")


@dataclasses.dataclass(frozen=True)
class MultistepSchedulerConfig(SchedulerConfig):
    """The keys that DPM-Solver++ and UniPC share (diffusers' names and defaults).

    Attributes:
        solver_order: How many past model predictions a step combines (1-3).
        thresholding: Dynamic thresholding of x̂_0 (Saharia et al. 2022), for pixel-space models.
        dynamic_thresholding_ratio: The percentile of |x̂_0| used as the threshold.
        sample_max_value: The largest threshold.
        lower_order_final: Lower the order of the last steps of a short schedule (the subclass says how).
        use_karras_sigmas: Step between the noise levels of Karras et al. 2022, Eq. (5) (ρ = 7), calling the model at
            the nearest training timestep; ``timestep_spacing`` is then not used.
        use_exponential_sigmas, use_beta_sigmas, use_flow_sigmas, use_dynamic_shifting: diffusers' other level
            schedules; accepted when off, refused when on (not implemented here).
        flow_shift, time_shift_type: Parameters of the flow-matching schedules (unused, as those are refused).
        final_sigmas_type: Where the last step lands: ``"zero"`` (the clean sample, default) or ``"sigma_min"`` (the
            noise level of timestep 0, which stays in the result).
        timestep_spacing: As for every scheduler, with the multistep default ``"linspace"``: the n timesteps are
            n of n + 1 evenly spread points, the dropped last one (t = 0) being where the final step lands.
    """

    solver_order: int = 2
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    lower_order_final: bool = True
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    use_flow_sigmas: bool = False
    flow_shift: float = 1.0
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"
    timestep_spacing: TimestepSpacing = "linspace"
    use_dynamic_shifting: bool = False
    time_shift_type: Literal["exponential"] = "exponential"

    #: The keys that are refused when True (a subclass may add its own).
    _unsupported_switches: ClassVar[tuple[str, ...]] = _UNSUPPORTED_SWITCHES
    #: What the error for a bad ``solver_order`` says is allowed (a subclass may word it its own way).
    _solver_order_rule: ClassVar[str] = "it must be 1, 2 or 3"

    def validate(self) -> None:
        super().validate()
        check_key(self.solver_order in (1, 2, 3), self, "solver_order", self._solver_order_rule)
        ratio = self.dynamic_thresholding_ratio
        check_key(0.0 < ratio <= 1.0, self, "dynamic_thresholding_ratio", "it must be in (0, 1]")
        check_key(self.sample_max_value > 0, self, "sample_max_value", "it must be > 0")
        for key in self._unsupported_switches:
            if getattr(self, key):
                raise self._unsupported_switch_error(key)

    def _unsupported_switch_error(self, key: str) -> ConfigError:
        """The error for ``key``, one of ``_unsupported_switches``, set to True (a subclass may word it its own way)."""
        return UnsupportedConfigError(
            f"{self._where()}config key {key!r} has value True, which {self._class_name} does not implement; "
            "set it to False (use_karras_sigmas=True is the supported alternative noise-level schedule)"
        )

    def _where(self) -> str:
        """The prefix of an error message: the file the config came from, if any."""
        return f"{self._source()}: " if self._source() else ""


class MultistepScheduler(Scheduler):
    """Base of the multistep σ-space samplers (see the module docstring); not a sampler itself.

    After :meth:`set_timesteps`, ``sigmas`` holds the N + 1 VE noise levels σ_t / α_t of the N model calls and the
    final level (float32, diffusers' attribute), and ``_alpha``, ``_sigma``, ``_lambda`` the matching α_t, σ_t, λ_t.
    """

    config: MultistepSchedulerConfig

    # ------------------------------------------------------------------------------------------------ the schedule
    def _training_sigmas(self) -> np.ndarray:
        """σ_t / α_t = sqrt((1 - ᾱ_t) / ᾱ_t) of the T training timesteps, float32 (increasing in t), as diffusers'
        DPM-Solver++ and UniPC compute them (:func:`~ddpm.schedulers.sigmas.training_sigmas`: torch's rounding, and a
        zero-SNR ᾱ of 0 read as 2^-24, so the first level is about 4096, not ∞). ``alphas_cumprod`` keeps its 0:
        ``add_noise`` at that timestep gives pure noise."""
        return training_sigmas(self.alphas_cumprod)

    def _last_timestep(self) -> int:
        """One past the largest timestep the spacing may pick: T, less the timesteps whose λ_t is below the config's
        ``lambda_min_clipped`` where it has that key (DPM-Solver's, for cosine schedules)."""
        t = self.config.num_train_timesteps
        clip = getattr(self.config, "lambda_min_clipped", -math.inf)
        if clip == -math.inf:
            return t
        alpha_bar = nonzero_alphas_cumprod(self.alphas_cumprod)  # λ of a zero-SNR ᾱ_{T-1}: that of 2^-24, not -∞
        lam = torch.log(alpha_bar.sqrt()) - torch.log((1 - alpha_bar).sqrt())  # λ_t, decreasing in t
        return t - int(torch.searchsorted(torch.flip(lam, [0]), clip))

    def _spaced_timesteps(self, num_inference_steps: int) -> list[int]:
        return self._levels(num_inference_steps)[0]

    def _levels(self, n: int) -> tuple[list[int], np.ndarray]:
        """(the n model-call timesteps, their n noise levels σ_t / α_t in float64) of ``set_timesteps(n)``."""
        training_sigmas = self._training_sigmas()
        if self.config.use_karras_sigmas:
            levels = karras_sigmas(*self._karras_range(training_sigmas), n)
            # the model is called at the training timestep nearest to each level (rounded for every beta schedule)
            fractional = timesteps_from_sigmas(levels, np.log(training_sigmas))
            return np.round(fractional).astype(np.int64).tolist(), levels
        timesteps = self._multistep_spacing(n)
        return timesteps, np.interp(timesteps, np.arange(len(training_sigmas)), training_sigmas)

    def _karras_range(self, training_sigmas: np.ndarray) -> tuple[float, float]:
        """(σ_min, σ_max) of the Karras levels: the training schedule's smallest and largest level."""
        return float(training_sigmas[0]), float(training_sigmas[-1])

    def _multistep_spacing(self, n: int) -> list[int]:
        """The multistep spacings: n of n + 1 points spread over [0, last) by ``timestep_spacing``, dropping t = 0.

        Raises:
            ValueError: n is too large for the usable timesteps (two would coincide).
        """
        cfg = self.config
        t, last, spacing = cfg.num_train_timesteps, self._last_timestep(), cfg.timestep_spacing
        if spacing == "linspace":
            steps = np.linspace(0, last - 1, n + 1).round()[::-1][:-1].astype(np.int64)
        elif spacing == "leading":
            steps = (np.arange(0, n + 1) * (last // (n + 1)))[::-1][:-1].astype(np.int64) + cfg.steps_offset
        else:  # trailing; like spaced_timesteps, never the spurious extra entry of a floating-point arange
            steps = np.round(np.arange(last, 0, -t / n))[:n].astype(np.int64) - 1
        values = steps.tolist()
        self._check_spacing(n, values, last)
        return values

    def _check_spacing(self, n: int, values: list[int], last: int) -> None:
        """Refuse the n timesteps ``values`` of :meth:`_multistep_spacing` (spread over [0, ``last``)) where two
        coincide or one leaves [0, T).

        Raises:
            ValueError: n is too large for the usable timesteps.
        """
        cfg = self.config
        t, spacing = cfg.num_train_timesteps, cfg.timestep_spacing
        if not values or len(set(values)) < len(values) or min(values) < 0 or max(values) >= t:
            offset = cfg.steps_offset if spacing == "leading" else 0
            most = last if spacing == "trailing" else max(last - 1 - offset, 0)
            clash = "two would coincide" if not values or max(values) < t else f"one would pass timestep {t - 1}"
            raise ValueError(
                f"num_inference_steps={n} is too large for {type(self).__name__} with timestep_spacing={spacing!r} "
                f"and steps_offset={cfg.steps_offset}: it spreads n + 1 points over the {last} usable training "
                f"timesteps (the last point, t = 0, is where the final step lands), so {clash}; "
                f"use at most {most} steps"
            )

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """As :meth:`Scheduler.set_timesteps`; also computes the noise levels of the schedule and clears the history.

        ``set_timesteps(n)`` gives n model calls. The levels are those of the chosen timesteps, or Karras's with
        ``use_karras_sigmas`` (custom ``timesteps`` always use their own levels), followed by the final level.
        """
        super().set_timesteps(num_inference_steps, device, timesteps)
        assert self._schedule is not None
        cfg = self.config
        if timesteps is None and num_inference_steps is not None:
            levels = self._levels(int(num_inference_steps))[1]
        else:
            levels = np.interp(self._schedule, np.arange(cfg.num_train_timesteps), self._training_sigmas())
        final = self._final_level(levels) if cfg.final_sigmas_type == "sigma_min" else 0.0
        # One entry per level i = 0..N (N model calls, then the final level), float32 as diffusers computes them:
        # - sigmas -> σ_t / α_t, the VE noise level
        # - _alpha -> α_t = 1 / sqrt(1 + (σ_t / α_t)²)
        # - _sigma -> σ_t = (σ_t / α_t) α_t
        # - _lambda -> λ_t = log α_t - log σ_t (+inf at a final level 0)
        self.sigmas = torch.from_numpy(np.concatenate([levels, [final]]).astype(np.float32))
        self._alpha = 1 / ((self.sigmas**2 + 1) ** 0.5)
        self._sigma = self.sigmas * self._alpha
        self._lambda = self._half_log_snr(self._alpha, self._sigma)
        # x_0 / ε conversions at the step's own level (StepInput.predicted_x0 / predicted_eps)
        self._sqrt_alpha_bar = self._alpha[:-1].tolist()
        self._sqrt_one_minus_alpha_bar = self._sigma[:-1].tolist()
        self._highest_order = [self._order_limit(i) for i in range(len(self._schedule))]
        self._reset_history()

    def _final_level(self, levels: np.ndarray) -> float:
        """The level of ``final_sigmas_type="sigma_min"`` after the model calls at ``levels``: that of timestep 0."""
        alpha_bar_0 = self.alphas_cumprod[0]
        return float(((1 - alpha_bar_0) / alpha_bar_0) ** 0.5)

    def _half_log_snr(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """λ = log α - log σ of every level (float32, +inf where σ = 0), computed on the whole tensor at once."""
        return torch.log(alpha) - torch.log(sigma)

    def _step_sizes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, h_0, h_1) of every step i: h = λ_{i+1} - λ_i, and the two steps before it (NaN where there are none)."""
        h = self._lambda[1:] - self._lambda[:-1]
        nan = torch.full((2,), math.nan)
        h0 = torch.cat([nan[:1], h[:-1]])
        h1 = torch.cat([nan, h[:-2]])[: len(h)]
        return h, h0, h1

    def _order_limit(self, i: int) -> int:
        """The highest order step ``i`` of the schedule may use (the history may allow less); subclasses lower it
        for the final steps."""
        return self.config.solver_order

    # ------------------------------------------------------------------------------------------------ the history
    def _reset_history(self) -> None:
        # the model predictions of the last solver_order steps, newest last
        self._history: collections.deque[torch.Tensor] = collections.deque(maxlen=self.config.solver_order)

    def _start_at(self, i: int) -> None:
        """A loop that starts at step ``i`` (image-to-image) starts a fresh history: its first steps use the lower
        orders, as at the start of the schedule."""
        self._reset_history()
