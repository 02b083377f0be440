"""The math every scheduler shares, defined once: timestep spacing, x_0 / ε / v conversions, clipping of x̂_0.

Notation (Ho et al. 2020): ᾱ_t = ``alpha_bar``, x_t = ``sample``, x_0 = ``x0``, ε = ``eps``; v = sqrt(ᾱ_t) ε -
sqrt(1 - ᾱ_t) x_0 is the "velocity" of Salimans & Ho 2022 ("Progressive Distillation"), Sec. 4.

The conversions take sqrt(ᾱ_t) and sqrt(1 - ᾱ_t) as Python floats, so that they reach the kernels as arguments and
no schedule tensor is read during a step.
"""

from __future__ import annotations

import numpy as np
import torch

from .config import PREDICTION_TYPES, TIMESTEP_SPACINGS, ClippingSchedulerConfig

__all__ = [
    "clip_or_threshold",
    "dynamic_threshold",
    "eps_from_x0",
    "output_from_x0",
    "predict_eps",
    "predict_x0",
    "spaced_timesteps",
]


# ------------------------------------------------------------------------------------------------ timestep spacing


def spaced_timesteps(
    num_train_timesteps: int, num_inference_steps: int, spacing: str, steps_offset: int = 0
) -> list[int]:
    """Pick ``num_inference_steps`` of the training timesteps 0..T-1, largest first.

    The three spacings of Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Table 2,
    with T = ``num_train_timesteps`` and n = ``num_inference_steps``:

    * ``leading``: k · ⌊T/n⌋ + steps_offset for k = n-1, ..., 0 (the DDIM paper's choice; never visits T-1);
    * ``linspace``: round(k · (T-1)/(n-1)), evenly spread over [0, T-1] including both ends;
    * ``trailing``: round(T - k · T/n) - 1 for k = 0, ..., n-1 (starts at T-1).

    The values equal diffusers' for every n, except that for ``trailing`` diffusers' floating-point ``arange``
    returns n+1 values ending in -1 for 62 values of n ≤ 1000 (61, 103, ...); the spurious entry is dropped here.

    Raises:
        ValueError: ``spacing`` is unknown, or ``steps_offset`` pushes a ``leading`` timestep past T-1.
    """
    t, n = num_train_timesteps, num_inference_steps
    if spacing == "leading":
        ratio = t // n
        steps = [k * ratio + steps_offset for k in range(n - 1, -1, -1)]
        if steps[0] >= t:
            raise ValueError(
                f"steps_offset={steps_offset} makes the first of {n} leading timesteps {steps[0]}, but timesteps "
                f"must be below num_train_timesteps={t}; lower steps_offset or num_inference_steps"
            )
        return steps
    if spacing == "linspace":
        return np.linspace(0, t - 1, n).round()[::-1].astype(np.int64).tolist()
    if spacing == "trailing":
        return (np.round(np.arange(t, 0, -t / n))[:n].astype(np.int64) - 1).tolist()
    raise ValueError(f"timestep_spacing {spacing!r} is not supported; use one of {', '.join(TIMESTEP_SPACINGS)}")


# -------------------------------------------------------------------------------------- x_0 / ε / v parameterisations


def predict_x0(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    sqrt_alpha_bar: float,
    sqrt_one_minus_alpha_bar: float,
    prediction_type: str,
) -> torch.Tensor:
    """The model's estimate of x_0 from x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε (Ho et al. 2020, Eq. (4) and (15)).

    * ε-prediction: x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε_θ) / sqrt(ᾱ_t), Eq. (15);
    * x_0-prediction: the output itself;
    * v-prediction: x̂_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v_θ (Salimans & Ho 2022, Sec. 4).
    """
    if prediction_type == "epsilon":
        return (sample - sqrt_one_minus_alpha_bar * model_output) / sqrt_alpha_bar
    if prediction_type == "sample":
        return model_output
    if prediction_type == "v_prediction":
        return sqrt_alpha_bar * sample - sqrt_one_minus_alpha_bar * model_output
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")


def eps_from_x0(
    x0: torch.Tensor, sample: torch.Tensor, sqrt_alpha_bar: float, sqrt_one_minus_alpha_bar: float
) -> torch.Tensor:
    """ε = (x_t - sqrt(ᾱ_t) x_0) / sqrt(1 - ᾱ_t), Eq. (4) of Ho et al. 2020 solved for ε."""
    return (sample - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar


def output_from_x0(
    x0: torch.Tensor,
    sample: torch.Tensor,
    sqrt_alpha_bar: float,
    sqrt_one_minus_alpha_bar: float,
    prediction_type: str,
) -> torch.Tensor:
    """The model output that :func:`predict_x0` turns into ``x0`` at x_t = ``sample``: its inverse.

    * ε-prediction: ε = (x_t - sqrt(ᾱ_t) x_0) / sqrt(1 - ᾱ_t) (:func:`eps_from_x0`);
    * x_0-prediction: x_0 itself;
    * v-prediction: v = (sqrt(ᾱ_t) x_t - x_0) / sqrt(1 - ᾱ_t).
    """
    if prediction_type == "epsilon":
        return eps_from_x0(x0, sample, sqrt_alpha_bar, sqrt_one_minus_alpha_bar)
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return (sqrt_alpha_bar * sample - x0) / sqrt_one_minus_alpha_bar
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")


def predict_eps(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    sqrt_alpha_bar: float,
    sqrt_one_minus_alpha_bar: float,
    prediction_type: str,
) -> torch.Tensor:
    """The model's estimate of the noise ε in x_t, whatever it was trained to predict.

    For v-prediction, ε̂ = sqrt(ᾱ_t) v_θ + sqrt(1 - ᾱ_t) x_t (Salimans & Ho 2022, Sec. 4).
    """
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":
        return eps_from_x0(model_output, sample, sqrt_alpha_bar, sqrt_one_minus_alpha_bar)
    if prediction_type == "v_prediction":
        return sqrt_alpha_bar * model_output + sqrt_one_minus_alpha_bar * sample
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; use one of {', '.join(PREDICTION_TYPES)}")


# ------------------------------------------------------------------------------------------ clipping x̂_0


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding of Saharia et al. 2022 ("Imagen"), Sec. 2.3.

    Per sample, s is the ``ratio`` percentile of |x̂_0|, clamped to [1, max_value]; x̂_0 is clamped to [-s, s] and
    divided by s. With s = 1 this is the ordinary clamp to [-1, 1].

    Args:
        x0: The predicted x_0, shape (B, C, H, W), float32 or float64.
    """
    flat = x0.reshape(x0.shape[0], -1)  # (B, C*H*W)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0, max=max_value).unsqueeze(1)  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(x0.shape)


def clip_or_threshold(x0: torch.Tensor, config: ClippingSchedulerConfig) -> torch.Tensor:
    """Apply dynamic thresholding when ``thresholding`` is on, else the ``clip_sample`` clamp, else nothing."""
    if config.thresholding:
        return dynamic_threshold(x0, config.dynamic_thresholding_ratio, config.sample_max_value)
    if config.clip_sample:
        return x0.clamp(-config.clip_sample_range, config.clip_sample_range)
    return x0
