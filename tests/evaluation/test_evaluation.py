"""Sample-quality metrics against closed forms, and the shipped digit classifier."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm.evaluation import (
    evaluate_digits,
    frechet_distance,
    gaussian_stats,
    knn_radii,
    load_digit_classifier,
    precision_recall,
)
from ddpm.evaluation.classifier import heldout_accuracy
from ddpm.evaluation.metrics import compare_images
from ddpm.training.data import mnist_digits


def test_identical_sets_have_precision_and_recall_one_and_zero_frechet_distance():
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)
    mu, sigma = gaussian_stats(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_disjoint_sets_have_precision_and_recall_zero():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)


def test_knn_radius_is_the_distance_to_the_kth_neighbour_excluding_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, k=2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="more than k vectors"):
        knn_radii(points, k=4)


def test_precision_counts_generated_points_inside_the_real_balls():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)  # k=1 radii: all 1
    generated = torch.tensor([[0.5], [3.9], [10.0], [11.0]], dtype=torch.float64)  # k=1 radii: 3.4, 5.1, 1, 1
    precision, recall = precision_recall(real, generated, k=1)
    assert precision == 0.5  # 0.5 and 3.9 lie within 1 of a real point; 10 and 11 do not
    assert recall == 1.0  # every real point is within 3.4 of 0.5


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    # Diagonal covariances commute: d² = ‖μ1 - μ2‖² + Σ (√a_i - √b_i)².
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 9.0])
    expected = 1 + 0 + 9 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-12)
    # Non-commuting full covariances: a rotated copy of the same Gaussian has distance ‖Δμ‖² only.
    sigma = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    theta = 0.3
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    d = frechet_distance(torch.zeros(2), sigma, torch.ones(2), rot @ sigma @ rot.T)
    eig = torch.linalg.eigvalsh(sigma)
    # Tr((Σ R Σ Rᵀ)^{1/2}) has no simple form; check against scipy-free 2x2 formula: Tr√M = √(tr M + 2√det M).
    m = sigma @ rot @ sigma @ rot.T
    trace_sqrt = math.sqrt(float(torch.trace(m)) + 2 * math.sqrt(float(torch.det(m))))
    assert d == pytest.approx(2 + 2 * float(eig.sum()) - 2 * trace_sqrt, rel=1e-10)


def test_frechet_distance_of_shifted_samples_approaches_the_shift_squared():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    y = torch.randn(20000, 3, generator=g, dtype=torch.float64) + torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(4.0, abs=0.05)


def test_compare_images_gives_max_abs_and_psnr():
    a = torch.zeros(1, 3, 4, 4)
    b = a + 0.1
    diff = compare_images(a, b)
    assert diff.max_abs == pytest.approx(0.1) and diff.psnr_db == pytest.approx(20.0)
    assert compare_images(a, a).psnr_db == math.inf
    with pytest.raises(ValueError, match="shape"):
        compare_images(a, a[0])


def test_shipped_digit_classifier_is_at_least_97_percent_accurate_on_heldout_digits():
    assert heldout_accuracy(load_digit_classifier()) >= 0.97


def test_real_digits_score_like_the_real_reference_and_one_class_does_not():
    train, labels = mnist_digits("train")
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:200]
    generated, reference = evaluate_digits(train[pick], reference_draws=2)
    assert abs(generated.precision - reference.precision) < 0.1
    assert abs(generated.recall - reference.recall) < 0.1
    assert generated.frechet_distance < 2 * reference.frechet_distance
    assert sum(generated.class_counts) == 200 and max(generated.class_counts) < 40
    only_sevens, _ = evaluate_digits(train[labels == 7][:200], reference_draws=1)
    assert only_sevens.class_counts[7] >= 195 and only_sevens.uniform_tv > 0.85
    assert only_sevens.recall < 0.3 and only_sevens.frechet_distance > 10 * reference.frechet_distance
