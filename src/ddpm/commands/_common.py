"""Arguments and helpers shared by several ``ddpm`` subcommands."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: ``--dtype`` values and the torch dtypes they mean.
DTYPES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The positional MODEL: a Hub id, a local folder, or a bundled model's short name."""
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a Hugging Face Hub id (google/ddpm-cifar10-32), a local pipeline folder, or a bundled model name "
        "(default: the bundled model, when this installation has one)",
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


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``--device``: ``auto`` picks CUDA when available; several processes each take
    ``cuda:<LOCAL_RANK>``.

    Raises:
        ValueError: ``cuda`` was asked for and torch sees no CUDA device, or ``name`` is not in ``DEVICES``.
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device here; use --device cpu (or auto)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    raise ValueError(f"--device {name!r}: use one of {', '.join(DEVICES)}")


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype for ``--dtype`` (``fp32``, ``fp16``, ``bf16``).

    Raises:
        ValueError: ``name`` is not a key of ``DTYPES``.
    """
    import torch

    if name not in DTYPES:
        raise ValueError(f"--dtype {name!r}: use one of {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


def env_int(name: str, default: int) -> int:
    """An integer environment variable such as ``WORLD_SIZE``; errors name the variable."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None
