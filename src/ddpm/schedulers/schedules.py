"""Noise schedules of the forward process q(x_t | x_0), computed once in float64.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Sec. 2):

* ``betas``          β_t, the variance added at step t of the forward chain, Eq. (2):
                     q(x_t | x_{t-1}) = N(x_t; sqrt(1 - β_t) x_{t-1}, β_t I);
* ``alphas``         α_t = 1 - β_t;
* ``alphas_cumprod`` ᾱ_t = ∏_{s ≤ t} α_s, so that q(x_t | x_0) = N(x_t; sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I), Eq. (4).

Timesteps are 0-based as in diffusers: index t = 0 is the paper's t = 1 (the least noisy step) and index T - 1 is
the paper's t = T. Every function returns a float64 tensor of shape (T,); the schedulers cast to float32 only
where a tensor meets the model's data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch

__all__ = [
    "BETA_SCHEDULES",
    "BetaSchedule",
    "alphas_cumprod_from_betas",
    "cosine_betas",
    "linear_betas",
    "make_betas",
    "rescale_zero_terminal_snr",
    "scaled_linear_betas",
    "sigmoid_betas",
]

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
#: The accepted values of the ``beta_schedule`` config key.
BETA_SCHEDULES: tuple[str, ...] = get_args(BetaSchedule)

_F64 = torch.float64


def linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t rising linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4: 1e-4 to 0.02 over T=1000)."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=_F64)


def scaled_linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t whose square root rises linearly: sqrt(β_t) = lerp(sqrt(beta_start), sqrt(beta_end)).

    This is the schedule of latent diffusion models (Rombach et al. 2022).
    """
    return torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), num_train_timesteps, dtype=_F64) ** 2


def cosine_betas(num_train_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal 2021 ("Improved DDPM"), Eq. (17), config name ``squaredcos_cap_v2``.

    ᾱ(τ) = cos²(((τ + s) / (1 + s)) · π/2) for τ = t/T, and β_t = min(1 - ᾱ((t+1)/T) / ᾱ(t/T), max_beta),
    the cap keeping β away from 1 near τ = 1 (their Sec. 3.2).
    """

    def alpha_bar(tau: float) -> float:
        return math.cos((tau + s) / (1.0 + s) * math.pi / 2.0) ** 2

    t = num_train_timesteps
    betas = [min(1.0 - alpha_bar((i + 1) / t) / alpha_bar(i / t), max_beta) for i in range(t)]
    return torch.tensor(betas, dtype=_F64)


def sigmoid_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t along a sigmoid over [-6, 6], scaled into [beta_start, beta_end] (GeoDiff, Xu et al. 2022)."""
    u = torch.linspace(-6.0, 6.0, num_train_timesteps, dtype=_F64)
    return torch.sigmoid(u) * (beta_end - beta_start) + beta_start


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale β so that the last step has zero signal-to-noise ratio (Lin et al. 2024, Algorithm 1).

    sqrt(ᾱ_t) is shifted so that its last value is 0 and scaled so that its first value is unchanged; the betas
    are then recovered from the new ᾱ. The last β becomes 1 (ᾱ_{T-1} = 0), so such models need ``v_prediction``.
    """
    sqrt_ab = torch.cumprod(1.0 - betas.to(_F64), dim=0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    alpha_bar = sqrt_ab**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


def make_betas(
    beta_schedule: str,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    trained_betas: Sequence[float] | None = None,
    rescale_betas_zero_snr: bool = False,
) -> torch.Tensor:
    """The float64 β_t of a scheduler config (``trained_betas``, when given, replace the named schedule).

    Raises:
        ValueError: ``beta_schedule`` is not one of :data:`BETA_SCHEDULES`.
    """
    if trained_betas is not None:
        betas = torch.tensor(list(trained_betas), dtype=_F64)
    elif beta_schedule == "linear":
        betas = linear_betas(num_train_timesteps, beta_start, beta_end)
    elif beta_schedule == "scaled_linear":
        betas = scaled_linear_betas(num_train_timesteps, beta_start, beta_end)
    elif beta_schedule == "squaredcos_cap_v2":
        betas = cosine_betas(num_train_timesteps)
    elif beta_schedule == "sigmoid":
        betas = sigmoid_betas(num_train_timesteps, beta_start, beta_end)
    else:
        raise ValueError(f"beta_schedule {beta_schedule!r} is not supported; use one of {', '.join(BETA_SCHEDULES)}")
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{s ≤ t} (1 - β_s) (Ho et al. 2020, notation above Eq. (4)), in float64."""
    return torch.cumprod(1.0 - betas.to(_F64), dim=0)
