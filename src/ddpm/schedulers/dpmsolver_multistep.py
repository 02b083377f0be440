"""DPM-Solver++ multistep sampling (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", arXiv:2211.01095), with its SDE variant.

Notation (the paper's, Sec. 2-4): the forward process is x_t = α_t x_0 + σ_t ε with α_t = sqrt(ᾱ_t) and
σ_t = sqrt(1 - ᾱ_t); λ_t = log(α_t / σ_t) is the half log-SNR, which decreases with t. The sampler steps from
s = t_{i} to t = t_{i+1} (the next, less noisy, level) with h = λ_t - λ_s > 0. The exact solution of the diffusion
ODE written with the data-prediction model x_θ is

    x_t = (σ_t / σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^λ x_θ(x_λ, λ) dλ                     (DPM-Solver++, Eq. (8))

and of the reverse diffusion SDE (the "SDE-DPM-Solver++" of diffusers, Lu et al.'s follow-up)

    x_t = (σ_t / σ_s) e^{-h} x_s + 2 α_t ∫_{λ_s}^{λ_t} e^{-2(λ_t - λ)} x_θ dλ + σ_t sqrt(1 - e^{-2h}) z.

Expanding x_θ in λ around λ_s with the last 1, 2 or 3 data predictions (the multistep idea: no extra model calls)
gives the three orders:

* 1st order (DPM-Solver++(1), which is DDIM): x_t = (σ_t/σ_s) x_s + α_t (1 - e^{-h}) D_0 with D_0 = x_θ(x_s, s).
* 2nd order (DPM-Solver++(2M), Algorithm 2): with h_0 = λ_s - λ_{s'} the previous step and r_0 = h_0 / h,
  D_1 = (D_0 - x_θ(x_{s'}, s')) / r_0 ≈ h x_θ'; the "midpoint" variant adds α_t (1 - e^{-h}) D_1 / 2 (Algorithm 2),
  the "heun" variant α_t ((e^{-h} - 1) / h + 1) D_1 (the exact weight of the linear Taylor term).
* 3rd order (DPM-Solver++(3M), the authors' code): two divided differences D1_0, D1_1 of the last three
  predictions, D_1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1) and D_2 = (D1_0 - D1_1) / (r_0 + r_1), added with the
  weights α_t ((e^{-h} - 1) / h + 1) and α_t (1/2 - (e^{-h} - 1 + h) / h²).

Every weight is a function of λ and α at three or four consecutive levels, so all of them are computed once per
schedule in :meth:`DPMSolverMultistepScheduler.set_timesteps` (float32, with diffusers' operations) and read as
Python floats by ``step()``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch

from ..errors import ConfigError, UnsupportedConfigError
from .base import StepInput, per_step
from .config import check as check_key
from .ddpm import VARIANCE_TYPES
from .math import dynamic_threshold
from .multistep import MultistepScheduler, MultistepSchedulerConfig

__all__ = ["ALGORITHM_TYPES", "DPMSolverMultistepScheduler", "DPMSolverMultistepSchedulerConfig"]

AlgorithmType = Literal["dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"]
#: The algorithm types this package implements (diffusers deprecates the other two, ε-space ones).
ALGORITHM_TYPES: tuple[str, ...] = ("dpmsolver++", "sde-dpmsolver++")
# diffusers maps these foreign values (DEIS's algorithm, UniPC's and DEIS's solver types) to its own, so that a DEIS or
# UniPC config loads into DPM-Solver; so do we.
_ALGORITHM_ALIASES = {"deis": "dpmsolver++"}
_SOLVER_ALIASES = {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}
_LOWER_ORDER_FINAL_BELOW = 15  # lower_order_final applies to schedules of fewer steps (diffusers' rule)


@dataclasses.dataclass(frozen=True)
class DPMSolverMultistepSchedulerConfig(MultistepSchedulerConfig):
    """Config of :class:`DPMSolverMultistepScheduler` (``scheduler_config.json``, diffusers key names and defaults).

    The keys shared with UniPC (``solver_order``, thresholding, ``lower_order_final``, ``use_karras_sigmas``,
    ``final_sigmas_type``, ``timestep_spacing`` defaulting to ``"linspace"``, the refused level schedules) are
    described in :class:`~ddpm.schedulers.multistep.MultistepSchedulerConfig`.

    Attributes:
        algorithm_type: ``"dpmsolver++"`` (the ODE, deterministic) or ``"sde-dpmsolver++"`` (the reverse SDE, one
            noise draw per step). diffusers' deprecated ε-space ``"dpmsolver"`` and ``"sde-dpmsolver"`` are refused;
            ``"deis"`` reads as ``"dpmsolver++"`` (as in diffusers).
        solver_type: How the 2nd-order step weights its difference term: ``"midpoint"`` (Algorithm 2) or ``"heun"``
            (the exact Taylor weight). UniPC's ``"bh1"``/``"bh2"`` and ``"logrho"`` read as ``"midpoint"``.
        lower_order_final: With fewer than 15 steps, the last step uses order 1 and the one before at most 2.
        euler_at_final: Always take the last step with order 1.
        use_lu_lambdas: diffusers' λ-uniform levels; accepted when off, refused when on.
        lambda_min_clipped: Leave out the timesteps whose λ_t is below this value (cosine schedules); -inf keeps all.
        variance_type: ``"learned"``/``"learned_range"`` for a model whose output has twice the sample's channels
            (the second half is dropped); other values are ignored, as in diffusers.
    """

    _class_name: ClassVar[str] = "DPMSolverMultistepScheduler"

    algorithm_type: AlgorithmType = "dpmsolver++"
    solver_type: Literal["midpoint", "heun"] = "midpoint"
    euler_at_final: bool = False
    use_lu_lambdas: bool = False
    lambda_min_clipped: Any = -math.inf  # a float; -inf (JSON -Infinity) is diffusers' default
    variance_type: str | None = None

    _unsupported_switches: ClassVar[tuple[str, ...]] = (
        *MultistepSchedulerConfig._unsupported_switches,
        "use_lu_lambdas",
    )

    def __post_init__(self) -> None:
        for key, aliases in (("algorithm_type", _ALGORITHM_ALIASES), ("solver_type", _SOLVER_ALIASES)):
            value = getattr(self, key)
            if isinstance(value, str) and value in aliases:
                object.__setattr__(self, key, aliases[value])
        super().__post_init__()

    def validate(self) -> None:
        where = self._where()
        if self.algorithm_type not in ALGORITHM_TYPES:
            raise UnsupportedConfigError(
                f"{where}config key 'algorithm_type' has value {self.algorithm_type!r}, which diffusers deprecates and "
                f"this package does not implement; use one of {', '.join(map(repr, ALGORITHM_TYPES))} (the same "
                "solver written with the data prediction x_0, which works for every prediction_type)"
            )
        super().validate()
        clip = self.lambda_min_clipped
        if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or math.isnan(clip):
            raise ConfigError(f"{where}config key 'lambda_min_clipped' has value {clip!r}; expected a number (or -inf)")
        object.__setattr__(self, "lambda_min_clipped", float(clip))
        allowed = (None, *VARIANCE_TYPES)
        check_key(self.variance_type in allowed, self, "variance_type", f"expected one of {allowed}")


_DEFAULTS = DPMSolverMultistepSchedulerConfig  # the constructor's defaults are the config's


class _Coefficients(NamedTuple):
    """The scalars of step i (s = level i, t = level i + 1), float32 values as Python floats (NaN where undefined)."""

    x_coeff: float  # weight of x_s: σ_t / σ_s (ODE), σ_t / σ_s e^{-h} (SDE)
    d0: float  # weight of D_0
    d1_midpoint: float  # weight of D_1, midpoint variant (2nd order)
    d1_heun: float  # weight of D_1, heun variant (2nd order) and 3rd order
    d2: float  # weight of D_2 (3rd order)
    noise: float  # weight of z (SDE): σ_t sqrt(1 - e^{-2h}); 0 for the ODE
    r0: float  # h_0 / h
    r1: float  # h_1 / h


class DPMSolverMultistepScheduler(MultistepScheduler):
    """DPM-Solver++ (multistep): good samples in 10-25 model calls, one call per timestep.

    Drop-in for diffusers' class of the same name: ``DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)``
    keeps the model's noise schedule. ``solver_order=2`` with ``algorithm_type="dpmsolver++"`` is the "DPM++ 2M"
    sampler, ``solver_order=3`` "DPM++ 3M", ``algorithm_type="sde-dpmsolver++"`` the "DPM++ 2M SDE" (stochastic:
    pass a seeded ``generator`` to ``step()`` for reproducible images; drawn as diffusers draws it).

    ``len(timesteps)`` is the number of model calls. The multistep history starts afresh at ``set_timesteps`` and when
    a loop starts part-way (``for t in scheduler.timesteps[k:]``, image-to-image): the first steps of such a loop use
    the lower orders, as at the start.

    Differences from diffusers 0.42.1 (see docs/schedulers.md):

    * ``use_karras_sigmas`` rounds the model's timestep to the nearest training timestep for every beta schedule
      (diffusers truncates for ``squaredcos_cap_v2``) and keeps every Karras level even where two levels share a
      timestep; diffusers' step index then drifts and it fails with an IndexError (diffusers#12771).
    * ``sde-dpmsolver++`` with ``solver_order=3``: the D_2 weight is α_t ((1 - e^{-2h} - 2h) / (2h)² + 1/2), the
      SDE counterpart of the ODE's weight; diffusers subtracts the 1/2 (diffusers#9104), a weight that does not
      vanish as h → 0, which makes the third-order SDE step inconsistent.
    * ``trailing`` spacing never yields diffusers' spurious timestep -1 (62 step counts such as 61; see
      :func:`~ddpm.schedulers.math.spaced_timesteps`), and impossible step counts are refused instead of repeating
      timesteps.
    """

    config_class: ClassVar[type[DPMSolverMultistepSchedulerConfig]] = DPMSolverMultistepSchedulerConfig
    config: DPMSolverMultistepSchedulerConfig

    def __init__(
        self,
        num_train_timesteps: int = _DEFAULTS.num_train_timesteps,
        beta_start: float = _DEFAULTS.beta_start,
        beta_end: float = _DEFAULTS.beta_end,
        beta_schedule: str = _DEFAULTS.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _DEFAULTS.trained_betas,
        solver_order: int = _DEFAULTS.solver_order,
        prediction_type: str = _DEFAULTS.prediction_type,
        thresholding: bool = _DEFAULTS.thresholding,
        dynamic_thresholding_ratio: float = _DEFAULTS.dynamic_thresholding_ratio,
        sample_max_value: float = _DEFAULTS.sample_max_value,
        algorithm_type: str = _DEFAULTS.algorithm_type,
        solver_type: str = _DEFAULTS.solver_type,
        lower_order_final: bool = _DEFAULTS.lower_order_final,
        euler_at_final: bool = _DEFAULTS.euler_at_final,
        use_karras_sigmas: bool = _DEFAULTS.use_karras_sigmas,
        use_exponential_sigmas: bool = _DEFAULTS.use_exponential_sigmas,
        use_beta_sigmas: bool = _DEFAULTS.use_beta_sigmas,
        use_lu_lambdas: bool = _DEFAULTS.use_lu_lambdas,
        use_flow_sigmas: bool = _DEFAULTS.use_flow_sigmas,
        flow_shift: float = _DEFAULTS.flow_shift,
        final_sigmas_type: str = _DEFAULTS.final_sigmas_type,
        lambda_min_clipped: float = _DEFAULTS.lambda_min_clipped,
        variance_type: str | None = _DEFAULTS.variance_type,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        steps_offset: int = _DEFAULTS.steps_offset,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        use_dynamic_shifting: bool = _DEFAULTS.use_dynamic_shifting,
        time_shift_type: str = _DEFAULTS.time_shift_type,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``config`` is a config key, described in :class:`DPMSolverMultistepSchedulerConfig`
        and :class:`~ddpm.schedulers.config.SchedulerConfig`; its default is the config's.

        Args:
            config: Any scheduler's config, a diffusers config or a dict (see :class:`Scheduler`).
            **kwargs: Config keys of the other schedulers of the package, carried along.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid (:class:`~ddpm.UnsupportedConfigError` for diffusers values that are not
                implemented here).
        """
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """As :meth:`MultistepScheduler.set_timesteps` (n model calls for ``set_timesteps(n)``); also computes the
        weights of every step (module docstring) and clears the multistep history."""
        super().set_timesteps(num_inference_steps, device, timesteps)
        # the step from s = level i to t = level i + 1; h_0, h_1: the two steps before it
        h, h0, h1 = self._step_sizes()
        alpha_t, sigma_t, sigma_s = self._alpha[1:], self._sigma[1:], self._sigma[:-1]
        if self.config.algorithm_type == "dpmsolver++":
            e = torch.exp(-h)
            x_coeff = sigma_t / sigma_s
            d0 = -(alpha_t * (e - 1.0))  # α_t (1 - e^{-h})
            d1_heun = alpha_t * ((e - 1.0) / h + 1.0)
            d2 = -(alpha_t * ((e - 1.0 + h) / h**2 - 0.5))
            noise = torch.zeros_like(h)
        else:  # sde-dpmsolver++: the same expansion of the SDE's integral, whose kernel is e^{-2(λ_t - λ)}
            e2 = torch.exp(-2.0 * h)
            x_coeff = sigma_t / sigma_s * torch.exp(-h)
            d0 = alpha_t * (1 - e2)
            d1_heun = alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0)
            d2 = alpha_t * ((1.0 - e2 - 2.0 * h) / (2.0 * h) ** 2 + 0.5)
            noise = sigma_t * torch.sqrt(1.0 - e2)
        self._coefficients = per_step(
            _Coefficients,
            x_coeff=x_coeff,
            d0=d0,
            d1_midpoint=0.5 * d0,
            d1_heun=d1_heun,
            d2=d2,
            noise=noise,
            r0=h0 / h,
            r1=h1 / h,
        )

    def _order_limit(self, i: int) -> int:
        """The highest order step ``i`` may use: lower at the end of short schedules (``lower_order_final``),
        order 1 for a last step that lands at σ = 0 (higher-order weights are undefined there) or ``euler_at_final``."""
        cfg = self.config
        assert self._schedule is not None
        n = len(self._schedule)
        short = cfg.lower_order_final and n < _LOWER_ORDER_FINAL_BELOW
        if i == n - 1 and (cfg.euler_at_final or short or cfg.final_sigmas_type == "zero"):
            return 1
        if i == n - 2 and short:
            return 2
        return cfg.solver_order

    # ------------------------------------------------------------------------------------------------------ step
    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, c = self.config, self._coefficients[step.i]
        # 1. the data prediction x_θ(x_s, s) (thresholded for pixel models), pushed onto the history
        x0 = step.predicted_x0()
        if cfg.thresholding:
            x0 = dynamic_threshold(x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
        self._history.append(x0)
        order = min(len(self._history), self._highest_order[step.i])

        # 2. the multistep update from x_s to x_t (module docstring); m0 is the newest prediction
        m = list(reversed(self._history))
        prev_sample = c.x_coeff * step.sample + c.d0 * m[0]
        if order == 2:  # DPM-Solver++(2M)
            d1 = (1.0 / c.r0) * (m[0] - m[1])
            weight = c.d1_midpoint if cfg.solver_type == "midpoint" else c.d1_heun
            prev_sample = prev_sample + weight * d1
        elif order == 3:  # DPM-Solver++(3M)
            d1_0, d1_1 = (1.0 / c.r0) * (m[0] - m[1]), (1.0 / c.r1) * (m[1] - m[2])
            d1 = d1_0 + (c.r0 / (c.r0 + c.r1)) * (d1_0 - d1_1)
            d2 = (1.0 / (c.r0 + c.r1)) * (d1_0 - d1_1)
            prev_sample = prev_sample + c.d1_heun * d1 + c.d2 * d2

        # 3. the SDE's fresh noise, drawn every step (also where its weight is 0) in float32, as diffusers draws it
        if cfg.algorithm_type == "sde-dpmsolver++":
            z = dataclasses.replace(step, noise_dtype=torch.float32).noise()
            prev_sample = prev_sample + c.noise * z
        return prev_sample, x0
