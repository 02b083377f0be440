"""Euler samplers in σ-space (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

A model trained on x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε samples the probability-flow ODE of the rescaled process
x = x_t / sqrt(ᾱ_t) = x_0 + σ ε (EDM, Table 1, VP column; :mod:`ddpm.schedulers.sigmas`):

    dx/dσ = (x - D(x; σ)) / σ                                                      (EDM, Eq. (3) with σ(t) = t)

where D(x; σ) is the model's denoised estimate of x_0. The schedulers here pick noise levels σ_0 > ... > σ_{n-1} >
σ_n = 0 and step the ODE between them; the UNet gets x / sqrt(σ² + 1) (its training input, :meth:`scale_model_input`)
and the fractional training timestep of σ (log σ interpolated between training timesteps). Samples start from
x_T ~ N(0, σ_0² I) (:attr:`init_noise_sigma`), not N(0, I).

* :class:`EulerDiscreteScheduler`: one Euler step per level (EDM Alg. 2 without the 2nd-order correction), with the
  optional "churn" of Alg. 2 (noise added before the step, per-call options ``s_churn``, ``s_tmin``, ``s_tmax``,
  ``s_noise``).
* :class:`EulerAncestralDiscreteScheduler`: the ancestral sampler: each step goes down to σ_down by Euler and adds
  fresh noise of standard deviation σ_up, with σ_down² + σ_up² = σ_next² (Song et al. 2021, Eq. (47) in σ form).

Heun's 2nd-order method (EDM Alg. 1) is in :mod:`ddpm.schedulers.heun`; the σ-space machinery shared by the three
(levels, timesteps, input scaling, ``add_noise``) is :class:`SigmaScheduler` here.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple, overload

import numpy as np
import torch

from ..config import check
from ..outputs import SchedulerOutput
from ..utils import Generators
from .base import Scheduler, StepInput
from .config import SchedulerConfig, TimestepSpacing
from .sigmas import exponential_sigmas, karras_sigmas, nonzero_alphas_cumprod, timesteps_from_sigmas, training_sigmas

__all__ = [
    "EulerAncestralDiscreteScheduler",
    "EulerAncestralDiscreteSchedulerConfig",
    "EulerDiscreteScheduler",
    "EulerDiscreteSchedulerConfig",
    "SigmaScheduler",
]


def check_sigma_options(config: SchedulerConfig) -> None:
    """The σ-level options of Euler and Heun: at most one of karras / exponential / beta; beta is refused."""
    chosen = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas") if getattr(config, k)]
    check(
        len(chosen) <= 1,
        config,
        chosen[-1] if chosen else "use_karras_sigmas",
        "only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas may be true, got "
        + ", ".join(chosen),
    )
    check(
        not getattr(config, "use_beta_sigmas", False),
        config,
        "use_beta_sigmas",
        "beta-distributed sigmas are not supported (they need scipy, not a dependency of ddpm); use "
        "use_karras_sigmas=true or use_exponential_sigmas=true",
    )


@dataclasses.dataclass(frozen=True)
class EulerDiscreteSchedulerConfig(SchedulerConfig):
    """Config of :class:`EulerDiscreteScheduler` (``scheduler_config.json``, diffusers key names).

    Attributes:
        timestep_spacing: As for every scheduler, but ``linspace`` (the default here) keeps the fractional
            timesteps k (T - 1) / (n - 1) unrounded, as diffusers does for its σ-space schedulers.
        interpolation_type: How σ is read between training timesteps: ``linear`` in σ. (diffusers' ``log_linear``
            is refused: it makes n + 1 levels that never reach σ = 0, and timesteps that do not match them.)
        use_karras_sigmas: Levels of Karras et al. 2022, Eq. (5), ρ = 7, between σ_min and σ_max.
        use_exponential_sigmas: Levels evenly spaced in log σ between σ_min and σ_max.
        use_beta_sigmas: Beta-distributed levels; refused (needs scipy).
        sigma_min: σ_min of the karras / exponential levels (None: the σ of the last spaced timestep).
        sigma_max: σ_max of the karras / exponential levels (None: the σ of the first spaced timestep).
        timestep_type: ``discrete``: the UNet gets the training timestep of each σ; ``continuous`` (with
            ``prediction_type="v_prediction"`` only, as in diffusers) gets c_noise = ¼ log σ (EDM, Table 1).
        final_sigmas_type: The level after the last step: ``zero`` (a clean sample) or ``sigma_min`` (σ of training
            timestep 0).
    """

    _class_name: ClassVar[str] = "EulerDiscreteScheduler"

    timestep_spacing: TimestepSpacing = "linspace"
    interpolation_type: Literal["linear", "log_linear"] = "linear"
    use_karras_sigmas: bool | None = False
    use_exponential_sigmas: bool | None = False
    use_beta_sigmas: bool | None = False
    sigma_min: float | None = None
    sigma_max: float | None = None
    timestep_type: Literal["discrete", "continuous"] = "discrete"
    final_sigmas_type: Literal["zero", "sigma_min"] = "zero"

    def validate(self) -> None:
        super().validate()
        check_sigma_options(self)
        check(
            self.interpolation_type == "linear",
            self,
            "interpolation_type",
            "only 'linear' is supported ('log_linear' in diffusers 0.42.1 gives n + 1 noise levels that never reach "
            "0, with timesteps that do not match them); use use_exponential_sigmas=true for log-spaced levels",
        )
        for key in ("sigma_min", "sigma_max"):
            value = getattr(self, key)
            check(value is None or 0 < value < math.inf, self, key, "it must be a positive finite number, or null")
        if self.sigma_min is not None and self.sigma_max is not None:
            check(self.sigma_min < self.sigma_max, self, "sigma_min", f"it must be below sigma_max={self.sigma_max}")


@dataclasses.dataclass(frozen=True)
class EulerAncestralDiscreteSchedulerConfig(SchedulerConfig):
    """Config of :class:`EulerAncestralDiscreteScheduler` (``scheduler_config.json``, diffusers key names).

    Attributes:
        timestep_spacing: ``linspace`` by default (fractional timesteps, unrounded), as in diffusers.
    """

    _class_name: ClassVar[str] = "EulerAncestralDiscreteScheduler"

    timestep_spacing: TimestepSpacing = "linspace"


class _Call(NamedTuple):
    """The scalars of one model call (float32 values as Python floats), by name.

    sigma is σ of the sample the model sees; sigma_next the level the step goes to; input_scale sqrt(σ² + 1);
    v_skip and v_out the x and v weights of D for ``v_prediction``: D = x / v_skip + v_out · v.
    """

    sigma: float
    sigma_next: float
    dt: float
    input_scale: float
    v_skip: float
    v_out: float


class SigmaScheduler(Scheduler):
    """Base of the σ-space schedulers (Euler, Euler ancestral, Heun): levels, timesteps, input scaling, noising.

    After :meth:`set_timesteps`, ``sigmas`` holds σ of every model call followed by the final level (float32, CPU),
    ``timesteps`` the (fractional, float32) training timestep of every call. A subclass sets the order of the calls
    (:meth:`_calls_from_levels`) and writes ``_step``.
    """

    _fractional_timesteps: ClassVar[bool] = True

    def _apply_config(self, cfg: SchedulerConfig) -> None:
        super()._apply_config(cfg)
        if cfg.rescale_betas_zero_snr:  # ᾱ_{T-1} = 0 becomes 2^-24 in ᾱ itself (get_velocity reads it), as diffusers'
            self.alphas_cumprod = nonzero_alphas_cumprod(self.alphas_cumprod)
        self._train_sigmas: np.ndarray = training_sigmas(self.alphas_cumprod)  # (T,), float32, finite
        # before set_timesteps: every training level, largest first, then 0 (diffusers' initial state)
        self.sigmas = torch.cat([torch.from_numpy(self._train_sigmas[::-1].copy()), torch.zeros(1)])
        self.timesteps = torch.arange(cfg.num_train_timesteps - 1, -1, -1, dtype=torch.float32)
        self._calls: list[_Call] = []

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        """The standard deviation of x_T: σ_max, or sqrt(σ_max² + 1) with ``leading`` spacing (diffusers' rule)."""
        sigma_max = self.sigmas.max()
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return float(sigma_max)
        return float((sigma_max**2 + 1) ** 0.5)

    # ------------------------------------------------------------------------------------------------ the levels
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """As :meth:`Scheduler.set_timesteps`: choose n noise levels and their timesteps, reset to the first call.

        The n timesteps are spaced by ``timestep_spacing`` (``linspace``: fractional, unrounded), σ is read at each
        (linear in σ between training timesteps), then replaced by karras / exponential levels where the config
        asks, whose timesteps are found by log-σ interpolation. A custom ``timesteps`` list (integers) is allowed
        without karras / exponential levels.

        Raises:
            ValueError: As :meth:`Scheduler.set_timesteps`; also custom ``timesteps`` with karras or exponential
                levels, or with ``timestep_type="continuous"``.
        """
        cfg = self.config
        if timesteps is not None:
            for key in ("use_karras_sigmas", "use_exponential_sigmas"):
                if getattr(cfg, key, False):
                    raise ValueError(
                        f"set_timesteps(timesteps=...) cannot be used with {key}=True: the levels choose "
                        "the timesteps; pass num_inference_steps"
                    )
            if self._continuous_timesteps():
                raise ValueError("set_timesteps(timesteps=...) cannot be used with timestep_type='continuous'")
        super().set_timesteps(num_inference_steps, device, timesteps)
        n, t = len(self._spaced), cfg.num_train_timesteps
        if timesteps is None and cfg.timestep_spacing == "linspace":
            spaced = np.linspace(0, t - 1, n, dtype=np.float32)[::-1].copy()
        else:
            spaced = np.array(self._spaced, dtype=np.float32)
        levels, level_timesteps = self._levels(spaced)
        sigmas, call_timesteps = self._calls_from_levels(levels, level_timesteps)
        self._set_calls(sigmas, call_timesteps, device)

    def _levels(self, spaced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(σ_0, ..., σ_{n-1}, σ_n) as float32 (n + 1,) and the timesteps of σ_0..σ_{n-1} as float32 (n,)."""
        cfg = self.config
        train = self._train_sigmas
        sigmas = np.interp(spaced, np.arange(len(train)), train)  # σ linear between training timesteps (float64)
        timesteps = spaced
        kind = "karras" if getattr(cfg, "use_karras_sigmas", False) else None
        kind = "exponential" if getattr(cfg, "use_exponential_sigmas", False) else kind
        if kind is not None:
            sigma_min = getattr(cfg, "sigma_min", None) or float(sigmas[-1])
            sigma_max = getattr(cfg, "sigma_max", None) or float(sigmas[0])
            n = len(spaced)
            sigmas = (karras_sigmas if kind == "karras" else exponential_sigmas)(sigma_min, sigma_max, n)
            timesteps = timesteps_from_sigmas(sigmas, np.log(train)).astype(np.float32)
        if getattr(cfg, "final_sigmas_type", "zero") == "sigma_min":
            final = float(((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5)  # σ of training t = 0
        else:
            final = 0.0
        return np.concatenate([sigmas, [final]]).astype(np.float32), timesteps

    def _calls_from_levels(self, levels: np.ndarray, timesteps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """σ of every model call followed by the final level, and the timestep of every call: one call per level."""
        return levels, timesteps

    def _continuous_timesteps(self) -> bool:
        cfg = self.config
        return getattr(cfg, "timestep_type", "discrete") == "continuous" and cfg.prediction_type == "v_prediction"

    def _set_calls(self, sigmas: np.ndarray, timesteps: np.ndarray, device: str | torch.device | None) -> None:
        """Make ``sigmas`` (float32, one per call and the final level) and ``timesteps`` (one per call) the schedule
        and compute each call's scalars in float32, once, so that ``step()`` reads no tensor."""
        sigma = torch.from_numpy(sigmas)  # (calls + 1,)
        if self._continuous_timesteps():
            call_timesteps = 0.25 * sigma[:-1].log()  # c_noise(σ) = ¼ ln σ, EDM Table 1
        else:
            call_timesteps = torch.from_numpy(timesteps.astype(np.float32))
        self.sigmas = sigma
        self.timesteps = call_timesteps.to(device=device)
        schedule = call_timesteps.tolist()
        self._schedule = schedule
        self._positions = {}
        for position, value in enumerate(schedule):
            self._positions.setdefault(value, position)
        self._spaced = schedule
        # the σ-space scalars of each call; the VP pair (sqrt ᾱ, sqrt(1 - ᾱ)) of its level for StepInput
        s, s_next = sigma[:-1], sigma[1:]
        input_scale = (s**2 + 1) ** 0.5
        self._sqrt_alpha_bar = (1 / input_scale).tolist()
        self._sqrt_one_minus_alpha_bar = (s / input_scale).tolist()
        self._calls = [
            _Call(*row)
            for row in zip(
                s.tolist(),
                s_next.tolist(),
                (s_next - s).tolist(),
                input_scale.tolist(),
                (s**2 + 1).tolist(),
                (-s / input_scale).tolist(),
            )
        ]

    # ----------------------------------------------------------------------------------------------- model input
    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        """x / sqrt(σ² + 1): the sample the UNet was trained on at this call's level (EDM's c_in, VP column).

        Args:
            sample: x at the current level σ, shape (B, C, H, W).
            timestep: The current timestep (an entry of ``timesteps``); the first call of a loop may start part-way.

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called, or the schedule is finished.
        """
        schedule = self._require_schedule()
        i = self._step_index
        if i == self._begin_index and timestep is not None:
            position = self._position_of(timestep, i)
            i = i if position is None else position
        if i >= len(schedule):
            raise RuntimeError(
                f"the schedule of {len(schedule)} timesteps is finished; call set_timesteps() again to start a new "
                "sampling loop"
            )
        return sample / self._calls[i].input_scale

    def _join_schedule_at(self, timestep: float | torch.Tensor) -> bool:
        """A σ-space loop starts only at one of its own timesteps (the levels are not training timesteps)."""
        return False

    # ------------------------------------------------------------------------------------------- forward process
    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: int | torch.Tensor
    ) -> torch.Tensor:
        """x = x_0 + σ ε at the level of each timestep (the σ-space form of q(x_t | x_0); diffusers' rule).

        Args:
            original_samples: x_0, shape (B, C, H, W).
            noise: ε, same shape.
            timesteps: Entries of ``timesteps`` (a tensor of shape (B,), a 0-d tensor or a number), read once on
                the host; before :meth:`set_timesteps`, any training timestep 0..T-1.

        Returns:
            x_0 + σ ε in ``original_samples``' dtype: the start of a loop over ``timesteps[k:]``
            (image-to-image), already at the scale that loop expects (no ``init_noise_sigma``).

        Raises:
            ValueError: A timestep is not in the schedule.
        """
        values = timesteps.reshape(-1).tolist() if isinstance(timesteps, torch.Tensor) else [timesteps]
        sigma = [self._sigma_at(v) for v in values]
        compute = torch.float64 if original_samples.dtype == torch.float64 else torch.float32
        shape = (len(sigma),) + (1,) * (original_samples.dim() - 1)
        s = torch.tensor(sigma, dtype=torch.float32).to(device=original_samples.device, dtype=compute).reshape(shape)
        return (original_samples.to(compute) + noise.to(compute) * s).to(original_samples.dtype)

    def _sigma_at(self, value: Any) -> float:
        """σ of the schedule's call at timestep ``value`` (before set_timesteps: the training level)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"timesteps must be numbers or a tensor, got {type(value).__name__}")
        if self._schedule is None:
            t = float(value)
            if not (t.is_integer() and 0 <= t < self.config.num_train_timesteps):
                raise ValueError(
                    f"add_noise got timestep {value}; before set_timesteps() it takes training timesteps "
                    f"0..{self.config.num_train_timesteps - 1}"
                )
            return float(self._train_sigmas[int(t)])
        position = self._positions.get(float(value))
        if position is None:
            raise ValueError(
                f"add_noise got timestep {value}, which is not in the schedule set by set_timesteps("
                f"{self.num_inference_steps}); pass entries of scheduler.timesteps"
            )
        return self._calls[position].sigma

    def predicted_x0(self, step: StepInput, sigma: float, v_skip: float, v_out: float) -> torch.Tensor:
        """D(x; σ), the model's estimate of x_0 at the level σ it was evaluated at, from ε, x_0 or v.

        ε: D = x - σ ε̂ (EDM Eq. (2) with the VP scaling undone); x_0: D = the output; v: D = x / (σ² + 1) - σ v̂ /
        sqrt(σ² + 1) (Salimans & Ho 2022, Sec. 4, in σ-space).
        """
        x, out = step.sample, step.model_output
        if step.prediction_type == "epsilon":
            return x - sigma * out
        if step.prediction_type == "v_prediction":
            return out * v_out + x / v_skip
        return out


def _check_number(name: str, value: float, low: float = -math.inf, allowed: str = "a number") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value) or value < low:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


class _Churn(NamedTuple):
    """Euler's per-call options (Alg. 2 of EDM): S_churn, S_tmin, S_tmax, S_noise."""

    s_churn: float
    s_tmin: float
    s_tmax: float
    s_noise: float


_EULER = EulerDiscreteSchedulerConfig  # the constructor's defaults are the config's


class EulerDiscreteScheduler(SigmaScheduler):
    """Euler's method on the probability-flow ODE in σ-space (EDM Alg. 2): one model call per level.

    Deterministic by default; ``step(..., s_churn=...)`` adds EDM's "churn" noise (a seeded ``generator`` makes it
    reproducible, drawn as diffusers draws it). ``timesteps`` are fractional training timesteps (float32): give them
    to the UNet as they are. Start from ``randn(...) * scheduler.init_noise_sigma`` and give the UNet
    ``scheduler.scale_model_input(x, t)``; ``DDPMPipeline`` does both (diffusers' own DDPMPipeline does neither, so
    it samples these schedulers wrongly).

    Differences from diffusers 0.42.1 (docs/schedulers.md lists them with their issue numbers): a loop's first step
    is the first level even when the schedule repeats a timestep (karras levels above the largest training σ);
    ``interpolation_type="log_linear"`` and ``use_beta_sigmas`` are refused; custom ``timesteps`` must be integers;
    ``set_timesteps`` has no ``sigmas=`` argument.
    """

    config_class: ClassVar[type[EulerDiscreteSchedulerConfig]] = EulerDiscreteSchedulerConfig
    config: EulerDiscreteSchedulerConfig

    def __init__(
        self,
        num_train_timesteps: int = _EULER.num_train_timesteps,
        beta_start: float = _EULER.beta_start,
        beta_end: float = _EULER.beta_end,
        beta_schedule: str = _EULER.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _EULER.trained_betas,
        prediction_type: str = _EULER.prediction_type,
        interpolation_type: str = _EULER.interpolation_type,
        use_karras_sigmas: bool | None = _EULER.use_karras_sigmas,
        use_exponential_sigmas: bool | None = _EULER.use_exponential_sigmas,
        use_beta_sigmas: bool | None = _EULER.use_beta_sigmas,
        sigma_min: float | None = _EULER.sigma_min,
        sigma_max: float | None = _EULER.sigma_max,
        timestep_spacing: str = _EULER.timestep_spacing,
        timestep_type: str = _EULER.timestep_type,
        steps_offset: int = _EULER.steps_offset,
        rescale_betas_zero_snr: bool = _EULER.rescale_betas_zero_snr,
        final_sigmas_type: str = _EULER.final_sigmas_type,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``config`` is a config key, described in :class:`EulerDiscreteSchedulerConfig` and
        :class:`~ddpm.schedulers.config.SchedulerConfig`; its default is the config's. Keys the caller gives
        override ``config``.

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
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
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
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
        generator: Generators = None,
        *,
        return_dict: Literal[False],
        variance_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
        generator: Generators = None,
        return_dict: bool = True,
        *,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Scheduler.step`, with EDM's churn options per call, in diffusers' order.

        Args:
            s_churn: S_churn of EDM Alg. 2: with γ = min(S_churn / n, √2 - 1), the sample is first pushed up to
                σ̂ = (1 + γ) σ with fresh noise; 0 (default) keeps the step deterministic.
            s_tmin: Churn only at levels σ ≥ S_tmin.
            s_tmax: Churn only at levels σ ≤ S_tmax.
            s_noise: S_noise, the scale of the churn noise.
            variance_noise: The churn noise itself, used instead of drawing it from ``generator`` (keyword-only:
                diffusers' ``step`` has no such parameter, so ``return_dict`` keeps its positional place).

        The other arguments, the return value and the errors are :meth:`Scheduler.step`'s; also ValueError for a
        negative or non-number option.
        """
        options = _Churn(
            s_churn=_check_number("s_churn", s_churn, 0.0, "a number ≥ 0"),
            s_tmin=_check_number("s_tmin", s_tmin),
            s_tmax=_check_number("s_tmax", s_tmax),
            s_noise=_check_number("s_noise", s_noise, 0.0, "a number ≥ 0"),
        )
        return self._advance(model_output, timestep, sample, generator, variance_noise, return_dict, options)

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation (Karras et al. 2022, Alg. 2), for the call at level σ = t_i going to σ_next = t_{i+1}:
        # - gamma, sigma_hat -> γ_i and t̂_i = (1 + γ_i) t_i
        # - x_hat            -> x̂_i, the sample pushed up to t̂_i (x_i itself when γ_i = 0)
        # - x0               -> D_θ, the denoised estimate; d -> d_i = (x̂_i - D_θ) / t̂_i
        # The model saw x_i at t_i (one call per step): its output stands for D_θ(x̂_i; t̂_i), as in diffusers.
        c: _Call = self._calls[step.i]
        churn: _Churn = step.options
        sigma, x = c.sigma, step.sample
        gamma = 0.0
        if churn.s_churn > 0 and churn.s_tmin <= sigma <= churn.s_tmax:
            gamma = min(churn.s_churn / len(self._calls), 2**0.5 - 1)  # γ_i, Alg. 2 line 4
        if gamma > 0:
            sigma_hat = float(np.float32(sigma) * np.float32(gamma + 1))  # t̂_i = (1 + γ_i) t_i, in float32
            push = float(np.sqrt(np.float32(sigma_hat) ** 2 - np.float32(sigma) ** 2))  # sqrt(t̂_i² - t_i²)
            x_hat = x + (step.noise() * churn.s_noise) * push  # Alg. 2 line 6
            dt = float(np.float32(c.sigma_next) - np.float32(sigma_hat))
        else:
            sigma_hat, x_hat, dt = sigma, x, c.dt

        # D_θ: for ε, from x̂ at t̂ (diffusers' rule); for v, with the weights of t_i
        x0 = self.predicted_x0(dataclasses.replace(step, sample=x_hat), sigma_hat, c.v_skip, c.v_out)
        d = (x_hat - x0) / sigma_hat  # Alg. 2 line 7
        return x_hat + d * dt, x0  # x_{i+1} = x̂_i + (t_{i+1} - t̂_i) d_i, line 8


_ANCESTRAL = EulerAncestralDiscreteSchedulerConfig


class EulerAncestralDiscreteScheduler(SigmaScheduler):
    """The ancestral Euler sampler: an Euler step down to σ_down, then fresh noise σ_up z (stochastic).

    With σ = σ_i and σ' = σ_{i+1}:  σ_up = sqrt(σ'² (σ² - σ'²) / σ²),  σ_down = sqrt(σ'² - σ_up²), so that the new
    sample has the marginal noise level σ' (the DDPM posterior written in σ-space). A noise draw is made at every
    call (the last one has σ_up = 0), as diffusers draws it, so seeded runs match.

    Differences from diffusers 0.42.1: ``prediction_type="sample"`` is supported (diffusers raises
    NotImplementedError); the other differences are :class:`EulerDiscreteScheduler`'s.
    """

    config_class: ClassVar[type[EulerAncestralDiscreteSchedulerConfig]] = EulerAncestralDiscreteSchedulerConfig
    config: EulerAncestralDiscreteSchedulerConfig

    def __init__(
        self,
        num_train_timesteps: int = _ANCESTRAL.num_train_timesteps,
        beta_start: float = _ANCESTRAL.beta_start,
        beta_end: float = _ANCESTRAL.beta_end,
        beta_schedule: str = _ANCESTRAL.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _ANCESTRAL.trained_betas,
        prediction_type: str = _ANCESTRAL.prediction_type,
        timestep_spacing: str = _ANCESTRAL.timestep_spacing,
        steps_offset: int = _ANCESTRAL.steps_offset,
        rescale_betas_zero_snr: bool = _ANCESTRAL.rescale_betas_zero_snr,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order) and/or a config.

        Every parameter before ``config`` is a config key, described in
        :class:`EulerAncestralDiscreteSchedulerConfig` and :class:`~ddpm.schedulers.config.SchedulerConfig`.

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid.
        """
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)

    def _set_calls(self, sigmas: np.ndarray, timesteps: np.ndarray, device: str | torch.device | None) -> None:
        super()._set_calls(sigmas, timesteps, device)
        # σ_up and σ_down of each step, float32, computed once
        s, s_next = self.sigmas[:-1], self.sigmas[1:]
        sigma_up = (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5
        sigma_down = (s_next**2 - sigma_up**2) ** 0.5
        self._ancestral = list(zip((sigma_down - s).tolist(), sigma_up.tolist()))

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: σ = c.sigma, σ_down and σ_up as in the class docstring; d = (x - D) / σ
        c: _Call = self._calls[step.i]
        dt_down, sigma_up = self._ancestral[step.i]
        x = step.sample
        x0 = self.predicted_x0(step, c.sigma, c.v_skip, c.v_out)
        d = (x - x0) / c.sigma
        prev_sample = x + d * dt_down  # Euler step to σ_down
        return prev_sample + step.noise() * sigma_up, x0  # + σ_up z, z ~ N(0, I)
