"""Generating many images to a folder: streamed to disk, reproducible per image, resumable, shardable.

Image ``i`` is drawn from its own CPU generator seeded ``seed + i``. With a generator per image the initial noise
and every noise draw of a stochastic scheduler come from that generator alone, so image ``i`` is the same whatever
batch it lands in, however many processes share the work, and on any device (up to floating-point differences
between devices). Each image is written as ``<folder>/<i:06d>.png`` atomically, so a killed run leaves only whole
files, and a rerun skips the images that already exist.

With ``world_size`` processes, process ``rank`` makes the images with ``i % world_size == rank``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..image_processing import save_image
from .pipeline import DiffusionPipeline

__all__ = ["SampleReport", "image_path", "sample_to_folder", "shard_indices"]


def image_path(folder: str | os.PathLike[str], index: int) -> Path:
    """The file of image ``index`` in ``folder``: ``000000.png``, ``000001.png``, ..."""
    return Path(folder) / f"{index:06d}.png"


def shard_indices(num_images: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The image indices process ``rank`` of ``world_size`` is responsible for (round-robin).

    Raises:
        ValueError: ``num_images`` < 0, ``world_size`` < 1, or ``rank`` outside ``[0, world_size)``.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return list(range(rank, num_images, world_size))


@dataclass
class SampleReport:
    """What ``sample_to_folder`` did in this process.

    Attributes:
        written: Files written by this call, in index order.
        skipped: Indices of this shard that were already on disk.
    """

    written: list[Path] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


def sample_to_folder(
    pipe: DiffusionPipeline,
    folder: str | os.PathLike[str],
    num_images: int,
    *,
    batch_size: int = 16,
    seed: int = 0,
    num_inference_steps: int | None = None,
    eta: float | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    on_batch: Callable[[list[int]], None] | None = None,
) -> SampleReport:
    """Generate images ``0 .. num_images-1`` (this process's share of them) into ``folder`` as PNG files.

    Args:
        pipe: The pipeline to sample with, already on its device and dtype.
        folder: Where the PNGs go (created if needed).
        num_images: The total number of images across all processes.
        batch_size: Images per pipeline call; affects speed and memory only, not the images.
        seed: Image ``i`` uses a CPU generator seeded ``seed + i``.
        num_inference_steps: Steps per image (default: the pipeline's default).
        eta: DDIM's η, passed to each call (``None`` keeps the scheduler's).
        rank: This process's rank.
        world_size: The number of processes sharing the work.
        progress: Show a progress bar over images.
        on_batch: Called with the indices of each batch after its files are written.

    Returns:
        A ``SampleReport`` of files written and indices skipped.

    Raises:
        ValueError: ``batch_size`` < 1, ``num_images`` < 0, a bad rank, or a negative ``seed``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = SampleReport()
    todo: list[int] = []
    for i in shard_indices(num_images, rank, world_size):
        (report.skipped if image_path(folder, i).exists() else todo).append(i)

    from tqdm.auto import tqdm

    # Only pass disable=True: leaving it unset lets TQDM_DISABLE and tqdm's other environment settings apply.
    bar_options = {} if progress else {"disable": True}
    with tqdm(total=len(todo), unit="img", desc="images", **bar_options) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in batch]
            images = pipe(
                batch_size=len(batch),
                generator=generators,
                num_inference_steps=num_inference_steps,
                eta=eta,
                output_type="pil",
            )[0]  # the images (``[0]`` types for both of the call's return types)
            for i, image in zip(batch, images):
                report.written.append(save_image(image, image_path(folder, i)))
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(batch)
    return report
