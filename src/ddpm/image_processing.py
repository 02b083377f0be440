"""Turning model samples into images: tensors, numpy arrays, PIL images, grids and PNG files.

A sampler ends with a batch ``x_0`` of shape (B, C, H, W) in the model's range [-1, 1]. ``postprocess`` maps it
to [0, 1] and returns one of three forms (``OUTPUT_TYPES``): an NCHW tensor (``"pt"``), an NHWC float32 numpy array
(``"np"``) or a list of PIL images (``"pil"``); ``"latent"`` returns ``x_0`` itself, untouched, as diffusers'
pipelines do for that name. PIL conversion rounds to the nearest of the 256 levels
(``round(x * 255)``), as diffusers does, so the same sample gives the same 8-bit pixels in both libraries.

Pillow is imported only by the functions that need it, so ``import ddpm`` stays light.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import torch

from .io import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "OUTPUT_TYPES",
    "OutputType",
    "check_output_type",
    "grid_shape",
    "make_image_grid",
    "numpy_to_pil",
    "postprocess",
    "pt_to_numpy",
    "save_image",
]

#: The accepted values of every ``output_type=`` argument (``"latent"``: the raw sample, not an image).
OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")
OutputType = Literal["pil", "np", "pt", "latent"]


def check_output_type(output_type: str) -> None:
    """Raise ``ValueError`` naming the allowed values unless ``output_type`` is one of ``OUTPUT_TYPES``."""
    if output_type not in OUTPUT_TYPES:
        allowed = ", ".join(repr(o) for o in OUTPUT_TYPES)
        raise ValueError(f"output_type={output_type!r} is not supported; use one of {allowed}")


@overload
def postprocess(sample: torch.Tensor, output_type: Literal["pt", "latent"]) -> torch.Tensor: ...
@overload
def postprocess(sample: torch.Tensor, output_type: Literal["np"]) -> np.ndarray: ...
@overload
def postprocess(sample: torch.Tensor, output_type: Literal["pil"] = "pil") -> list[Image.Image]: ...
@overload
def postprocess(sample: torch.Tensor, output_type: str) -> torch.Tensor | np.ndarray | list[Image.Image]: ...
def postprocess(sample: torch.Tensor, output_type: str = "pil") -> torch.Tensor | np.ndarray | list[Image.Image]:
    """Map a batch of model samples in [-1, 1] to images in [0, 1] of the requested form.

    Values outside [-1, 1] are clamped. In float32 the arithmetic matches diffusers' pipelines step for step;
    half-precision samples are converted to float32 first, so ``"np"`` is always float32.

    Args:
        sample: The final sample, shape (B, C, H, W), values nominally in [-1, 1].
        output_type: ``"pt"`` for an NCHW tensor on ``sample``'s device, ``"np"`` for an NHWC float32 array,
            ``"pil"`` for a list of B PIL images (mode ``"RGB"``, or ``"L"`` for one channel), ``"latent"`` for
            ``sample`` itself (diffusers' name for "skip the post-processing").

    Returns:
        The images in the requested form, all with values in [0, 1] (0..255 for PIL); for ``"latent"``, ``sample``.

    Raises:
        ValueError: ``output_type`` is not one of ``OUTPUT_TYPES``, or ``sample`` is not 4-D.
    """
    check_output_type(output_type)
    if sample.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch of samples, got shape {tuple(sample.shape)}")
    if output_type == "latent":
        return sample
    if sample.dtype not in (torch.float32, torch.float64):
        sample = sample.float()
    images = (sample / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
    if output_type == "pt":
        return images
    array = pt_to_numpy(images)
    if output_type == "np":
        return array
    if output_type == "pil":
        return numpy_to_pil(array)
    raise AssertionError("unreachable: check_output_type accepted an unknown value")  # pragma: no cover


def pt_to_numpy(images: torch.Tensor) -> np.ndarray:
    """Convert an NCHW tensor in [0, 1] to an NHWC float32 numpy array on the CPU."""
    # (B, C, H, W) -> (B, H, W, C)
    return images.detach().cpu().permute(0, 2, 3, 1).float().numpy()


def numpy_to_pil(images: np.ndarray) -> list[Image.Image]:
    """Convert float images in [0, 1] to 8-bit PIL images, rounding to the nearest level.

    Args:
        images: An NHWC batch, shape (B, H, W, C), or a single HWC image; C is 1 (grayscale) or 3 (RGB).

    Returns:
        A list of B PIL images (mode ``"L"`` for one channel, ``"RGB"`` for three).

    Raises:
        ValueError: The array is not 3-D or 4-D, or has a channel count other than 1 or 3.
    """
    from PIL import Image

    if images.ndim == 3:
        images = images[None, ...]  # (H, W, C) -> (1, H, W, C)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, H, W, 1 or 3) in [0, 1], got shape {images.shape}")
    levels = (images * 255).round().astype("uint8")
    if levels.shape[-1] == 1:
        return [Image.fromarray(img[..., 0], mode="L") for img in levels]
    return [Image.fromarray(img, mode="RGB") for img in levels]


def grid_shape(n: int) -> tuple[int, int]:
    """Rows and columns of the most nearly square grid with room for ``n`` images (columns ≥ rows)."""
    if n < 1:
        raise ValueError(f"a grid needs at least one image, got {n}")
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def make_image_grid(
    images: Sequence[Image.Image],
    rows: int,
    cols: int,
    resize: int | tuple[int, int] | None = None,
) -> Image.Image:
    """Paste images into one image with ``rows`` rows and ``cols`` columns, filled row by row.

    Unlike ``torchvision.utils.make_grid(nrow=...)``, which counts columns, both numbers are named. If there are
    fewer images than cells, the last cells stay black.

    Args:
        images: PIL images of one size (or any sizes when ``resize`` is given).
        rows: The number of rows.
        cols: The number of columns.
        resize: Resize every image to this size first: an int for square images, or ``(width, height)``.

    Returns:
        An RGB image of size ``(cols * width, rows * height)``.

    Raises:
        ValueError: No images, more images than ``rows * cols``, a non-positive row or column count, or images of
            different sizes without ``resize``.
    """
    from PIL import Image

    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be at least 1, got rows={rows}, cols={cols}")
    if not images:
        raise ValueError("make_image_grid needs at least one image")
    if len(images) > rows * cols:
        raise ValueError(
            f"{len(images)} images do not fit a grid of {rows} rows x {cols} columns ({rows * cols} cells)"
        )
    if resize is not None:
        width, height = (resize, resize) if isinstance(resize, int) else resize
        images = [img.resize((width, height)) for img in images]
    w, h = images[0].size
    for i, img in enumerate(images):
        if img.size != (w, h):
            raise ValueError(
                f"image {i} is {img.size[0]}x{img.size[1]}, image 0 is {w}x{h}; pass resize=... to mix sizes"
            )
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, img in enumerate(images):
        row, col = divmod(i, cols)
        grid.paste(img.convert("RGB"), (col * w, row * h))
    return grid


def _pil_format(path: Path) -> str:
    from PIL import Image

    ext = path.suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path}: use a file name ending in .png, .jpg, .webp, ...")
    return fmt


def save_image(image: Image.Image, path: str | os.PathLike[str], **save_kwargs: Any) -> Path:
    """Save a PIL image atomically: a killed process leaves the old file or the new one, never half a file.

    Args:
        image: The image.
        path: The destination; its suffix chooses the format (``.png``, ``.jpg``, ...). Parent folders are created.
        **save_kwargs: Passed to ``PIL.Image.Image.save`` (e.g. ``quality=95`` for JPEG).

    Returns:
        The destination path.

    Raises:
        ValueError: The suffix is not an image format Pillow knows.
    """
    path = Path(path)
    fmt = _pil_format(path)
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt, **save_kwargs))
    return path
