"""Arguments shared by several ``ddpm`` subcommands: the positional MODEL and the number types of options.

Devices, dtypes and processes are resolved by :mod:`ddpm.runtime`, which the library uses too.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

__all__ = [
    "MAX_SEED",
    "MAX_THREADS",
    "add_model_argument",
    "at_most",
    "finite_float",
    "int_list",
    "non_negative",
    "non_negative_float",
    "plural",
    "positive",
    "positive_seconds",
    "resolve_model",
    "seed",
    "seed_up_to",
    "set_threads",
    "threads",
]

#: The largest ``--seed``: image ``i`` is seeded ``S + i`` and torch generators take seeds below 2**63 here.
MAX_SEED = 2**63 - 1
#: The most ``--threads`` accepted; more threads than this is a typo, never a speed-up.
MAX_THREADS = 1024


def add_model_argument(
    parser: argparse.ArgumentParser, omitted: str = "the bundled model, when this installation has one"
) -> None:
    """The positional MODEL: a Hub id, a local folder, or a bundled model's short name; ``omitted`` says what the
    command does without it."""
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a Hugging Face Hub id (google/ddpm-cifar10-32), a local pipeline folder, or a bundled model name "
        f"(default: {omitted})",
    )


def resolve_model(model: str | None) -> str:
    """``model`` itself, or the default bundled model when it is omitted.

    Raises:
        ValueError: ``model`` is omitted and no bundled model is installed.
    """
    if model:
        return model
    from ..hub import BUNDLED_MODELS

    if BUNDLED_MODELS:
        return next(iter(BUNDLED_MODELS))
    raise ValueError(
        "MODEL is required: give a Hub id such as google/ddpm-cifar10-32 or a local folder "
        "(this installation bundles no default model)"
    )


# Option types: argparse turns their ArgumentTypeError into a usage error (exit status 2).
def positive(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> int:
    """An integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def at_most(limit: int) -> Callable[[str], int]:
    """The option type of an integer from 1 to ``limit`` (the option's help says why the limit)."""

    def bounded(text: str) -> int:
        value = positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit:,}, got {value:,}")
        return value

    bounded.__name__ = "positive"  # argparse's "invalid positive value: 'x'" for a non-integer
    return bounded


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0 (nan and inf refused)."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    """Comma-separated integers, at least one: ``32,64,128``."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def finite_float(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are refused)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (``nan``, ``inf`` and negatives are refused)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def seed(text: str) -> int:
    """A seed: an integer from 0 to :data:`MAX_SEED`."""
    return seed_up_to(MAX_SEED, "2**63-1")(text)


def seed_up_to(limit: int, written: str) -> Callable[[str], int]:
    """The option type of a seed from 0 to ``limit`` (``written`` as the message shows it, e.g. ``"2**32-1"``)."""

    def bounded(text: str) -> int:
        value = int(text)
        if not 0 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be from 0 to {written}, got {text}")
        return value

    bounded.__name__ = "seed"  # argparse's "invalid seed value: 'x'" for a non-integer
    return bounded


def threads(text: str) -> int:
    """A CPU thread count from 1 to :data:`MAX_THREADS`."""
    value = int(text)
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"must be from 1 to {MAX_THREADS}, got {value} (this machine has {os.cpu_count()} CPUs)"
        )
    return value


def plural(count: int, noun: str) -> str:
    """``"1 image"``, ``"2 images"``, ``"1,000 images"``: a count with its noun for messages."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def set_threads(count: int | None) -> None:
    """Apply a ``--threads`` option: torch's intra-op thread count, unless ``count`` is None (torch's choice)."""
    if count is not None:
        import torch

        torch.set_num_threads(count)
