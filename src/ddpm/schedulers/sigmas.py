"""σ-space: the noise levels that DPM-Solver++, UniPC, Euler and Heun step between, defined once.

A variance-preserving (VP) diffusion x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε is, after dividing by sqrt(ᾱ_t), the
variance-exploding process x_t / sqrt(ᾱ_t) = x_0 + σ_t ε with

    σ_t = sqrt((1 - ᾱ_t) / ᾱ_t)                                   (Karras et al. 2022, "EDM", Table 1, VP column)

and the half log signal-to-noise ratio of DPM-Solver (Lu et al. 2022, Sec. 3.1) is λ_t = log(α_t / σ'_t) = -log σ_t,
with α_t = sqrt(ᾱ_t) and σ'_t = sqrt(1 - ᾱ_t). Schedulers in σ-space pick noise levels, not training timesteps;
the UNet still needs a timestep, found by interpolating log σ between the two training timesteps around it.

Every function takes and returns numpy arrays and keeps their dtype (float32 where the schedule is the float32
ᾱ that diffusers' schedulers use, so that the values agree to the last bit; float64 otherwise), except those that
read the training schedule ᾱ (a torch tensor): :func:`training_sigmas`, the one definition of the training levels of
every σ-space scheduler, computes them with torch as diffusers does.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

__all__ = [
    "ZERO_SNR_ALPHA_BAR",
    "alpha_sigma_from_sigma",
    "exponential_sigmas",
    "karras_sigmas",
    "nonzero_alphas_cumprod",
    "sigmas_from_alphas_cumprod",
    "timesteps_from_sigmas",
    "training_sigmas",
]

#: The ᾱ read in place of an ᾱ of 0 (the last timestep of a zero-terminal-SNR schedule, ``rescale_betas_zero_snr``,
#: where σ_t would be infinite): 2^-24, the smallest positive float16 subnormal, as diffusers' σ-space schedulers set
#: it. σ_t there is sqrt((1 - 2^-24) / 2^-24) ≈ 4096.
ZERO_SNR_ALPHA_BAR = 2.0**-24


def sigmas_from_alphas_cumprod(alphas_cumprod: ArrayT) -> ArrayT:
    """σ_t = sqrt((1 - ᾱ_t) / ᾱ_t) for every training timestep t (shape (T,), increasing with t).

    Also takes a torch tensor (and returns one): torch's float32 power rounds some values differently from numpy's,
    and diffusers' σ-space schedulers compute this with torch.
    """
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def nonzero_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``alphas_cumprod`` with every ᾱ of 0 read as :data:`ZERO_SNR_ALPHA_BAR` (a new tensor of the same dtype)."""
    return torch.where(alphas_cumprod == 0, ZERO_SNR_ALPHA_BAR, alphas_cumprod)


def training_sigmas(alphas_cumprod: torch.Tensor) -> np.ndarray:
    """σ_t of the T training timesteps (float32 ᾱ in, float32 numpy out, increasing in t), as diffusers' σ-space
    schedulers compute them: an ᾱ of 0 read as 2^-24 (:func:`nonzero_alphas_cumprod`, so every σ_t is finite), then
    :func:`sigmas_from_alphas_cumprod` with torch, whose float32 power rounds some σ_t differently from numpy's
    (177 of the 1000 of the linear schedule, in the last bit)."""
    return sigmas_from_alphas_cumprod(nonzero_alphas_cumprod(alphas_cumprod)).numpy()


def karras_sigmas(sigma_min: float, sigma_max: float, num_inference_steps: int, rho: float = 7.0) -> np.ndarray:
    """The n noise levels of Karras et al. 2022, Eq. (5), largest first (float64, shape (n,)):

        σ_i = (σ_max^(1/ρ) + i / (n - 1) · (σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ,   i = 0, ..., n - 1

    ρ = 7 spends more steps at low noise. With n = 1 the single level is σ_max.
    """
    ramp = np.linspace(0, 1, num_inference_steps)
    top, bottom = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (top + ramp * (bottom - top)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, num_inference_steps: int) -> np.ndarray:
    """n noise levels evenly spaced in log σ from σ_max down to σ_min (float64, shape (n,)):

        σ_i = exp(log σ_max + i / (n - 1) · (log σ_min - log σ_max)),   i = 0, ..., n - 1

    the ρ → ∞ limit of Eq. (5) (``karras_sigmas``). With n = 1 the single level is σ_max.
    """
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_inference_steps))


def timesteps_from_sigmas(sigmas: np.ndarray, log_training_sigmas: np.ndarray) -> np.ndarray:
    """The fractional training timestep of each σ: log σ interpolated linearly between neighbouring timesteps.

    ``log_training_sigmas`` is log σ_t for t = 0..T-1 (increasing). A σ below σ_0 maps to 0 and one above σ_{T-1}
    to T-1 (the interpolation weight is clipped); σ = 0 is treated as 1e-10. Returns the same shape as ``sigmas``.
    """
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    last = log_training_sigmas.shape[0] - 2
    # lower neighbour: the last training timestep whose log σ is at most log σ (at most T-2, so that t+1 exists)
    below = np.clip((log_training_sigmas[:, None] <= log_sigma[None, :]).sum(axis=0) - 1, 0, last)
    low, high = log_training_sigmas[below], log_training_sigmas[below + 1]
    weight = np.clip((low - log_sigma) / (low - high), 0, 1)
    return ((1 - weight) * below + weight * (below + 1)).reshape(np.shape(sigmas))


def alpha_sigma_from_sigma(sigma: float) -> tuple[float, float]:
    """(α_t, σ'_t) = (1 / sqrt(1 + σ²), σ / sqrt(1 + σ²)): the VP scale and noise level of a VE noise level σ."""
    alpha = 1 / (sigma**2 + 1) ** 0.5
    return alpha, sigma * alpha
