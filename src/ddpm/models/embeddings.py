"""Timestep embeddings: the sinusoidal features of Ho et al. (2020), NCSN++'s random Fourier features of the noise
level, and the MLP that lifts them to ``temb``.

The sinusoidal part has no parameters and is always computed in float32, whatever the model's dtype, so that large
timesteps (up to 999) keep their phase accuracy in fp16/bf16 runs; the result is cast to the MLP's dtype afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .activations import Activation

__all__ = ["GaussianFourierProjection", "TimestepEmbedding", "timestep_embedding"]


def timestep_embedding(
    timesteps: torch.Tensor,
    dim: int,
    *,
    flip_sin_to_cos: bool,
    freq_shift: float,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """Sinusoidal timestep features, as in the Transformer's position encoding (Vaswani et al. 2017, §3.5).

    With ``half = dim // 2`` and ``k = 0 .. half-1`` the frequencies are
    ``ω_k = exp(-ln(max_period) · k / (half - freq_shift))`` and the features are ``[sin(t ω), cos(t ω)]``
    (``[cos, sin]`` when ``flip_sin_to_cos``). An odd ``dim`` gets one trailing zero.

    Args:
        timesteps: Shape (B,); any real dtype. Fractional values are used as they are (not truncated).
        dim: The number of features.
        flip_sin_to_cos: Put the cosine half first.
        freq_shift: ``s`` in the frequency denominator ``half - s`` (the google/ddpm-* models use 1).
        max_period: The longest period, 10000 as in the paper.

    Returns:
        Float32 features, shape (B, dim).
    """
    half = dim // 2
    # The exponent is scaled before the division, in float32, exactly as the reference computes it: changing the
    # order changes the last bit of some frequencies, which a 1e-4 parity budget notices at t ≈ 1000.
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))  # (half,)
    args = timesteps.float()[:, None] * freqs[None, :]  # (B, half)
    first, second = (torch.cos(args), torch.sin(args)) if flip_sin_to_cos else (torch.sin(args), torch.cos(args))
    emb = torch.cat([first, second], dim=-1)  # (B, 2 * half)
    if dim % 2 == 1:
        emb = nn.functional.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimestepEmbedding(nn.Module):
    """The two-layer MLP ``linear_2(act(linear_1(features)))`` that maps timestep features to ``temb``.

    Args:
        in_features: The number of sinusoidal features (``block_out_channels[0]``).
        out_features: The embedding width (``time_embedding_dim``, by default ``4 * block_out_channels[0]``).
        act_fn: The activation between the two layers (diffusers' UNet2DModel always uses SiLU here).
    """

    def __init__(self, in_features: int, out_features: int, act_fn: str = "silu") -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.act = Activation(act_fn)
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Map (B, in_features) to (B, out_features)."""
        return self.linear_2(self.act(self.linear_1(features)))


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of ``log σ`` (Tancik et al. 2020; NCSN++'s noise-level embedding, Song et al. 2021).

    ``[sin(2π w log σ), cos(2π w log σ)]`` with fixed frequencies ``w ~ N(0, scale²)`` (a non-trainable parameter,
    saved with the weights as ``time_proj.weight``).

    Args:
        size: The number of frequencies (the output has ``2 * size`` features).
        scale: The standard deviation of the frequencies (16, as diffusers' UNet2DModel uses).
    """

    def __init__(self, size: int, scale: float = 16.0) -> None:
        super().__init__()
        # diffusers draws the frequencies twice and keeps the second draw; drawing the same way makes the same seed
        # give the same frequencies.
        torch.randn(size)
        self.weight = nn.Parameter(torch.randn(size) * scale, requires_grad=False)

    def forward(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Map noise levels σ > 0, shape (B,), to features of shape (B, 2 * size) in the weight's dtype."""
        angles = torch.log(sigmas)[:, None] * self.weight[None, :] * 2 * math.pi  # (B, size)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
