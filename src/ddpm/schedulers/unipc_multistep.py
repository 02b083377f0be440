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

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch

from ..config import check
from ..errors import ConfigError
from .base import StepInput
from .math import dynamic_threshold
from .multistep import MultistepScheduler, MultistepSchedulerConfig

__all__ = ["UniPCMultistepScheduler", "UniPCMultistepSchedulerConfig"]

#: solver_type values of other multistep solvers (DPM-Solver's) that UniPC reads as ``bh2``, as diffusers does.
_SOLVER_TYPE_ALIASES = ("midpoint", "heun", "logrho")


@dataclasses.dataclass(frozen=True)
class UniPCMultistepSchedulerConfig(MultistepSchedulerConfig):
    """Config of :class:`UniPCMultistepScheduler` (``scheduler_config.json``, diffusers key names and defaults).

    The keys shared with DPM-Solver++ (``solver_order``, thresholding, ``lower_order_final``, ``use_karras_sigmas``,
    ``final_sigmas_type``, ``timestep_spacing`` defaulting to ``"linspace"``, the refused level schedules) are
    described in :class:`~ddpm.schedulers.multistep.MultistepSchedulerConfig`; for UniPC they mean:

    * ``solver_order``: p, the order of the predictor UniP (1, 2 or 3); the corrector raises it by one. 2 for guided
      sampling, 3 for unconditional models.
    * ``thresholding``: only with ``predict_x0``.
    * ``lower_order_final``: the order is at most the number of steps left (p ≤ n - i), steadier for few steps.
    * ``use_karras_sigmas``: between ``sigma_min`` and ``sigma_max`` (below) when they are set.
    * ``final_sigmas_type="sigma_min"``: the last level is the smallest Karras level with ``use_karras_sigmas``, the
      level of timestep 0 otherwise (diffusers' UniPC).
    * ``time_shift_type``: ``"linear"`` is accepted too (unused, as the shifted schedules are refused).

    Attributes:
        predict_x0: Solve with the data prediction x̂_0 (True, the paper's recommendation) or the noise ε̂.
        solver_type: B(h) of the update: ``bh1`` (B(h) = h, for fewer than about 10 steps) or ``bh2``
            (B(h) = e^h - 1). DPM-Solver's ``midpoint``, ``heun`` and ``logrho`` are read as ``bh2``.
        disable_corrector: Positions in ``timesteps`` whose predicted sample is not corrected by the next call.
        solver_p: diffusers' "another scheduler as the predictor"; only None (not supported).
        sigma_min: The smallest Karras level (None: the training schedule's σ_0).
        sigma_max: The largest Karras level (None: σ_{T-1}).
        shift_terminal: diffusers' flow-matching shift; accepted at its default (null), refused when set.
    """

    _class_name: ClassVar[str] = "UniPCMultistepScheduler"
    _solver_order_rule: ClassVar[str] = "use 1 to 3"

    predict_x0: bool = True
    solver_type: str = "bh2"
    disable_corrector: tuple[int, ...] = ()
    solver_p: None = None
    time_shift_type: Literal["exponential", "linear"] = "exponential"  # type: ignore[assignment]  # UniPC's wider set
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
        check(all(i >= 0 for i in self.disable_corrector), "disable_corrector", "positions must be 0 or more")
        check(self.flow_shift > 0, "flow_shift", "it must be > 0")
        for key in ("sigma_min", "sigma_max"):
            value = getattr(self, key)
            check(value is None or value > 0, key, "it must be > 0 (or null: the training schedule's)")
        if self.sigma_min is not None and self.sigma_max is not None:
            check(self.sigma_min < self.sigma_max, "sigma_min", f"it must be below sigma_max={self.sigma_max}")
        check(
            self.shift_terminal is None,
            "shift_terminal",
            "it only applies to flow-matching sigmas (use_flow_sigmas), which are not supported; set it to null",
        )

    def _unsupported_switch_error(self, key: str) -> ConfigError:
        # UniPC's own wording of the refusal (a plain ConfigError), kept as its tests and the bad-input catalogue pin it
        return ConfigError(
            f"{self._where()}config key {key!r} has value True; UniPCMultistepScheduler here implements the Karras "
            "levels (use_karras_sigmas) and the training schedule's levels only; set it to false"
        )


def _check(condition: bool, key: str, allowed: str, *, config: UniPCMultistepSchedulerConfig) -> None:
    check(condition, config, key, allowed)


_DEFAULTS = UniPCMultistepSchedulerConfig  # the constructor's defaults are the config's


class UniPCMultistepScheduler(MultistepScheduler):
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
        """As :meth:`MultistepScheduler.set_timesteps` (n model calls for ``set_timesteps(n)``, each at its noise level
        σ_i, then the final level); also computes the UniP / UniC coefficients and resets the multistep history and
        the corrector's pending sample.

        A custom list of ``timesteps`` is used as given, each at its training noise level (not with
        ``use_karras_sigmas``).

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
        super().set_timesteps(num_inference_steps, device, timesteps)
        self._sigmas: list[float] = self.sigmas.tolist()
        self._check_decreasing()
        self._rows = self._coefficient_table()

    # Where UniPC's bookkeeping differs from DPM-Solver++'s (the MultistepScheduler hooks below), as diffusers' UniPC
    # does it: the Karras range (sigma_min, sigma_max), the final level with Karras levels (the smallest Karras
    # level), λ (one level at a time), the refusal of a grid (UniPC's messages; equal timesteps are refused with the
    # levels by _check_decreasing) and the order limit (the steps into σ = 0 and the no-op last Karras step are first
    # order). The training levels are the base's, as diffusers computes them for both solvers.

    def _karras_range(self, training_sigmas: np.ndarray) -> tuple[float, float]:
        """(σ_min, σ_max) of the Karras levels: the config's ``sigma_min`` / ``sigma_max``, else the training ends."""
        low, high = super()._karras_range(training_sigmas)
        sigma_min, sigma_max = self.config.sigma_min, self.config.sigma_max
        return (low if sigma_min is None else sigma_min), (high if sigma_max is None else sigma_max)

    def _final_level(self, levels: np.ndarray) -> float:
        """The ``sigma_min`` final level: the smallest Karras level with ``use_karras_sigmas`` (then the last step is a
        no-op, h = 0), else the level of timestep 0."""
        return float(levels[-1]) if self.config.use_karras_sigmas else super()._final_level(levels)

    def _half_log_snr(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """λ = log α - log σ, one level at a time: the log of a 0-d tensor rounds as diffusers' per-step log does,
        the vectorised log of a longer one may differ in the last bit (and the noise-prediction coefficients
        amplify such differences by e^h)."""
        return torch.stack([torch.log(a) - torch.log(s) for a, s in zip(alpha, sigma)])

    def _check_spacing(self, n: int, values: list[int], last: int) -> None:
        """Refuse a ``leading`` grid that does not fit, in UniPC's words; two equal timesteps (n too large for
        ``linspace``) are refused with their noise levels, by :meth:`_check_decreasing`."""
        cfg = self.config
        t = cfg.num_train_timesteps
        if cfg.timestep_spacing != "leading":
            return
        if t // (n + 1) == 0:
            raise ValueError(
                f"num_inference_steps={n} is too large for timestep_spacing='leading' with num_train_timesteps={t} "
                f"(the grid's stride T // (n + 1) is 0); use at most {t - 1} steps or 'linspace' / 'trailing'"
            )
        if values[0] >= t:
            raise ValueError(
                f"steps_offset={cfg.steps_offset} makes the first of {n} leading timesteps {values[0]}, but timesteps "
                f"must be below num_train_timesteps={t}; lower steps_offset or num_inference_steps"
            )

    def _check_decreasing(self) -> None:
        sigmas = self._sigmas
        for i in range(len(sigmas) - 1):
            last_to_sigma_min = i == len(sigmas) - 2 and sigmas[i + 1] == sigmas[i]  # Karras with sigma_min: a no-op
            if not sigmas[i + 1] < sigmas[i] and not last_to_sigma_min:
                # a rise: the zero-SNR level of t = T-1 (ᾱ read as 2^-24) can be below that of T-2
                levels = (
                    f"are both at σ = {sigmas[i]:.6g} (h = 0)"
                    if sigmas[i + 1] == sigmas[i]
                    else f"go up from σ = {sigmas[i]:.6g} to σ = {sigmas[i + 1]:.6g} (h < 0)"
                )
                raise ValueError(
                    f"UniPC needs a strictly decreasing noise level, but steps {i} and {i + 1} of {len(sigmas) - 1} "
                    f"{levels}; use fewer steps or another timestep_spacing"
                )

    def _order_limit(self, i: int) -> int:
        """The highest predictor order of step i (the history may allow less): the config's, at most the steps left
        with ``lower_order_final``, and 1 into σ = 0 or for the no-op last Karras step (a polynomial in λ cannot be
        extrapolated to λ = ∞)."""
        cfg = self.config
        assert self._schedule is not None
        order = min(cfg.solver_order, len(self._schedule) - i) if cfg.lower_order_final else cfg.solver_order
        if not 0 < float(self.sigmas[i + 1]) < float(self.sigmas[i]):
            order = 1
        return order

    def _coefficient_table(self) -> list[list[_Row | None]]:
        """``rows[i][p]``: the scalars of the order-p update from step i to i + 1 (None where p is impossible).

        A row serves the predictor UniP at step i and the corrector UniC at step i + 1 (same h and r_k). The scalars
        are computed in float32 with the operations diffusers applies to its float32 σ, one value at a time (0-d
        tensors of the levels' α, s and λ), so that they round identically (the noise-prediction form cancels two
        terms of size e^h, so rounding differences there would grow by that factor).
        """
        rows: list[list[_Row | None]] = []
        for i in range(len(self._sigmas) - 1):
            per_order: list[_Row | None] = [None]
            for p in range(1, self.config.solver_order + 1):
                possible = p - 1 <= i and ((0 < self._sigmas[i + 1] < self._sigmas[i]) or p == 1)
                per_order.append(self._row(i, p) if possible else None)
            rows.append(per_order)
        return rows

    def _row(self, i: int, p: int) -> _Row:
        """The order-p update from step i to i + 1 (see the module docstring for the formula)."""
        alpha_s, s_s, lam_s = self._alpha[i], self._sigma[i], self._lambda[i]
        alpha_t, s_t, lam_t = self._alpha[i + 1], self._sigma[i + 1], self._lambda[i + 1]
        data = self.config.predict_x0
        if self._sigmas[i + 1] == 0:
            # λ_t = ∞: the update's limit is x̂_0 itself (data: m; noise: x / α_s - σ_s ε̂)
            if data:
                return _Row(0.0, 1.0, 0.0, (), (), ())
            return _Row(1 / float(alpha_s), -self._sigmas[i], 0.0, (), (), ())
        if self._sigmas[i + 1] == self._sigmas[i]:  # the last step of Karras levels with sigma_min: h = 0, x stays
            return _Row(1.0, 0.0, 0.0, (), (), ())
        h = lam_t - lam_s
        r = [(self._lambda[i - k] - lam_s) / h for k in range(1, p)]  # r_k of the earlier outputs m_{i-k}
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
    def _reset_history(self) -> None:
        # m_i of the last calls (newest last, MultistepScheduler's history), and the predictor's start x_i and order,
        # for the next corrector
        super()._reset_history()
        self._last_sample: torch.Tensor | None = None
        self._last_order = 0

    # ------------------------------------------------------------------------------------------------------ step
    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: as in the module docstring; x = step.sample is x̃_{t_i} (not yet corrected), m_new = m_i.
        # step.variance is not read and no noise is drawn (deterministic steps; generator is ignored).
        i, x = step.i, step.sample

        # 1. m_i: x̂_0 (thresholded if asked) or ε̂, at the sample where the model was evaluated
        x0 = step.predicted_x0()
        if self.config.predict_x0:
            if self.config.thresholding:
                x0 = dynamic_threshold(x0, self.config.dynamic_thresholding_ratio, self.config.sample_max_value)
            m_new = x0
        else:
            m_new = step.predicted_eps()

        # 2. UniC: correct x̃_{t_i}, predicted from x_{t_{i-1}} with order p, using m_i (no extra model call):
        #    x_{t_i} = base - (α or s) B(ĥ) (Σ_{k<p} a_k D_k + a_p (m_i - m_{i-1}))
        if self._last_sample is not None and i - 1 not in self.config.disable_corrector:
            row = self._rows[i - 1][self._last_order]
            assert row is not None
            residual = self._residual(row.a_corr[:-1], row.r)
            new = row.a_corr[-1] * (m_new - self._history[-1])
            x = self._update(row, self._last_sample, new if residual is None else residual + new)

        # 3. UniP: x̃_{t_{i+1}} from the corrected x_{t_i} and the last p outputs
        self._history.append(m_new)
        order = min(len(self._history), self._highest_order[i])
        row = self._rows[i][order]
        assert row is not None
        prev_sample = self._update(row, x, self._residual(row.a_pred, row.r))
        self._last_sample, self._last_order = x, order
        return prev_sample, x0

    def _residual(self, a: tuple[float, ...], r: tuple[float, ...]) -> torch.Tensor | None:
        """Σ_k a_k D_k with D_k = (m_{-k} - m) / r_k over the history (m the newest output); None for no terms."""
        outputs = self._history
        m, total = outputs[-1], None
        for k, (a_k, r_k) in enumerate(zip(a, r), start=1):
            term = a_k * ((outputs[-1 - k] - m) / r_k)
            total = term if total is None else total + term
        return total

    def _update(self, row: _Row, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """x_coeff · x + m_coeff · m + scale · residual, m the newest output in the history (the step's formula)."""
        m = self._history[-1]
        out = row.m_coeff * m if row.x_coeff == 0 else row.x_coeff * x + row.m_coeff * m
        return out if residual is None else out + row.scale * residual


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
