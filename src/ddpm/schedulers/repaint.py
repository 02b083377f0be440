"""RePaint (Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion Probabilistic Models").

An unconditional DDPM fills the unknown part of an image: every reverse step makes the unknown region with the
model and the known region by noising the given image to the same level (Alg. 1, lines 5-8), and the schedule goes
back up now and then (Alg. 1, line 10, the resampling of Sec. 4.2) so that the two regions harmonise.

Notation (ᾱ as in Ho et al. 2020; the paper's Alg. 1 with the spaced timesteps of the grid):

```text
grid:     s_0 < s_1 < ... < s_{n-1}         the n spaced timesteps (set_timesteps' spacing), ᾱ_{s_{-1}} = 1
step at s_k (a model call), x = x_{s_k}:
    x̂_0   = (x - sqrt(1 - ᾱ_{s_k}) ε_θ) / sqrt(ᾱ_{s_k})                            (clipped when clip_sample)
    σ     = η sqrt((1 - ᾱ_{s_{k-1}}) / (1 - ᾱ_{s_k})) sqrt(1 - ᾱ_{s_k} / ᾱ_{s_{k-1}})  (DDIM Eq. 16)
    x^unknown = sqrt(ᾱ_{s_{k-1}}) x̂_0 + sqrt(1 - ᾱ_{s_{k-1}} - σ²) ε_θ + σ z         (DDIM Eq. 12)
    x^known   = sqrt(ᾱ_{s_{k-1}}) x_0 + sqrt(1 - ᾱ_{s_{k-1}}) z                    (Alg. 1 line 5, Eq. 8a)
    x_{s_{k-1}} = m ⊙ x^known + (1 - m) ⊙ x^unknown                                (Alg. 1 line 8; m = 1: keep)
undo from s_{k-1} to s_k (Alg. 1 line 10), one training step u at a time:
    x_u = sqrt(1 - β_u) x_{u-1} + sqrt(β_u) z_u,   u = s_{k-1}+1, ..., s_k
```

With η = 1 the unknown part is the DDPM step of the paper; η = 0 (the default, as in diffusers) is DDIM's.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple, overload

import numpy as np
import torch

from ..outputs import SchedulerOutput
from ..utils import Generators, randn_tensor
from .base import Scheduler, StepInput
from .config import ClippingSchedulerConfig
from .math import clip_or_threshold

__all__ = ["RePaintScheduler", "RePaintSchedulerConfig", "resampling_schedule"]


@dataclasses.dataclass(frozen=True)
class RePaintSchedulerConfig(ClippingSchedulerConfig):
    """Config of :class:`RePaintScheduler` (``scheduler_config.json``, diffusers key names).

    The keys are those of every clipping scheduler (:class:`~ddpm.schedulers.config.ClippingSchedulerConfig`), so a
    DDPM checkpoint's ``scheduler_config.json`` loads as is: ``RePaintScheduler.from_pretrained(repo)``. diffusers'
    RePaint reads ``clip_sample`` (default True, clamp to [-1, 1]) and ignores the others; ddpm honours them all
    (``prediction_type``, ``timestep_spacing``, ``steps_offset``, thresholding). ``eta`` is a scheduler attribute,
    not a key (see :class:`RePaintScheduler`).
    """

    _class_name: ClassVar[str] = "RePaintScheduler"


_DEFAULTS = RePaintSchedulerConfig


def resampling_schedule(n: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """The positions on the grid s_0 < ... < s_{n-1} that RePaint visits, in order (Sec. 4.2, Fig. 9-10).

    The walk starts at n - 1 and goes down one position at a time. Each time it reaches a multiple j of
    ``jump_length`` with j < n - ``jump_length``, it goes back up ``jump_length`` positions and down again, until it
    has passed j ``jump_n_sample`` times; then it continues below j. ``jump_n_sample=1`` never goes back up (plain
    sampling).

    Returns:
        The grid positions; a position larger than the one before it is a jump back up (an ``undo_step``).
    """
    remaining = {j: jump_n_sample - 1 for j in range(0, n - jump_length, jump_length)}
    walk: list[int] = []
    k = n
    while k > 0:
        k -= 1
        walk.append(k)
        if remaining.get(k, 0) > 0:
            remaining[k] -= 1
            walk.extend(range(k + 1, k + jump_length + 1))
            k += jump_length
    return walk


class RePaintScheduler(Scheduler):
    """RePaint's sampler: DDIM/DDPM steps that keep the known region, with jumps back up the schedule.

    ``timesteps`` after :meth:`set_timesteps` is the whole walk of Sec. 4.2, up and down. Loop over it as
    diffusers' ``RePaintPipeline`` does: where ``t`` is below the previous timestep, call the model and
    :meth:`step`; where it is above, call :meth:`undo_step` with the previous timestep::

        scheduler.set_timesteps(250, jump_length=10, jump_n_sample=10)
        t_last = scheduler.timesteps[0] + 1
        for t in scheduler.timesteps:
            if t < t_last:
                x = scheduler.step(unet(x, t).sample, t, x, original_image, mask, generator).prev_sample
            else:
                x = scheduler.undo_step(x, t_last, generator)
            t_last = t

    **The mask**: ``mask`` is 1 where the image is KNOWN (kept) and 0 where it is filled, diffusers' convention.
    :class:`~ddpm.pipelines.RePaintPipeline` takes ``mask_means="fill"`` for the opposite one.

    **The one exception to the one ``step()`` signature.** Every other scheduler steps from (ε, t, x_t) alone;
    RePaint's step joins the known region at each step (Alg. 1, lines 5 and 8), so it takes ``original_image`` and
    ``mask`` between ``sample`` and ``generator``, in diffusers' order, the place where a scheduler's own per-call
    options go (like DDIM's ``eta``). Both are optional: without them the step is the DDIM step with this
    scheduler's η (the whole image unknown), so ``step(eps, t, x, generator=g)`` works as for every scheduler.

    ``eta`` (η in [0, 1], 0: DDIM steps, 1: DDPM's) is an attribute, set in the constructor or by assignment
    (``RePaintPipeline`` sets it for each call); as for :class:`~ddpm.DDIMScheduler` it is not saved with the config.

    Differences from diffusers 0.42.1 (docs/editing.md lists them with the tests):

    * :meth:`undo_step` noises with β_u for u = s_{k-1}+1, ..., s_k, the steps between the two grid points; diffusers
      uses β_{s_k}, ..., β_{s_k + T/n - 1}, T/n - 1 training steps too late (its sample reaches ᾱ_{s_k + T/n - 1}
      ... not ᾱ_{s_k}). Both draw the same noise, and they agree exactly when n = T (one training step per grid
      step) or without jumps (``jump_n_sample=1``).
    * ``num_inference_steps`` above ``num_train_timesteps`` is refused (diffusers lowers it silently), the spacing
      follows ``timestep_spacing`` (diffusers' RePaint always uses ``leading``, the default, with which both
      agree), and ``prediction_type`` is honoured (diffusers treats any model output as ε).
    """

    config_class: ClassVar[type[RePaintSchedulerConfig]] = RePaintSchedulerConfig
    _constructor_only: ClassVar[tuple[str, ...]] = ("eta",)
    config: RePaintSchedulerConfig

    def __init__(
        self,
        num_train_timesteps: int = _DEFAULTS.num_train_timesteps,
        beta_start: float = _DEFAULTS.beta_start,
        beta_end: float = _DEFAULTS.beta_end,
        beta_schedule: str = _DEFAULTS.beta_schedule,
        eta: float = 0.0,
        trained_betas: Sequence[float] | np.ndarray | torch.Tensor | None = _DEFAULTS.trained_betas,
        clip_sample: bool = _DEFAULTS.clip_sample,
        prediction_type: str = _DEFAULTS.prediction_type,
        thresholding: bool = _DEFAULTS.thresholding,
        dynamic_thresholding_ratio: float = _DEFAULTS.dynamic_thresholding_ratio,
        clip_sample_range: float = _DEFAULTS.clip_sample_range,
        sample_max_value: float = _DEFAULTS.sample_max_value,
        timestep_spacing: str = _DEFAULTS.timestep_spacing,
        steps_offset: int = _DEFAULTS.steps_offset,
        rescale_betas_zero_snr: bool = _DEFAULTS.rescale_betas_zero_snr,
        *,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Build the scheduler from config keys (diffusers' constructor, in its order, then ddpm's other keys).

        Args:
            eta: η in [0, 1], the weight of the noise of each step's unknown part: 0 is DDIM, 1 is DDPM.
            config: Any scheduler's config, a diffusers config or a dict (see :class:`Scheduler`).
            **kwargs: Config keys of the other schedulers of the package, carried along.

        The other parameters are config keys (:class:`RePaintSchedulerConfig`).

        Raises:
            TypeError: A keyword is not a config key of any scheduler.
            ConfigError: A value is invalid.
            ValueError: ``eta`` is outside [0, 1].
        """
        super().__init__(config=config, **self._named_keys(locals()), **kwargs)
        self.eta = eta
        self._grid: list[int] = []
        self._walk: list[int] = []

    @property
    def eta(self) -> float:
        """η in [0, 1]: the noise weight of the unknown part's step (0: DDIM, 1: DDPM)."""
        return self._eta

    @eta.setter
    def eta(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"eta must be a number in [0, 1] (0: DDIM steps, 1: DDPM steps), got {value!r}")
        self._eta = float(value)

    # ----------------------------------------------------------------------------------------------- the schedule
    def set_timesteps(  # type: ignore[override]  # diffusers' order: the jump settings come before device
        self,
        num_inference_steps: int | None = None,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        """Choose the grid of n timesteps and the walk over it (Sec. 4.2), and reset to its first entry.

        Args:
            num_inference_steps: n, the number of grid timesteps, 1 ≤ n ≤ ``num_train_timesteps``, spaced by the
                config's ``timestep_spacing``.
            jump_length: j, how many grid steps each jump goes back up (Fig. 9-10 of the paper).
            jump_n_sample: r, how many times the walk passes each jump point (1: no jumps).
            device: Where ``self.timesteps`` lives.
            timesteps: A custom grid (distinct descending training timesteps) instead of ``num_inference_steps``.

        Raises:
            TypeError: ``jump_length`` or ``jump_n_sample`` is not an int.
            ValueError: As :meth:`Scheduler.set_timesteps`; or ``jump_length`` / ``jump_n_sample`` below 1.
        """
        for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self._jumps = (int(jump_length), int(jump_n_sample))
        super().set_timesteps(num_inference_steps, device, timesteps)

    def _model_call_timesteps(self, spaced: list[int]) -> list[int]:
        # The grid s_0 < ... < s_{n-1} and the walk over it; timesteps[i] = s_{walk[i]}.
        self._grid = spaced[::-1]
        self._walk = resampling_schedule(len(spaced), *getattr(self, "_jumps", (10, 10)))
        return [self._grid[k] for k in self._walk]

    def _start_at(self, i: int) -> None:
        raise ValueError(
            f"RePaint's walk starts at its first entry; step() got the timestep of entry {i}. Loop over all of "
            "scheduler.timesteps after set_timesteps()"
        )

    def _join_schedule_at(self, timestep: float | torch.Tensor) -> bool:
        return False  # a walk that starts part-way is refused (see _start_at)

    def _is_jump_up(self, i: int) -> bool:
        return i > 0 and self._walk[i] > self._walk[i - 1]

    def _alpha_bar_below(self, k: int) -> float:
        """ᾱ at s_{k-1}, the grid point below s_k (1 below s_0: the chain ends at the clean image)."""
        return float(self.alphas_cumprod[self._grid[k - 1]]) if k > 0 else 1.0

    def previous_timestep(self, timestep: int | torch.Tensor) -> torch.Tensor:
        """The grid timestep below ``timestep`` (where a step from it lands), as a 0-d int64 tensor; -1 below the
        lowest.

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called.
            ValueError: ``timestep`` is not on the grid.
        """
        k = self._grid_position(timestep)
        return torch.tensor(self._grid[k - 1] if k > 0 else -1)

    def _grid_position(self, timestep: int | torch.Tensor) -> int:
        self._require_schedule()
        value = self._timestep_value(timestep)
        if value is None:  # a device tensor: read it (RePaint's undo is outside the graph-capturable loop)
            value = int(torch.as_tensor(timestep).reshape(-1)[0].item())
        if value not in self._grid:
            raise ValueError(f"timestep {value} is not on the grid of set_timesteps({self.num_inference_steps})")
        return self._grid.index(int(value))

    # ------------------------------------------------------------------------------------------------------ step
    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        original_image: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
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
        original_image: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: Generators = None,
        *,
        return_dict: Literal[False],
        variance_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        original_image: torch.Tensor | None,
        mask: torch.Tensor | None,
        generator: Generators,
        return_dict: Literal[False],
        *,
        variance_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(  # RePaint's step takes the known image and mask (see the class docstring)
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        original_image: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        generator: Generators = None,
        return_dict: bool = True,
        *,
        variance_noise: torch.Tensor | None = None,
    ) -> SchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """One reverse step from x at grid point s_k to s_{k-1}, keeping the known region (Alg. 1, lines 4-8).

        Args:
            model_output: ε_θ(x, s_k) (or x_0 / v, as ``prediction_type`` says), shape (B, C, H, W).
            timestep: s_k, the current entry of ``timesteps`` (which must go down here, not up).
            sample: x at s_k, shape (B, C, H, W).
            original_image: x_0 of the known region, (B, C, H, W) in [-1, 1] (or broadcastable to it).
            mask: 1 where the image is KNOWN (kept), 0 where it is filled; (B, 1, H, W) or broadcastable to the
                sample. Given with ``original_image``, or neither (then the step is a plain DDIM step).
            generator: Draws z, one draw per step shaped like the sample (shared by both regions, as in diffusers).
            return_dict: Return a :class:`~ddpm.outputs.SchedulerOutput` (default) or the tuple.
            variance_noise: z itself instead of drawing it.

        Returns:
            ``prev_sample`` (x at s_{k-1}) and ``pred_original_sample`` (the clipped x̂_0), in ``sample``'s dtype.

        Raises:
            ValueError: One of ``original_image`` / ``mask`` without the other, this entry of ``timesteps`` is a
                jump back up (call :meth:`undo_step`), or the errors of :meth:`Scheduler.step`.
        """
        if (original_image is None) != (mask is None):
            raise ValueError("step() takes original_image and mask together (or neither, for a plain DDIM step)")
        options = None if original_image is None else _Known(original_image, mask)  # type: ignore[arg-type]
        return self._advance(model_output, timestep, sample, generator, variance_noise, return_dict, options)

    def _step(self, step: StepInput) -> tuple[torch.Tensor, torch.Tensor]:
        # Notation: see the module docstring; k is this entry's grid position, "prev" is s_{k-1}.
        if self._is_jump_up(step.i):
            raise ValueError(
                f"entry {step.i} of timesteps ({step.t}) goes back up the schedule (a resampling jump): call "
                f"undo_step(sample, {self._grid[self._walk[step.i] - 1]}, generator) there, not step()"
            )
        known: _Known | None = step.options
        k = self._walk[step.i]
        alpha_bar_t = self.alphas_cumprod[self._grid[k]]  # 0-d float32, as diffusers computes with it
        alpha_bar_prev = torch.tensor(self._alpha_bar_below(k), dtype=torch.float32)

        # 1. x̂_0 from the model output (ε_θ for the google/ddpm-* models), clipped, and ε_θ
        x0 = clip_or_threshold(step.predicted_x0(), self.config)
        eps = step.predicted_eps()

        # 2. σ(η), DDIM Eq. 16, and the weight of ε_θ in Eq. 12 (float32 scalars)
        variance = ((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * (1 - alpha_bar_t / alpha_bar_prev)
        sigma = self.eta * variance**0.5
        direction_coeff = float((1 - alpha_bar_prev - sigma**2) ** 0.5)
        sqrt_alpha_bar_prev, sigma_f = float(alpha_bar_prev**0.5), float(sigma)

        # 3. z: one draw for both regions (Alg. 1 draws the known part's ε and the step's z; diffusers shares one)
        needs_noise = known is not None or sigma_f > 0
        z = step.noise() if needs_noise else None

        # 4. the unknown part, DDIM Eq. 12: sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε_θ + σ z
        unknown = sqrt_alpha_bar_prev * x0 + direction_coeff * eps
        if sigma_f > 0:
            assert z is not None
            unknown = unknown + sigma_f * z
        if known is None:
            return unknown, x0

        # 5. the known part, Alg. 1 line 5 (Eq. 8a): x_0 noised to ᾱ_prev
        assert z is not None
        dtype = unknown.dtype
        original = known.original_image.to(device=unknown.device, dtype=dtype)
        keep = known.mask.to(device=unknown.device, dtype=dtype)
        known_part = sqrt_alpha_bar_prev * original + float((1 - alpha_bar_prev) ** 0.5) * z

        # 6. Alg. 1 line 8: x_{prev} = m ⊙ x^known + (1 - m) ⊙ x^unknown
        return keep * known_part + (1.0 - keep) * unknown, x0

    def undo_step(
        self, sample: torch.Tensor, timestep: int | torch.Tensor, generator: Generators = None
    ) -> torch.Tensor:
        """Jump back up one grid step (Alg. 1, line 10): x at the grid point below ``timestep`` -> x at ``timestep``.

        Noises one training step u at a time, x_u = sqrt(1 - β_u) x_{u-1} + sqrt(β_u) z_u, for u from the grid point
        below ``timestep`` + 1 up to ``timestep``; that is a draw from q(x_{s_k} | x_{s_{k-1}}). Below the lowest
        grid point is the clean image (ᾱ = 1, where the last step lands), so from there u runs from 0.

        Args:
            sample: x at s_{k-1}, shape (B, C, H, W) (what the last :meth:`step` returned).
            timestep: s_k, the timestep of the last :meth:`step` (diffusers' ``t_last``).
            generator: Draws the z_u (one draw per training step, shaped like the sample, in its dtype).

        Returns:
            x at s_k, in ``sample``'s dtype.

        Raises:
            RuntimeError: :meth:`set_timesteps` was not called.
            ValueError: ``timestep`` is not on the grid, or the next entry of ``timesteps`` is a step down (call
                :meth:`step`) or a jump from another timestep.
        """
        k = self._grid_position(timestep)
        i = self._step_index
        if i < len(self._walk) and not self._is_jump_up(i):
            raise ValueError(
                f"entry {i} of timesteps ({self._grid[self._walk[i]]}) is a step down: call step() there, not "
                "undo_step()"
            )
        if i < len(self._walk) and self._walk[i] != k + 1:
            raise ValueError(
                f"undo_step() got timestep {self._grid[k]}, but entry {i} of timesteps jumps up from "
                f"{self._grid[self._walk[i] - 1]}: pass the previous entry of timesteps"
            )
        compute = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x = sample.to(compute)
        betas = self.betas if compute == torch.float32 else self.betas.double()
        below = self._grid[k - 1] if k > 0 else -1  # -1: the clean image, below every training timestep
        for u in range(below + 1, self._grid[k] + 1):
            beta = float(betas[u])
            z = randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)
            x = (1 - beta) ** 0.5 * x + beta**0.5 * z.to(compute)
        self._step_index = i + 1
        return x.to(sample.dtype)


class _Known(NamedTuple):
    """RePaint's per-call options (:attr:`StepInput.options`): the known image and where it is known."""

    original_image: torch.Tensor
    mask: torch.Tensor
