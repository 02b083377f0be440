"""Zero terminal SNR (``rescale_betas_zero_snr``) in the σ-space schedulers: ᾱ_{T-1} = 0 makes σ_{T-1} infinite.

diffusers' DPM-Solver++, UniPC, Euler and Euler ancestral read that ᾱ as 2^-24 (σ ≈ 4096) when they build their
training levels; ours do the same in one place (``ddpm.schedulers.sigmas.training_sigmas``), and Heun, whose
diffusers class has no such key, takes Euler's rule. Each loop must be finite and equal diffusers' step for step.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch

from ddpm.schedulers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from ddpm.schedulers.sigmas import ZERO_SNR_ALPHA_BAR, training_sigmas

from helpers import CELEBAHQ_SCHEDULER_CONFIG
from scheduler_helpers import SHAPE, diffusers_twin

diffusers = pytest.importorskip("diffusers")

TOL = 1e-5  # relative to the sample's scale (the σ-space samples start at σ ≈ 4096)
CLASSES = [
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
    EulerDiscreteScheduler,
    EulerAncestralDiscreteScheduler,
    HeunDiscreteScheduler,
]
CASES = [
    ({}, "linspace"),
    ({"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, "trailing-v"),
]


def _zero_snr_twin(ours: Any) -> Any:
    """diffusers' scheduler on our ᾱ, with ᾱ_{T-1} = 0 set to 2^-24 as its own ``__init__`` does (Heun's has no such
    key: it gets Euler's rule, which ours applies)."""
    theirs = diffusers_twin(ours)
    assert float(theirs.alphas_cumprod[-1]) in (0.0, ZERO_SNR_ALPHA_BAR)
    theirs.alphas_cumprod[-1] = ZERO_SNR_ALPHA_BAR
    return theirs


@pytest.mark.parametrize(("keys", "label"), CASES, ids=[c[1] for c in CASES])
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_zero_snr_loop_is_finite_and_equals_diffusers_step_for_step(cls: Any, keys: dict, label: str) -> None:
    ours = cls.from_config(CELEBAHQ_SCHEDULER_CONFIG, rescale_betas_zero_snr=True, **keys)
    theirs = _zero_snr_twin(ours)
    ours.set_timesteps(10)
    theirs.set_timesteps(10)
    assert float(ours.sigmas.max()) == pytest.approx(4096.0)  # σ of ᾱ = 2^-24, the first level (not ∞)
    assert torch.equal(ours.sigmas, theirs.sigmas.float())
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * float(ours.init_noise_sigma)
    y = x.clone()
    g_ours, g_theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    extra = {"generator": g_theirs} if "generator" in inspect.signature(theirs.step).parameters else {}
    for i, t in enumerate(ours.timesteps):
        out = 0.1 * ours.scale_model_input(x, t) + torch.sin(x / (1 + float(ours.init_noise_sigma))) * float(t) / 1000
        a = ours.step(out, t, x, generator=g_ours).prev_sample
        b = theirs.step(out, t, y, **extra).prev_sample
        assert bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all()), i
        assert float((a - b).abs().max()) <= TOL * (1 + float(b.abs().max())), i
        x, y = a, b


def test_multistep_training_levels_are_diffusers_to_the_bit() -> None:
    """Both multistep solvers read σ_t at every training timestep 999..1 (n = 999, linspace) exactly as diffusers
    computes them (torch's float32 rounding, which differs from numpy's at 177 of the 1000 linear-schedule levels)."""
    for cls in (DPMSolverMultistepScheduler, UniPCMultistepScheduler):
        ours = cls()
        theirs = diffusers_twin(ours)
        ours.set_timesteps(999)
        theirs.set_timesteps(999)
        assert torch.equal(ours.sigmas, theirs.sigmas), cls
        assert np.array_equal(ours._training_sigmas(), training_sigmas(ours.alphas_cumprod))


def test_the_zero_snr_level_is_that_of_2_to_the_minus_24_and_alphas_cumprod_keeps_its_zero() -> None:
    """diffusers' rule, kept as it is: on the linear schedule the rescaled ᾱ_997, ᾱ_998 are below 2^-24, so σ_999
    (4096) is below σ_998 (about 15406); the multistep solvers keep ᾱ_{T-1} = 0 for add_noise (pure noise)."""
    for cls in (DPMSolverMultistepScheduler, UniPCMultistepScheduler):
        ours = cls(rescale_betas_zero_snr=True)
        levels = ours._training_sigmas()
        assert np.isfinite(levels).all() and levels[-1] == 4096.0  # sqrt((1 - 2^-24) / 2^-24) in float32
        assert levels[-2] > levels[-1] and float(ours.alphas_cumprod[-1]) == 0.0
        x0, noise = torch.ones(SHAPE), torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
        assert torch.equal(ours.add_noise(x0, noise, torch.tensor([999])), noise)
    with pytest.raises(ValueError, match=r"steps 0 and 1 of 999 go up from σ = 4096 to σ = 15406 \(h < 0\)"):
        UniPCMultistepScheduler(rescale_betas_zero_snr=True).set_timesteps(999)  # 999, 998, ...: the rise above
