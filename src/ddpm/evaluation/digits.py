"""Scoring generated 32×32 digits against the held-out MNIST digits, with real-vs-real as the reference.

The generated set and a real set of the same size (digits from the training split, which the held-out split does
not contain) are each compared with the held-out split (1,000 digits) in the feature space of the shipped digit
classifier: improved precision and recall (k-NN manifolds), the Fréchet distance, and the histogram of predicted
classes. The real reference is averaged over several random draws, and its spread is reported with it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import torch

from .classifier import DigitClassifier, digit_features, load_digit_classifier
from .metrics import frechet_distance, gaussian_stats, precision_recall

__all__ = ["QualityReport", "evaluate_digits", "format_table", "load_digit_folder"]

_OTHER_SPLIT = {"heldout": "train", "train": "heldout"}


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """The metrics of one set of images against the real split.

    Attributes:
        name: What was scored (``"generated"``, ``"real (train split)"``).
        n: Number of images.
        precision: Improved precision (share of the images on the real manifold), 0..1; higher is better.
        recall: Improved recall (share of real digits on the images' manifold), 0..1; higher is better.
        frechet_distance: Fréchet distance of classifier features; lower is better.
        class_counts: Predicted digit counts, classes 0..9.
        uniform_tv: Total-variation distance of the class shares from uniform (0 = perfectly balanced).
        confidence: Mean top-class probability of the classifier (low for malformed digits).
        spread: Standard deviations of (precision, recall, frechet_distance) over reference draws, if any.
    """

    name: str
    n: int
    precision: float
    recall: float
    frechet_distance: float
    class_counts: tuple[int, ...]
    uniform_tv: float
    confidence: float
    spread: tuple[float, float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_digit_folder(folder: str | os.PathLike[str], limit: int | None = None) -> torch.Tensor:
    """Every image under ``folder`` as grayscale 32×32 uint8, shape (N, 1, 32, 32); other sizes are resized."""
    from ..training.data import ImageFolderDataset

    dataset = ImageFolderDataset(folder, 32, "L", what="image")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return torch.stack([dataset[i] for i in range(n)])


def _score(
    name: str,
    feats: torch.Tensor,
    classes: torch.Tensor,
    probs: torch.Tensor,
    real_feats: torch.Tensor,
    real_stats: tuple[torch.Tensor, torch.Tensor],
    k: int,
) -> QualityReport:
    precision, recall = precision_recall(real_feats, feats, k=k)
    mu, sigma = gaussian_stats(feats)
    counts = torch.bincount(classes, minlength=10)
    shares = counts.double() / counts.sum()
    return QualityReport(
        name=name,
        n=len(feats),
        precision=precision,
        recall=recall,
        frechet_distance=frechet_distance(mu, sigma, *real_stats),
        class_counts=tuple(int(c) for c in counts),
        uniform_tv=float(0.5 * (shares - 0.1).abs().sum()),
        confidence=float(probs.mean()),
    )


@torch.no_grad()
def _features(model: DigitClassifier, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    feats, classes = digit_features(model, images)
    probs = torch.softmax(model.head(feats.float()), dim=1).max(dim=1).values
    return feats, classes, probs


@functools.lru_cache(maxsize=1)
def _shipped_classifier() -> DigitClassifier:
    return load_digit_classifier()


@functools.lru_cache(maxsize=2)
def _shipped_split_features(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _split_features(_shipped_classifier(), split)


def _split_features(model: DigitClassifier, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, predicted classes and confidences of a real MNIST split."""
    from ..training.data import mnist_digits

    return _features(model, mnist_digits(split)[0])


def evaluate_digits(
    images: torch.Tensor,
    *,
    real_split: str = "heldout",
    k: int = 3,
    reference_draws: int = 5,
    seed: int = 0,
    classifier: DigitClassifier | None = None,
) -> tuple[QualityReport, QualityReport]:
    """Score generated digits and a same-size real reference against an MNIST split.

    Args:
        images: Generated digits, uint8 (N, 1, 32, 32), white on black like MNIST.
        real_split: The split compared against: ``"heldout"`` (default; never trained on) or ``"train"``. The real
            reference is drawn from the other split.
        k: Neighbour count of the precision/recall manifolds.
        reference_draws: Random draws of N real digits averaged for the reference.
        seed: Seed of those draws.
        classifier: The feature network (default: the shipped one).

    Returns:
        ``(generated_report, real_reference_report)``.

    Raises:
        ValueError: Unknown split, or fewer images than ``k + 1``, or more than the reference split holds.
    """
    if real_split not in _OTHER_SPLIT:
        raise ValueError(f"real_split must be one of {', '.join(_OTHER_SPLIT)}, got {real_split!r}")
    model = classifier or _shipped_classifier()
    features_of = _shipped_split_features if classifier is None else functools.partial(_split_features, model)
    real_feats, _, _ = features_of(real_split)
    pool = features_of(_OTHER_SPLIT[real_split])
    n = len(images)
    if n <= k:
        raise ValueError(f"need more than k={k} images to score, got {n}")
    if n > len(pool[0]):
        raise ValueError(f"at most {len(pool[0])} images can be scored against a same-size real reference, got {n}")
    real_stats = gaussian_stats(real_feats)
    generated = _score("generated", *_features(model, images), real_feats, real_stats, k)

    pick_from = len(pool[0])
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(reference_draws):
        pick = torch.randperm(pick_from, generator=g)[:n]
        feats, classes, probs = (t[pick] for t in pool)
        draws.append(_score("real", feats, classes, probs, real_feats, real_stats, k))
    values = torch.tensor([[d.precision, d.recall, d.frechet_distance] for d in draws], dtype=torch.float64)
    mean = values.mean(dim=0)
    std = values.std(dim=0) if reference_draws > 1 else torch.zeros(3, dtype=torch.float64)
    counts = torch.tensor([d.class_counts for d in draws], dtype=torch.float64).mean(dim=0).round().long()
    reference = QualityReport(
        name=f"real ({_OTHER_SPLIT[real_split]} split, mean of {reference_draws})",
        n=n,
        precision=float(mean[0]),
        recall=float(mean[1]),
        frechet_distance=float(mean[2]),
        class_counts=tuple(int(c) for c in counts),
        uniform_tv=sum(d.uniform_tv for d in draws) / reference_draws,
        confidence=sum(d.confidence for d in draws) / reference_draws,
        spread=(float(std[0]), float(std[1]), float(std[2])),
    )
    return generated, reference


def format_table(reports: list[QualityReport], real_split: str = "heldout") -> str:
    """A Markdown table of reports (one row each)."""
    lines = [
        f"| images (vs {real_split} split) | N | precision ↑ | recall ↑ | Fréchet distance ↓ "
        "| classes 0-9 (predicted) | TV from uniform ↓ | confidence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        if r.spread is not None:
            p, rc, fd = (f"{v:.3f} ± {s:.3f}" for v, s in zip((r.precision, r.recall, r.frechet_distance), r.spread))
        else:
            p, rc, fd = f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.frechet_distance:.3f}"
        counts = " ".join(str(c) for c in r.class_counts)
        lines.append(f"| {r.name} | {r.n} | {p} | {rc} | {fd} | {counts} | {r.uniform_tv:.3f} | {r.confidence:.3f} |")
    return "\n".join(lines)
