"""UniPC sampling (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models").

A multistep solver of the diffusion ODE in λ = log(α_t / σ_t) (the half log-SNR of DPM-Solver), exact in the linear
part and a polynomial in λ through the last model outputs for the rest. Each model call is used twice:

* **UniC** (the corrector, Alg. 1): the output m_i at the new point x̃_{t_i} improves x̃_{t_i} itself by one order,
  with no extra model call;
* **UniP** (the predictor, Alg. 2): the corrected x_{t_i} and the last p outputs give x̃_{t_{i+1}}.

Notation (the paper's; the code names follow it):

* σ_i: the VE noise level of step i (:mod:`ddpm.schedulers.sigmas`); α_i = 1 / sqrt(1 + σ_i²), s_i = σ_i α_i (the
  VP scale and noise level, α_t and σ_t of the paper), λ_i = log(α_i / s_i) = -log σ_i;
* h = λ_{i+1} - λ_i, and r_k = (λ_{i-k} - λ_i) / h for the earlier outputs;
* m_i: the model output converted to x̂_0 (data prediction, ``predict_x0=True``, the paper's UniPC with x_θ) or
  to ε̂ (noise prediction), and D_k = (m_{i-k} - m_i) / r_k;
* ĥ = -h (data prediction) or h (noise prediction), and B(ĥ) = ĥ (``bh1``) or e^ĥ - 1 (``bh2``);
* the p-th order update (data prediction; noise prediction swaps α and s):

      x_{i+1} = (s_{i+1} / s_i) x_i - α_{i+1} (e^ĥ - 1) m_i - α_{i+1} B(ĥ) Σ_k a_k D_k

  with the weights a solving R_p a = g_p / B(ĥ): R_p[l, k] = r_k^l and g_p[l] = (l+1)! ĥ φ_{l+2}(ĥ), where
  ĥ φ_{l+2}(ĥ) = (e^ĥ - Σ_{j ≤ l+1} ĥ^j / j!) / ĥ^{l+1}. The predictor uses the p - 1 earlier outputs (a_1 = 1/2
  for p = 2), the corrector also the new output m_{i+1} at r = 1 (a_1 = 1/2 for p = 1), as in the authors' code.

Every coefficient is a host scalar computed once per schedule (float64 from the float32 σ), so ``step()`` reads no
tensor and runs a few fused multiply-adds.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch

from ..config import check
from ..errors import ConfigError
from .base import Scheduler, StepInput
from .config import SchedulerConfig, TimestepSpacing
from .math import dynamic_threshold, predict_eps, predict_x0, spaced_timesteps
from .sigmas import karras_sigmas, sigmas_from_alphas_cumprod, timesteps_from_sigmas

__all__ = ["UniPCMultistepScheduler", "UniPCMultistepSchedulerConfig"]

SolverType = Literal["bh1", "bh2"]
FinalSigmasType = Literal["zero", "sigma_min"]
#: solver_type values of other multistep solvers (DPM-Solver's) that UniPC reads as ``bh2``, as diffusers does.
_SOLVER_TYPE_ALIASES = ("midpoint", "heun", "logrho")
_MAX_ORDER = 3
#: diffusers' keys for noise schedules this scheduler does not implement, refused when turned on.
_UNSUPPORTED_SWITCHES = ("use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas", "use_dynamic_shifting")


@dataclasses.dataclass(frozen=True)
class UniPCMultistepSchedulerConfig(SchedulerConfig):
    """Config of :class:`UniPCMultistepScheduler` (``scheduler_config.json``, diffusers key names and defaults).

    Attributes:
        timestep_spacing: As for every scheduler, but ``linspace`` by default (diffusers' UniPC default).
        solver_order: p, the order of the predictor UniP (1, 2 or 3); the corrector raises it by one. 2 for
            guided sampling, 3 for unconditional models.
        thresholding: Dynamic thresholding of x̂_0 (Saharia et al. 2022); only with ``predict_x0``.
        dynamic_thresholding_ratio: The percentile of |x̂_0| used as the threshold.
        sample_max_value: The largest threshold.
        predict_x0: Solve with the data prediction x̂_0 (True, the paper's recommendation) or the noise ε̂.
        solver_type: B(h) of the update: ``bh1`` (B(h) = h, for fewer than about 10 steps) or ``bh2``
            (B(h) = e^h - 1). DPM-Solver's ``midpoint``, ``heun`` and ``logrho`` are read as ``bh2``.
        lower_order_final: Lower the order over the last steps (p ≤ steps left), steadier for few steps.
        disable_corrector: Positions in ``timesteps`` whose predicted sample is not corrected by the next call.
        solver_p: diffusers' "another scheduler as the predictor"; only None (not supported).
        use_karras_sigmas: Step between the noise levels of Karras et al. 2022, Eq. (5), instead of ``timesteps``'.
        sigma_min: The smallest Karras level (None: the training schedule's σ_0).
        sigma_max: The largest Karras level (None: σ_{T-1}).
        final_sigmas_type: Where the last step goes: σ = 0 (``zero``, a clean sample) or the smallest level
            (``sigma_min``).
        use_exponential_sigmas, use_beta_sigmas, use_flow_sigmas, flow_shift, use_dynamic_shifting,
        time_shift_type, shift_terminal: diffusers' other noise schedules; accepted at their defaults, refused when
            turned on.
    """

    _class_name: ClassVar[str] = "UniPCMultistepScheduler"

    timestep_spacing: TimestepSpacing = "linspace"
    solver_order: int = 2
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    predict_x0: bool = True
    solver_type: str = "bh2"
    lower_order_final: bool = True
    disable_corrector: tuple[int, ...] = ()
    solver_p: None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    use_flow_sigmas: bool = False
    flow_shift: float = 1.0
    final_sigmas_type: FinalSigmasType = "zero"
    use_dynamic_shifting: bool = False
    time_shift_type: Literal["exponential", "linear"] = "exponential"
    sigma_min: float | None = None
    sigma_max: float | None = None
    shift_terminal: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.solver_type in _SOLVER_TYPE_ALIASES:  # a DPM-Solver config: diffusers switches to bh2 too
            object.__setattr__(self, "solver_type", "bh2")

    def validate(self) -> None:
        super().validate()
        check = functools.partial(_check, config=self)
        check(
            self.solver_type in ("bh1", "bh2", *_SOLVER_TYPE_ALIASES),
            "solver_type",
            "use 'bh1' (B(h) = h, for very few steps) or 'bh2' (B(h) = e^h - 1)",
        )
        check(1 <= self.solver_order <= _MAX_ORDER, "solver_order", f"use 1 to {_MAX_ORDER}")
        check(all(i >= 0 for i in self.disable_corrector), "disable_corrector", "positions must be 0 or more")
        check(0.0 < self.dynamic_thresholding_ratio <= 1.0, "dynamic_thresholding_ratio", "it must be in (0, 1]")
        check(self.sample_max_value > 0, "sample_max_value", "it must be > 0")
        check(self.flow_shift > 0, "flow_shift", "it must be > 0")
        for key in ("sigma_min", "sigma_max"):
            value = getattr(self, key)
            check(value is None or value > 0, key, "it must be > 0 (or null: the training schedule's)")
        if self.sigma_min is not None and self.sigma_max is not None:
            check(self.sigma_min < self.sigma_max, "sigma_min", f"it must be below sigma_max={self.sigma_max}")
        for key in _UNSUPPORTED_SWITCHES:
            check(
                not getattr(self, key),
                key,
                "UniPCMultistepScheduler here implements the Karras levels (use_karras_sigmas) and the training "
                "schedule's levels only; set it to false",
            )
        check(
            self.shift_terminal is None,
            "shift_terminal",
            "it only applies to flow-matching sigmas (use_flow_sigmas), which are not supported; set it to null",
        )


def _check(condition: bool, key: str, allowed: str, *, config: UniPCMultistepSchedulerConfig) -> None:
    check(condition, config, key, allowed)


_DEFAULTS = UniPCMultistepSchedulerConfig  # the constructor's defaults are the config's


class UniPCMultistepScheduler(Scheduler):
    """The UniPC sampler: deterministic, multistep, one model call per timestep; good samples in 5-10 calls.

    ``len(timesteps)`` is the number of model calls n: the first n points of n + 1 evenly spaced ones (``linspace``,
    ``leading``, ``trailing``: diffusers' grids), the last step going from the last timestep to σ = 0 (or σ_min). With
    ``use_karras_sigmas`` the model is called at the training timesteps nearest the Karras levels (rounded; at many
    steps two levels may round to one timestep).

    ``step()`` takes the same arguments as every scheduler's, ``generator`` included (diffusers' UniPC has no such
    parameter, so its DDPMPipeline cannot run it); UniPC draws no noise and ignores it. The multistep history and the
    corrector's pending sample are reset by :meth:`set_timesteps` and whenever a loop starts part-way
    (``for t in scheduler.timesteps[k:]``: the first steps then warm up at lower order).

    Differences from diffusers 0.42.1 (docs/schedulers.md has the table):

    * The step into σ = 0 (``final_sigmas_type="zero"``) is written in the closed form it has there, x̂_0 itself,
      and is always first order: a polynomial in λ cannot be extrapolated to λ = ∞. diffusers evaluates the general
      formula there and returns NaN for ``bh1`` (B(h)·0 = ∞·0), for ``predict_x0=False`` (σ_t (e^h - 1) = 0·∞) and
      with ``lower_order_final=False`` (D_k / r_k with r_k = 0).
    * ``step()`` returns ``pred_original_sample`` (x̂_0 of this model call) and accepts ``generator``.
    * ``solver_p`` and the exponential / beta / flow noise schedules are refused with a ConfigError.
    """

    config_class: ClassVar[type[UniPCMultistepSchedulerConfig]] = UniPCMultistepSchedulerConfig
    config: UniPCMultistepSchedulerConfig

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
        predict_x0: bool = _DEFAULTS.predict_x0,
        solver_type: str = _DEFAULTS.solver_type,
        lower_order_final: bool = _DEFAULTS.lower_order_final,
        disable_corrector: Sequence[int] = _DEFAULTS.disable_corrector,
        solver_p: Any = _DEFAULTS.solver_p,
        use_karras_sigmas: bool = _DEFAULTS.use_karras_sigmas,
        use_exponential_sigmas: bool = _DEFAULTS.use_exponential_sigmas,
        use_beta_sigmas: bool = _DEFAULTS.use_beta_sigmas,
        use_flow_sigmas: bool = _DEFAULTS.use_flow_sigmas,
        flow_shift: float = _DEFAULTS.flow_shift,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        steps_offset: int = _DEFAULTS.steps_offset,
        final_sigmas_type: str = _DEFAULTS.final_sigmas_type,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        use_dynamic_shifting: bool = _DEFAULTS.use_dynamic_shifting,
        time_shift_type: str = _DEFAULTS.time_shift_type,
        sigma_min: float | None = _DEFAULTS.sigma_min,
        sigma_max: float | None = _DEFAULTS.sigma_max,
        shift_terminal: float | None = _DEFAULTS.shift_terminal,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``config`` is a config key, described in :class:`UniPCMultistepSchedulerConfig` and
        :class:`~ddpm.schedulers.config.SchedulerConfig`; its default is the config's. Keys the caller gives
        override ``config``.

        Args:
            config: Any scheduler's config, a diffusers config or a dict (see :class:`Scheduler`).
            **kwargs: Config keys of the other schedulers of the package, carried along.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid or not supported (``solver_p``, exponential / beta / flow sigmas).
        """
        if solver_p is not None:
            raise ConfigError(
                f"solver_p={type(solver_p).__name__}(...) is not supported: UniPCMultistepScheduler uses its own "
                "predictor UniP; leave solver_p unset (None)"
            )
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)

    # ------------------------------------------------------------------------------------------------ the schedule
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """As :meth:`Scheduler.set_timesteps`; also picks each call's noise level σ_i and computes the UniP / UniC
        coefficients, and resets the multistep history.

        With ``num_inference_steps`` the timesteps follow diffusers' UniPC grids (or the Karras levels); a custom
        list of ``timesteps`` is used as given, each at its training noise level (not with ``use_karras_sigmas``).

        Raises:
            ValueError: As :meth:`Scheduler.set_timesteps`; also for custom ``timesteps`` with
                ``use_karras_sigmas``, a ``leading`` grid that does not fit (n too large, or ``steps_offset``), and
                a schedule whose noise level does not decrease (two steps at one level).
        """
        if timesteps is not None and self.config.use_karras_sigmas:
            raise ValueError(
                "custom timesteps cannot be combined with use_karras_sigmas=True (the Karras levels choose the "
                "timesteps); pass num_inference_steps, or use a config with use_karras_sigmas=False"
            )
        self._custom = timesteps is not None
        self._planned_sigmas: list[float] | None = None
        super().set_timesteps(num_inference_steps, device, timesteps)
        assert self._schedule is not None
        self._spaced = list(self._schedule)  # a part-way start (_join_schedule_at) continues on this schedule
        if self._planned_sigmas is None:  # custom timesteps: their own training levels
            self._planned_sigmas = self._training_sigmas()[self._schedule].tolist() + [self._final_sigma()]
        self._sigmas: list[float] = self._planned_sigmas
        self._check_decreasing()
        self._rows = self._coefficient_table()
        self._reset_multistep_state()

    def _model_call_timesteps(self, spaced: list[int]) -> list[int]:
        """UniPC's timesteps for ``set_timesteps(n)`` (n = len(spaced)); custom timesteps pass unchanged."""
        if self._custom:
            return spaced
        n, t = len(spaced), self.config.num_train_timesteps
        training = self._training_sigmas()
        if self.config.use_karras_sigmas:
            sigma_min = self.config.sigma_min if self.config.sigma_min is not None else float(training[0])
            sigma_max = self.config.sigma_max if self.config.sigma_max is not None else float(training[-1])
            levels = karras_sigmas(sigma_min, sigma_max, n)
            schedule = timesteps_from_sigmas(levels, np.log(training)).round().astype(np.int64).tolist()
            final = float(levels[-1]) if self.config.final_sigmas_type == "sigma_min" else 0.0
            self._planned_sigmas = np.append(levels, final).astype(np.float32).tolist()
            return schedule
        schedule = _grid(t, n, self.config.timestep_spacing, self.config.steps_offset)
        self._planned_sigmas = training[schedule].tolist() + [self._final_sigma()]
        return schedule

    def _training_sigmas(self) -> np.ndarray:
        """σ_t for t = 0..T-1 from the float32 ᾱ (an ᾱ of 0, the zero-SNR end, is read as 2^-24 as diffusers does)."""
        alpha_bar = torch.where(self.alphas_cumprod == 0, 2.0**-24, self.alphas_cumprod)
        return sigmas_from_alphas_cumprod(alpha_bar).numpy()  # torch's float32 rounding, as diffusers

    def _final_sigma(self) -> float:
        """σ after the last step: 0, or σ_0 with ``final_sigmas_type="sigma_min"``."""
        return float(self._training_sigmas()[0]) if self.config.final_sigmas_type == "sigma_min" else 0.0

    def _check_decreasing(self) -> None:
        sigmas = self._sigmas
        for i in range(len(sigmas) - 1):
            last_to_sigma_min = i == len(sigmas) - 2 and sigmas[i + 1] == sigmas[i]  # Karras with sigma_min: a no-op
            if not sigmas[i + 1] < sigmas[i] and not last_to_sigma_min:
                raise ValueError(
                    f"UniPC needs a strictly decreasing noise level, but steps {i} and {i + 1} of {len(sigmas) - 1} "
                    f"are both at σ = {sigmas[i]:.6g} (h = 0); use fewer steps or another timestep_spacing"
                )

    def _coefficient_table(self) -> list[list[_Row | None]]:
        """``rows[i][p]``: the scalars of the order-p update from step i to i + 1 (None where p is impossible).

        A row serves the predictor UniP at step i and the corrector UniC at step i + 1 (same h and r_k). The scalars
        are computed in float32 with the operations diffusers applies to its float32 σ, one value at a time, so that
        they round identically (the noise-prediction form cancels two terms of size e^h, so rounding differences
        there would grow by that factor).
        """
        sigmas = [torch.tensor(sigma, dtype=torch.float32) for sigma in self._sigmas]
        vp = [_vp(sigma) for sigma in sigmas]
        self._alpha = [float(alpha) for alpha, _, _ in vp]  # α_i, the conversions' sqrt(ᾱ)
        self._s = [float(s) for _, s, _ in vp]  # s_i, the conversions' sqrt(1 - ᾱ)
        rows: list[list[_Row | None]] = []
        for i in range(len(sigmas) - 1):
            per_order: list[_Row | None] = [None]
            for p in range(1, self.config.solver_order + 1):
                possible = p - 1 <= i and ((0 < self._sigmas[i + 1] < self._sigmas[i]) or p == 1)
                per_order.append(self._row(vp, i, p) if possible else None)
            rows.append(per_order)
        return rows

    def _row(self, vp: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], i: int, p: int) -> _Row:
        """The order-p update from step i to i + 1 (see the module docstring for the formula)."""
        (alpha_s, s_s, lam_s), (alpha_t, s_t, lam_t) = vp[i], vp[i + 1]
        data = self.config.predict_x0
        if self._sigmas[i + 1] == 0:
            # λ_t = ∞: the update's limit is x̂_0 itself (data: m; noise: x / α_s - σ_s ε̂)
            if data:
                return _Row(0.0, 1.0, 0.0, (), (), ())
            return _Row(1 / float(alpha_s), -self._sigmas[i], 0.0, (), (), ())
        if self._sigmas[i + 1] == self._sigmas[i]:  # the last step of Karras levels with sigma_min: h = 0, x stays
            return _Row(1.0, 0.0, 0.0, (), (), ())
        h = lam_t - lam_s
        r = [(vp[i - k][2] - lam_s) / h for k in range(1, p)]  # r_k of the earlier outputs m_{i-k}
        hh = -h if data else h  # ĥ
        b_of_h = hh if self.config.solver_type == "bh1" else torch.expm1(hh)  # B(ĥ)
        if data:  # x_t = (s_t / s_s) x - α_t (e^ĥ - 1) m - α_t B(ĥ) Σ a_k D_k
            x_coeff, m_coeff, scale = s_t / s_s, -(alpha_t * torch.expm1(hh)), -(alpha_t * b_of_h)
        else:  # x_t = (α_t / α_s) x - s_t (e^ĥ - 1) m - s_t B(ĥ) Σ a_k D_k
            x_coeff, m_coeff, scale = alpha_t / alpha_s, -(s_t * torch.expm1(hh)), -(s_t * b_of_h)

        # R_p[l, k] = r_k^l (r = 1 last, the corrector's new output) and g_p / B(ĥ) with g[l] = (l+1)! ĥ φ_{l+2}(ĥ),
        # by the recursion ĥφ_{l+2} = ĥφ_{l+1} / ĥ - 1 / (l+1)!
        columns = torch.stack([*r, torch.ones((), dtype=torch.float32)])
        rows, g = [], []
        h_phi = torch.expm1(hh) / hh - 1  # ĥ φ_2(ĥ)
        factorial = 1
        for ell in range(1, p + 1):
            rows.append(torch.pow(columns, ell - 1))
            g.append(h_phi * factorial / b_of_h)
            factorial *= ell + 1
            h_phi = h_phi / hh - 1 / factorial
        matrix, rhs = torch.stack(rows), torch.stack(g)

        # predictor UniP-p: the p - 1 earlier outputs; corrector UniC-p: those and the new output at r = 1
        if p == 1:
            a_pred: list[float] = []
        elif p == 2:
            a_pred = [0.5]
        else:
            a_pred = torch.linalg.solve(matrix[:-1, :-1], rhs[:-1]).tolist()
        a_corr = [0.5] if p == 1 else torch.linalg.solve(matrix, rhs).tolist()
        return _Row(
            float(x_coeff), float(m_coeff), float(scale), tuple(float(rk) for rk in r), tuple(a_pred), tuple(a_corr)
        )

    # ------------------------------------------------------------------------------------------------- the state
    def _reset_multistep_state(self) -> None:
        # m_i of the last calls (newest last), and the predictor's start x_i and order, for the next corrector
        self._outputs: collections.deque[torch.Tensor] = collections.deque(maxlen=self.config.solver_order)
        self._last_sample: torch.Tensor | None = None
        self._last_order = 0

    def _start_at(self, i: int) -> None:
        """A loop that starts at call ``i`` starts a fresh history (the first steps warm up at lower order)."""
        self._reset_multistep_state()

    def _order_at(self, i: int) -> int:
        """The predictor order of step i: the config's, lowered near the end, during warm-up and into σ = 0."""
        order = self.config.solver_order
        if self.config.lower_order_final:
            order = min(order, len(self._sigmas) - 1 - i)
        order = min(order, len(self._outputs))
        if not 0 < self._sigmas[i + 1] < self._sigmas[i]:  # into σ = 0, or the no-op last Karras step
            order = 1
        return order

    # ------------------------------------------------------------------------------------------------------ step
    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: as in the module docstring; x = step.sample is x̃_{t_i} (not yet corrected), m_new = m_i.
        # step.variance is not read and no noise is drawn (deterministic steps; generator is ignored).
        i, x = step.i, step.sample

        # 1. m_i: x̂_0 (thresholded if asked) or ε̂, at the sample where the model was evaluated
        alpha, s = self._alpha[i], self._s[i]
        x0 = predict_x0(step.model_output, x, alpha, s, self.config.prediction_type)
        if self.config.predict_x0:
            if self.config.thresholding:
                x0 = dynamic_threshold(x0, self.config.dynamic_thresholding_ratio, self.config.sample_max_value)
            m_new = x0
        else:
            m_new = predict_eps(step.model_output, x, alpha, s, self.config.prediction_type)

        # 2. UniC: correct x̃_{t_i}, predicted from x_{t_{i-1}} with order p, using m_i (no extra model call):
        #    x_{t_i} = base - (α or s) B(ĥ) (Σ_{k<p} a_k D_k + a_p (m_i - m_{i-1}))
        if self._last_sample is not None and i - 1 not in self.config.disable_corrector:
            row = self._rows[i - 1][self._last_order]
            assert row is not None
            residual = self._residual(row.a_corr[:-1], row.r)
            new = row.a_corr[-1] * (m_new - self._outputs[-1])
            x = self._update(row, self._last_sample, new if residual is None else residual + new)

        # 3. UniP: x̃_{t_{i+1}} from the corrected x_{t_i} and the last p outputs
        self._outputs.append(m_new)
        order = self._order_at(i)
        row = self._rows[i][order]
        assert row is not None
        prev_sample = self._update(row, x, self._residual(row.a_pred, row.r))
        self._last_sample, self._last_order = x, order
        return prev_sample, x0

    def _residual(self, a: tuple[float, ...], r: tuple[float, ...]) -> torch.Tensor | None:
        """Σ_k a_k D_k with D_k = (m_{-k} - m) / r_k over the history (m the newest output); None for no terms."""
        outputs = self._outputs
        m, total = outputs[-1], None
        for k, (a_k, r_k) in enumerate(zip(a, r), start=1):
            term = a_k * ((outputs[-1 - k] - m) / r_k)
            total = term if total is None else total + term
        return total

    def _update(self, row: _Row, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """x_coeff · x + m_coeff · m + scale · residual, m the newest output in the history (the step's formula)."""
        m = self._outputs[-1]
        out = row.m_coeff * m if row.x_coeff == 0 else row.x_coeff * x + row.m_coeff * m
        return out if residual is None else out + row.scale * residual


def _vp(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(α, s, λ) of a VE noise level σ (float32, 0-d): α = 1 / sqrt(1 + σ²), s = σ α, λ = log α - log s."""
    alpha = 1 / (sigma**2 + 1) ** 0.5
    s = sigma * alpha
    return alpha, s, torch.log(alpha) - torch.log(s)


def _grid(num_train_timesteps: int, n: int, spacing: str, steps_offset: int) -> list[int]:
    """The n model-call timesteps: the first n of n + 1 grid points whose last is the end of the chain.

    ``linspace``: round(k (T-1) / n) for k = n..1; ``leading``: k ⌊T / (n+1)⌋ + steps_offset for k = n..1;
    ``trailing``: round(T - k T / n) - 1 for k = 0..n-1 (the shared trailing spacing). These are diffusers' UniPC
    and DPM-Solver grids.
    """
    t = num_train_timesteps
    if spacing == "linspace":
        return np.linspace(0, t - 1, n + 1).round()[::-1][:-1].astype(np.int64).tolist()
    if spacing == "leading":
        ratio = t // (n + 1)
        if ratio == 0:
            raise ValueError(
                f"num_inference_steps={n} is too large for timestep_spacing='leading' with num_train_timesteps={t} "
                f"(the grid's stride T // (n + 1) is 0); use at most {t - 1} steps or 'linspace' / 'trailing'"
            )
        steps = [k * ratio + steps_offset for k in range(n, 0, -1)]
        if steps[0] >= t:
            raise ValueError(
                f"steps_offset={steps_offset} makes the first of {n} leading timesteps {steps[0]}, but timesteps "
                f"must be below num_train_timesteps={t}; lower steps_offset or num_inference_steps"
            )
        return steps
    return spaced_timesteps(t, n, spacing, steps_offset)


class _Row(NamedTuple):
    """The scalars of one order-p update from step i to i + 1 (Python floats), by name.

    UniP: x_{i+1} = x_coeff x_i + m_coeff m_i + scale Σ_k a_pred[k] D_k, D_k = (m_{i-k} - m_i) / r[k]. UniC of
    x_{i+1} (after the model call there): the same from x_i with Σ_k a_corr[k] D_k + a_corr[-1] (m_{i+1} - m_i).
    """

    x_coeff: float
    m_coeff: float
    scale: float
    r: tuple[float, ...]
    a_pred: tuple[float, ...]
    a_corr: tuple[float, ...]
