"""Noise schedules (closed forms in float64) and timestep spacings (lengths, order, equality with diffusers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddpm.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler
from ddpm.schedulers.config import TIMESTEP_SPACINGS
from ddpm.schedulers.math import spaced_timesteps
from ddpm.schedulers.schedules import (
    BETA_SCHEDULES,
    alphas_cumprod_from_betas,
    cosine_betas,
    linear_betas,
    make_betas,
    rescale_zero_terminal_snr,
    scaled_linear_betas,
    sigmoid_betas,
)

from helpers import one_thread

T = 1000


# ------------------------------------------------------------------------------------------ closed-form schedules


def test_linear_betas_run_from_beta_start_to_beta_end_in_equal_float64_increments():
    betas = linear_betas(T, 1e-4, 0.02)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    assert betas[0].item() == 1e-4
    assert betas[-1].item() == pytest.approx(0.02, abs=1e-17)
    assert betas[500].item() == pytest.approx(1e-4 + 500 * (0.02 - 1e-4) / 999, rel=1e-15)
    step = torch.full((T - 1,), (0.02 - 1e-4) / 999, dtype=torch.float64)
    assert torch.allclose(betas.diff(), step, rtol=1e-12, atol=0)


def test_linear_alphas_cumprod_is_the_product_of_one_minus_beta():
    betas = linear_betas(T, 1e-4, 0.02)
    ab = alphas_cumprod_from_betas(betas)
    assert ab.dtype == torch.float64
    assert ab[0].item() == 1.0 - 1e-4
    expected = [math.prod(1.0 - (1e-4 + i * (0.02 - 1e-4) / 999) for i in range(t + 1)) for t in (1, 9, 499, 999)]
    assert ab[[1, 9, 499, 999]].tolist() == pytest.approx(expected, rel=1e-12)
    # sqrt(ᾱ_T) ≈ 0.0064: the DDPM paper's schedule ends close to pure noise (Ho et al. 2020, Sec. 4)
    assert math.sqrt(ab[-1].item()) == pytest.approx(0.006353, rel=1e-3)


def test_scaled_linear_betas_have_a_linear_square_root():
    betas = scaled_linear_betas(T, 0.00085, 0.012)
    assert betas[0].item() == pytest.approx(0.00085, rel=1e-15)
    assert betas[-1].item() == pytest.approx(0.012, rel=1e-15)
    roots = betas.sqrt()
    step = torch.full((T - 1,), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999, dtype=torch.float64)
    assert torch.allclose(roots.diff(), step)


def test_cosine_alphas_cumprod_follows_the_squared_cosine():
    # Nichol & Dhariwal 2021, Eq. (17): ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2); β is capped at 0.999.
    s = 0.008
    ab = alphas_cumprod_from_betas(cosine_betas(T))

    def f(tau: float) -> float:
        return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 1, 100, 500, 900):
        assert ab[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-12)
    betas = cosine_betas(T)
    assert betas[0].item() == pytest.approx(1 - f(1 / T) / f(0), rel=1e-12)
    assert betas[-1].item() == 0.999  # the cap
    assert betas.max().item() <= 0.999


def test_sigmoid_betas_are_symmetric_around_the_midpoint_of_the_range():
    betas = sigmoid_betas(T, 1e-4, 0.02)
    assert betas[0].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / (1 + math.exp(6)), rel=1e-12)
    assert betas[-1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / (1 + math.exp(-6)), rel=1e-12)
    assert torch.allclose(betas + betas.flip(0), torch.full((T,), 1e-4 + 0.02, dtype=torch.float64), rtol=1e-12)


def test_rescale_zero_terminal_snr_keeps_the_first_alpha_and_ends_at_zero_signal():
    betas = linear_betas(T, 0.00085, 0.012)
    rescaled = rescale_zero_terminal_snr(betas)
    ab, ab_new = alphas_cumprod_from_betas(betas), alphas_cumprod_from_betas(rescaled)
    assert ab_new[0].item() == pytest.approx(ab[0].item(), rel=1e-12)
    assert ab_new[-1].item() == 0.0
    assert rescaled[-1].item() == 1.0
    # sqrt(ᾱ) is an affine map of the original sqrt(ᾱ) (Lin et al. 2024, Algorithm 1)
    a, b = ab.sqrt(), ab_new.sqrt()
    slope = (b[0] - b[-1]) / (a[0] - a[-1])
    assert torch.allclose(b, (a - a[-1]) * slope, rtol=1e-10, atol=1e-14)


def test_trained_betas_replace_the_named_schedule():
    trained = [0.01] * 10
    betas = make_betas("linear", 10, 1e-4, 0.02, trained)
    assert betas.tolist() == trained and betas.dtype == torch.float64


def test_unknown_beta_schedule_is_rejected_with_the_allowed_names():
    with pytest.raises(ValueError, match="laplace.*linear, scaled_linear, squaredcos_cap_v2, sigmoid"):
        make_betas("laplace", 10, 1e-4, 0.02)


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("rescale", [False, True])
def test_schedules_match_diffusers_float32_schedules_to_float32_rounding(schedule, rescale):
    diffusers = pytest.importorskip("diffusers")
    ours = DDPMScheduler(beta_schedule=schedule, rescale_betas_zero_snr=rescale)
    theirs = diffusers.DDPMScheduler(beta_schedule=schedule, rescale_betas_zero_snr=rescale)
    assert ours.alphas_cumprod.dtype == torch.float32
    # diffusers accumulates the product in float32; ours is the float64 product rounded once. The zero-SNR rescale
    # recovers β from ratios of ᾱ, which loses ~3 more digits in float32 (in diffusers).
    atol = 5e-6 if rescale else 1e-8
    torch.testing.assert_close(ours.betas, theirs.betas, rtol=0, atol=atol)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------- timestep spacings


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
def test_every_step_count_up_to_T_gives_that_many_strictly_decreasing_timesteps_in_range(spacing):
    for n in range(1, T + 1):
        steps = spaced_timesteps(T, n, spacing)
        assert len(steps) == n, n
        assert all(a > b for a, b in zip(steps, steps[1:])), n
        assert 0 <= steps[-1] and steps[0] <= T - 1, n


def test_spacings_have_their_documented_endpoints():
    assert spaced_timesteps(T, 10, "leading") == list(range(900, -1, -100))
    assert spaced_timesteps(T, 10, "leading", steps_offset=1) == list(range(901, 0, -100))
    assert spaced_timesteps(T, 10, "linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert spaced_timesteps(T, 10, "trailing") == list(range(999, 0, -100))
    assert spaced_timesteps(T, 1, "trailing") == [999]


def test_leading_steps_offset_past_the_last_timestep_is_an_error_naming_the_limit():
    with pytest.raises(ValueError, match="steps_offset=1.*1000.*num_train_timesteps=1000"):
        spaced_timesteps(T, 1000, "leading", steps_offset=1)


def _diffusers_classes():
    diffusers = pytest.importorskip("diffusers")
    return {"ddpm": diffusers.DDPMScheduler, "ddim": diffusers.DDIMScheduler, "pndm": diffusers.PNDMScheduler}


# n for which diffusers' floating-point arange gives n+1 "trailing" timesteps ending in -1 (we give n).
TRAILING_BROKEN_IN_DIFFUSERS = {n for n in range(1, T + 1) if len(np.arange(T, 0, -T / n)) != n}


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
@pytest.mark.parametrize(
    "name, ours_cls, kwargs, every",
    [
        ("ddpm", DDPMScheduler, {}, 1),
        ("ddim", DDIMScheduler, {}, 13),  # set_timesteps shares DDPM's code path; a sample of n suffices
        ("pndm", PNDMScheduler, {"skip_prk_steps": True}, 1),
        ("pndm", PNDMScheduler, {"skip_prk_steps": False}, 1),
    ],
)
def test_timesteps_equal_diffusers_for_every_step_count(spacing, name, ours_cls, kwargs, every):
    theirs_cls = _diffusers_classes()[name]
    ours = ours_cls(timestep_spacing=spacing, **kwargs)
    theirs = theirs_cls(timestep_spacing=spacing, **kwargs)
    first = 4 if name == "pndm" and not kwargs["skip_prk_steps"] else 1
    broken = TRAILING_BROKEN_IN_DIFFUSERS if spacing == "trailing" else set()
    counts = sorted(set(range(first, T + 1, every)) | {T} | broken)
    with one_thread():
        _compare_timesteps(ours, theirs, counts, spacing, name)


def _compare_timesteps(ours, theirs, counts, spacing, name):
    for n in counts:
        ours.set_timesteps(n)
        theirs.set_timesteps(n)
        got, expected = ours.timesteps.tolist(), theirs.timesteps.tolist()
        assert ours.timesteps.dtype == torch.int64
        if spacing == "trailing" and n in TRAILING_BROKEN_IN_DIFFUSERS:
            # diffusers appends a spurious -1 (which indexes alphas_cumprod[-1], the noisiest level).
            if name == "pndm":
                assert -1 in expected and len(expected) == len(got) + 1, n
            else:
                assert expected == got + [-1], n
        else:
            assert got == expected, (n, got[:8], expected[:8])


@pytest.mark.parametrize("spacing", TIMESTEP_SPACINGS)
def test_pndm_calls_the_model_once_per_timestep_and_repeats_exactly_the_documented_entries(spacing):
    with one_thread():
        _check_pndm_layouts(spacing)


def _check_pndm_layouts(spacing):
    for skip in (False, True):
        scheduler = PNDMScheduler(timestep_spacing=spacing, skip_prk_steps=skip)
        for n in range(4 if not skip else 1, T + 1, 7):
            scheduler.set_timesteps(n)
            ts = scheduler.timesteps.tolist()
            distinct = [t for i, t in enumerate(ts) if i == 0 or t != ts[i - 1]]
            repeats = [i for i in range(1, len(ts)) if ts[i] == ts[i - 1]]
            assert all(a > b for a, b in zip(distinct, distinct[1:]))  # non-increasing; distinct values decrease
            if skip:
                assert len(ts) == n + 1 if n > 1 else len(ts) == 1
                assert repeats == ([2] if n > 1 else [])
                assert distinct == spaced_timesteps(T, n, spacing)
            else:
                assert len(ts) == n + 9
                # Runge-Kutta steps k = 0, 1, 2 call the model at s_k, twice at the half step, then at s_{k+1}, which
                # also starts the next step: the half steps (entries 2, 6, 10) and the step boundaries (4, 8, 12)
                # repeat. When T // n < 2 the half step is s_{k+1} itself: entries 2-4, 6-8 and 10-12 repeat.
                half = T // n // 2
                expected = [2, 4, 6, 8, 10, 12] if half else [2, 3, 4, 6, 7, 8, 10, 11, 12]
                assert repeats == expected, (n, ts[:14])
