"""Images in and out: user images into the model's range, model samples into tensors, arrays, PIL images, grids, files.

Input (the editing pipelines and commands): :func:`open_image` opens a file the user names, refusing what is not a
regular image file of bounded size before decoding it; :func:`preprocess` turns PIL images, numpy arrays or tensors
in diffusers' conventions into an NCHW float32 batch in [-1, 1] of a given size and channel count.

Output:
A sampler ends with a batch ``x_0`` of shape (B, C, H, W) in the model's range [-1, 1]. ``postprocess`` maps it
to [0, 1] and returns one of three forms (``OUTPUT_TYPES``): an NCHW tensor (``"pt"``), an NHWC float32 numpy array
(``"np"``) or a list of PIL images (``"pil"``); ``"latent"`` returns ``x_0`` itself, untouched, as diffusers'
pipelines do for that name. PIL conversion rounds to the nearest of the 256 levels
(``round(x * 255)``), as diffusers does, so the same sample gives the same 8-bit pixels in both libraries.

Pillow is imported only by the functions that need it, so ``import ddpm`` stays light.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, overload

import numpy as np
import torch

from .errors import DDPMError, ImageError
from .io import atomic_write, open_regular

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "OUTPUT_TYPES",
    "ImageInput",
    "OutputType",
    "check_output_type",
    "grid_shape",
    "load_image",
    "make_image_grid",
    "numpy_to_pil",
    "open_image",
    "postprocess",
    "preprocess",
    "pt_to_numpy",
    "resize_center_crop",
    "save_image",
]

#: The most pixels (width × height) an input image may have: 2**27, about 134 million (e.g. 16384 × 8192). Larger
#: images are refused before they are decoded: a 20000×20000 PNG of a few hundred KB (a decompression bomb) would need
#: 1.2 GB as RGB. Resize such images beforehand.
MAX_IMAGE_PIXELS = 2**27
#: The largest input image file, in bytes.
MAX_IMAGE_BYTES = 2**30

#: What the editing pipelines accept as an image: a PIL image, an (H, W[, C]) or (B, H, W, C) numpy array in [0, 1]
#: (uint8 arrays in [0, 255]), a (C, H, W) or (B, C, H, W) tensor in [-1, 1], or a list of PIL images or arrays.
ImageInput = Union["Image.Image", np.ndarray, torch.Tensor, Sequence["Image.Image"], Sequence[np.ndarray]]

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


# ------------------------------------------------------------------------------------------------------ image input


@contextlib.contextmanager
def open_image(
    path: str | os.PathLike[str], *, what: str = "image", role: str = "an image", error: type[DDPMError] = ImageError
) -> Iterator[Image.Image]:
    """``path`` opened as a PIL image (header read, pixels not yet decoded), for use in a ``with`` block.

    Refused with ``error`` naming the file when it is not a regular file (a FIFO or folder never hangs), larger than
    :data:`MAX_IMAGE_BYTES`, not an image Pillow can read, or above :data:`MAX_IMAGE_PIXELS` pixels (checked from
    the header, before decoding).

    Args:
        path: The image file.
        what: What the image is, for the messages (``"image"``, ``"mask"``).
        role: What the size limit is for, for the messages (``"an image"``, ``"a training image"``).
        error: The :class:`~ddpm.errors.DDPMError` subclass to raise.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    with open_regular(path, what=what, max_bytes=MAX_IMAGE_BYTES, error=error) as f:
        try:
            with warnings.catch_warnings():
                # Pillow warns above its own limit (89 M pixels) and refuses above twice that; ours is checked next.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(f)
        except Image.DecompressionBombError as exc:
            raise error(
                f"{what} {path} has more than the {MAX_IMAGE_PIXELS:,} pixels {role} may have (a decompression "
                f"bomb, or a huge photo: {exc}); resize it or remove it"
            ) from None
        except UnidentifiedImageError:
            raise error(
                f"cannot read {what} {path}: not an image file Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP...)"
            ) from None
        except (OSError, ValueError) as exc:
            raise error(f"cannot read {what} {path}: {exc}") from None
        with img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise error(
                    f"{what} {path} is {width}×{height} ({width * height:,} pixels), more than the "
                    f"{MAX_IMAGE_PIXELS:,} {role} may have (a decompression bomb, or a huge photo); resize it or "
                    "remove it"
                )
            yield img


def load_image(
    path: str | os.PathLike[str], *, mode: str | None = None, what: str = "image", error: type[DDPMError] = ImageError
) -> Image.Image:
    """The image in ``path``, decoded (and converted to ``mode``, e.g. ``"L"`` or ``"RGB"``, when given).

    Checked as :func:`open_image` checks it; truncated or corrupt pixel data is refused with ``error`` too.
    """
    with open_image(path, what=what, error=error) as img:
        try:
            return img.convert(mode) if mode is not None else img.copy()
        except (OSError, ValueError) as exc:  # truncated or corrupt pixel data
            raise error(f"cannot read {what} {path}: {exc}") from None


def resize_center_crop(img: Image.Image, size: int | tuple[int, int], *, nearest: bool = False) -> Image.Image:
    """``img`` scaled so that it covers ``size``, then its centre cut out at ``size``.

    ``size`` is a side (a square) or ``(height, width)``. The scale is the smallest that covers the target (a square
    target: the short side becomes ``size``), the resampling bicubic, or nearest-neighbour with ``nearest=True``, which
    adds no new level (a black-and-white mask stays black and white). Two images of one size get the same geometry
    (the same scale and the same crop box) whatever the resampling, so a mask stays on its image.
    """
    from PIL import Image

    height, width = (size, size) if isinstance(size, int) else size
    w, h = img.size
    scale = max(width / w, height / h)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    if (new_w, new_h) != (w, h):
        if nearest:
            img = img.resize((new_w, new_h), Image.Resampling.NEAREST)
        else:
            img = img.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None if scale > 0.5 else 3.0)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return img.crop((left, top, left + width, top + height))


def preprocess(
    image: ImageInput,
    *,
    channels: int,
    size: tuple[int, int] | None = None,
    what: str = "image",
) -> torch.Tensor:
    """``image`` as a float32 batch (B, C, H, W) in [-1, 1], the model's range, following diffusers' conventions.

    * PIL images are converted to ``L`` (``channels`` = 1) or ``RGB`` (3) and scaled from [0, 255];
    * numpy arrays are (H, W), (H, W, C) or (B, H, W, C) in [0, 1] (uint8 arrays in [0, 255]), as
      ``output_type="np"`` returns them;
    * tensors are (C, H, W) or (B, C, H, W) already in [-1, 1], as a pipeline's ``x_0`` (``output_type="pt"``
      is in [0, 1]: map it with ``2 * x - 1``);
    * a list of PIL images or arrays is stacked into one batch (all of one size).

    Args:
        image: The image(s).
        channels: The model's ``in_channels``; a 1-channel array or tensor is repeated to 3 channels, never the
            reverse (a colour image for a grayscale model must be converted by the caller, or given as PIL).
        size: ``(height, width)`` the result must have; PIL images of another size are resized to it (bicubic),
            arrays and tensors are refused. None: keep the image's size.
        what: What the image is, for the messages (``"image"``, ``"mask_image"``).

    Raises:
        ImageError: The type, shape, channel count, value range (NaN or inf included) or size is not usable; the
            message says what was given and what is expected.
    """
    from PIL import Image

    images: list[Any] = list(image) if isinstance(image, (list, tuple)) else [image]
    if not images:
        raise ImageError(f"{what} is an empty list; give at least one image")
    if all(isinstance(item, Image.Image) for item in images):
        mode = "L" if channels == 1 else "RGB"
        pils = [item.convert(mode) for item in images]
        if size is not None:
            pils = [
                p if p.size == (size[1], size[0]) else p.resize((size[1], size[0]), Image.Resampling.BICUBIC)
                for p in pils
            ]
        arrays = [np.asarray(p, dtype=np.float32) / 255.0 for p in pils]
        batch = torch.from_numpy(np.stack([a[:, :, None] if a.ndim == 2 else a for a in arrays]))  # (B, H, W, C)
        return _checked(batch.permute(0, 3, 1, 2) * 2 - 1, channels, None, what)
    if all(isinstance(item, np.ndarray) for item in images):
        arrays = []
        for item in images:
            a = item.astype(np.float32) / 255.0 if item.dtype == np.uint8 else item.astype(np.float32, copy=False)
            if a.ndim == 2:
                a = a[:, :, None]
            arrays.append(a[None] if a.ndim == 3 else a)
        if any(a.ndim != 4 for a in arrays):
            shapes = ", ".join(str(item.shape) for item in images)
            raise ImageError(f"{what} arrays must be (H, W), (H, W, C) or (B, H, W, C); got shape {shapes}")
        if len({a.shape[1:] for a in arrays}) > 1:
            raise ImageError(
                f"{what} arrays differ in size ({', '.join(str(a.shape[1:]) for a in arrays)}); give images of one size"
            )
        batch = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
        _check_range(batch, 0.0, 1.0, what, "numpy arrays are in [0, 1] (uint8: [0, 255])")
        return _checked(batch * 2 - 1, channels, size, what)
    if len(images) == 1 and isinstance(images[0], torch.Tensor):
        tensor = images[0]
        if tensor.ndim == 3:
            tensor = tensor[None]
        if tensor.ndim != 4 or not tensor.is_floating_point():
            raise ImageError(
                f"{what} tensors must be float (C, H, W) or (B, C, H, W) in [-1, 1]; got {tuple(images[0].shape)} "
                f"{images[0].dtype}"
            )
        tensor = tensor.detach().to(torch.float32)
        _check_range(tensor, -1.0, 1.0, what, "tensors are in [-1, 1], the model's range")
        return _checked(tensor, channels, size, what)
    kinds = sorted({type(item).__name__ for item in images})
    raise ImageError(
        f"{what} must be a PIL image, a numpy array, a tensor, or a list of PIL images or arrays; got "
        f"{', '.join(kinds)}"
    )


def _check_range(batch: torch.Tensor, low: float, high: float, what: str, convention: str) -> None:
    """Refuse values outside [low, high] (with a little slack for rounding) and NaN or inf."""
    if not bool(torch.isfinite(batch).all()):
        raise ImageError(f"{what} holds NaN or infinite values")
    lo, hi = float(batch.min()), float(batch.max())
    slack = 1e-3 * (high - low)
    if lo < low - slack or hi > high + slack:
        raise ImageError(f"{what} values span [{lo:g}, {hi:g}], outside [{low:g}, {high:g}]: {convention}")


def _checked(batch: torch.Tensor, channels: int, size: tuple[int, int] | None, what: str) -> torch.Tensor:
    """``batch`` (B, C, H, W) with ``channels`` channels (1 repeated to 3) and, when given, of ``size``."""
    if batch.shape[1] != channels:
        if batch.shape[1] == 1 and channels == 3:
            batch = batch.expand(-1, 3, -1, -1)
        else:
            raise ImageError(
                f"{what} has {batch.shape[1]} channels; the model takes {channels} "
                f"({'grayscale' if channels == 1 else 'RGB'}): convert it first"
            )
    if size is not None and tuple(batch.shape[2:]) != tuple(size):
        raise ImageError(
            f"{what} is {batch.shape[3]}x{batch.shape[2]} (width x height); {size[1]}x{size[0]} is needed: resize it "
            "(PIL images are resized for you)"
        )
    return batch.contiguous()
