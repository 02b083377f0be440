"""Sample-quality metrics: improved precision and recall and the Fréchet distance on feature vectors, and the pixel
difference of images from a reference.

Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models", Sec. 2): the manifold of a set of feature vectors Φ is approximated by the union of balls
centred on each vector with radius the distance to its k-th nearest neighbour in Φ (Eq. 2),

    f(φ, Φ) = 1  if  ‖φ - φ'‖₂ ≤ ‖φ' - NN_k(φ', Φ)‖₂  for at least one φ' ∈ Φ,  else 0,

    precision(Φ_r, Φ_g) = mean over φ_g ∈ Φ_g of f(φ_g, Φ_r)     (generated samples that look real)   (Eq. 1)
    recall(Φ_r, Φ_g)    = mean over φ_r ∈ Φ_r of f(φ_r, Φ_g)     (real samples the generator covers)

Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, as in FID):

    d² = ‖μ_1 - μ_2‖² + Tr(Σ_1 + Σ_2 - 2 (Σ_1 Σ_2)^{1/2}).

Tr((Σ_1 Σ_2)^{1/2}) is computed as the sum of square roots of the eigenvalues of Σ_1^{1/2} Σ_2 Σ_1^{1/2}, a
symmetric positive semi-definite matrix with the same eigenvalues, in float64.

Both depend on the sample count (small sets give lower recall and larger distances), so compare numbers only at
equal counts: the evaluation reports real-vs-real at the same count as the reference.

Images against a reference (the fast path against the float32 loop, one library against another), pixel values in
[0, 1]: the largest absolute difference, and the peak signal-to-noise ratio

    PSNR = 10 log10(1 / MSE)  dB      (peak value 1; infinite for identical images).
"""

from __future__ import annotations

import dataclasses
import math

import torch

__all__ = [
    "ImageDifference",
    "compare_images",
    "frechet_distance",
    "gaussian_stats",
    "knn_radii",
    "manifold_coverage",
    "precision_recall",
]


def knn_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance from each vector to its ``k``-th nearest neighbour in the same set (itself excluded).

    Args:
        features: (N, D) vectors, N > k.
        k: Which neighbour.

    Returns:
        (N,) radii.
    """
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k={k} nearest neighbours need more than k vectors; got {n}")
    distances = torch.cdist(features, features)  # (N, N)
    # The smallest distance of each row is the vector to itself (0); the k-th neighbour is the (k+1)-th smallest.
    return distances.kthvalue(k + 1, dim=1).values


def manifold_coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """f(φ, Φ) of Eq. 2 for each query: 1.0 if it lies in at least one ball, else 0.0. Returns (M,)."""
    distances = torch.cdist(queries, manifold)  # (M, N)
    return (distances <= radii.unsqueeze(0)).any(dim=1).to(torch.float64)


def precision_recall(real: torch.Tensor, generated: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of ``generated`` (M, D) against ``real`` (N, D) with ``k``-NN manifolds."""
    precision = manifold_coverage(real, knn_radii(real, k), generated).mean()
    recall = manifold_coverage(generated, knn_radii(generated, k), real).mean()
    return float(precision), float(recall)


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64."""
    x = features.to(torch.float64)
    return x.mean(dim=0), torch.cov(x.T)


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """The Fréchet distance d² between N(mu1, sigma1) and N(mu2, sigma2) (formula in the module docstring)."""
    mu1, sigma1, mu2, sigma2 = (t.to(torch.float64) for t in (mu1, sigma1, mu2, sigma2))
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to rounding
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + torch.trace(sigma1) + torch.trace(sigma2) - 2 * trace_sqrt
    return float(distance.clamp(min=0))


@dataclasses.dataclass(frozen=True)
class ImageDifference:
    """How far images are from a reference, both in [0, 1].

    Attributes:
        max_abs: The largest absolute pixel difference.
        psnr_db: Peak signal-to-noise ratio, ``10 log10(1 / MSE)`` in dB (infinite for identical images).
    """

    max_abs: float
    psnr_db: float


def compare_images(reference: torch.Tensor, images: torch.Tensor) -> ImageDifference:
    """Max absolute difference and PSNR of ``images`` against ``reference`` (same shape, values in [0, 1]).

    Raises:
        ValueError: The shapes differ.
    """
    if reference.shape != images.shape:
        raise ValueError(f"cannot compare images of shape {tuple(images.shape)} with {tuple(reference.shape)}")
    diff = images.detach().double().cpu() - reference.detach().double().cpu()
    mse = float(diff.square().mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    return ImageDifference(max_abs=float(diff.abs().max()), psnr_db=psnr)
