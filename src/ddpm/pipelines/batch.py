"""Generating many images to a folder: streamed to disk, reproducible per image, resumable, shardable.

Image ``i`` is drawn from its own CPU generator seeded ``seed + i``. With a generator per image the initial noise
and every noise draw of a stochastic scheduler come from that generator alone, so image ``i`` is the same whatever
batch it lands in, however many processes share the work, and on any device (up to floating-point differences
between devices). Each image is written as ``<folder>/<i:06d>.png`` atomically, so a killed run leaves only whole
files, and a rerun skips the images that already exist and are whole PNGs (an empty or truncated file, e.g. from a
disk that filled up or a tool that wrote in place, is made again).

Nothing grows with the number of images: the indices are walked lazily and only one batch's generators exist at a
time. Before the first batch the batch's memory is checked (:meth:`DiffusionPipeline.check_batch_fits`), and each
batch's final sample is checked once for NaN or infinity, so a broken model or an fp16 overflow stops the run with
a message instead of writing black images.

With ``world_size`` processes, process ``rank`` makes the images with ``i % world_size == rank``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import OverwriteError
from ..image_processing import postprocess, save_image
from ..io import open_regular
from .pipeline import DiffusionPipeline

__all__ = [
    "MAX_SEED",
    "SampleReport",
    "image_path",
    "is_whole_image",
    "non_finite_cause",
    "sample_to_folder",
    "shard_indices",
]

#: The largest seed of a CPU generator here; image ``i`` uses ``seed + i``, which must not pass it.
MAX_SEED = 2**63 - 1


def image_path(folder: str | os.PathLike[str], index: int) -> Path:
    """The file of image ``index`` in ``folder``: ``000000.png``, ``000001.png``, ..."""
    return Path(folder) / f"{index:06d}.png"


def shard_indices(num_images: int, rank: int = 0, world_size: int = 1) -> range:
    """The image indices process ``rank`` of ``world_size`` is responsible for (round-robin), as a lazy ``range``.

    Raises:
        ValueError: ``num_images`` < 0, ``world_size`` < 1, or ``rank`` outside ``[0, world_size)``.
    """
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    return range(rank, num_images, world_size)


def is_whole_image(path: Path, size: tuple[int, int]) -> bool | None:
    """Whether ``path`` is a whole PNG of ``size`` (width, height): ``None`` when there is no file, ``False`` when
    it is empty, truncated, damaged or of another size (made again by a rerun).

    The check is cheap: Pillow reads the header and walks the chunks to ``IEND`` checking their CRCs
    (``Image.verify``), without decoding the pixels.

    Raises:
        OverwriteError: ``path`` is not a regular file (a folder, FIFO, socket or device named like an image).
    """
    from PIL import Image

    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):  # not ours to remove, and never opened (a FIFO would block)
        mode = info.st_mode
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a socket or device"
        raise OverwriteError(
            f"{path} is {kind}, not an image file; remove it (the image is then made there) or use another folder"
        )
    if info.st_size == 0:
        return False
    try:
        with open_regular(path, what="image file", error=OverwriteError) as f, Image.open(f) as img:
            if img.format != "PNG" or img.size != size:
                return False
            img.verify()
    except OverwriteError:
        raise
    except Exception:  # Pillow raises OSError, SyntaxError, EOFError, ValueError...: not a whole PNG either way
        return False
    return True


@dataclass
class SampleReport:
    """What ``sample_to_folder`` did in this process (counts only, so it stays small for any number of images).

    Attributes:
        written: Images written by this call.
        skipped: Images of this shard that were already on disk, whole.
        remade: Images whose file was there but empty, truncated or damaged, and that were made again (also counted
            in ``written``).
    """

    written: int = 0
    skipped: int = 0
    remade: int = 0


def non_finite_cause(dtype: torch.dtype, command: str = "ddpm sample") -> str:
    """The likely cause of a non-finite final sample, and what to do, for a UNet that ran in ``dtype``; ``command``
    is the command whose ``--dtype`` the advice names."""
    if dtype == torch.float16:
        return (
            "the UNet runs in float16, whose range (65504) large activations overflow: use bfloat16 or float32 "
            f"({command} --dtype bf16 or --dtype fp32)"
        )
    return (
        f"the UNet runs in {str(dtype).removeprefix('torch.')}, so its weights are most likely not finite "
        "(NaN or infinity) or the model diverged in training: load a good copy of the weights"
    )


def _non_finite_error(pipe: DiffusionPipeline, batch: list[int]) -> FloatingPointError:
    first, last = image_path("", batch[0]).name, image_path("", batch[-1]).name
    return FloatingPointError(
        f"the model produced non-finite values (NaN or infinity) for images {first} to {last}, so no PNG was written "
        f"for them; {non_finite_cause(pipe.dtype)}"
    )


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
    on_remade: Callable[[Path], None] | None = None,
) -> SampleReport:
    """Generate images ``0 .. num_images-1`` (this process's share of them) into ``folder`` as PNG files.

    Args:
        pipe: The pipeline to sample with, already on its device and dtype.
        folder: Where the PNGs go (created if needed).
        num_images: The total number of images across all processes.
        batch_size: Images per pipeline call; affects speed and memory only, not the images. A batch never holds
            more images than this process makes.
        seed: Image ``i`` uses a CPU generator seeded ``seed + i``.
        num_inference_steps: Steps per image (default: the pipeline's default).
        eta: DDIM's η, passed to each call (``None`` keeps the scheduler's).
        rank: This process's rank.
        world_size: The number of processes sharing the work.
        progress: Show a progress bar over images (one bar; the pipeline's own step bar is up to its config).
        on_batch: Called with the indices of each batch after its files are written.
        on_remade: Called with the path of each existing file that is not a whole PNG, before it is made again.

    Returns:
        A ``SampleReport`` of images written, skipped and made again.

    Raises:
        ValueError: ``batch_size`` < 1, ``num_images`` < 0, a bad rank, a negative ``seed``, or
            ``seed + num_images - 1`` above ``MAX_SEED``.
        ResourceLimitError: A batch would not fit in memory (checked before the first one).
        FloatingPointError: A batch's final sample holds NaN or infinity; the message names the likely cause, and
            no file of that batch is written.
        OverwriteError: A folder, FIFO or other non-regular file has the name of an image.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_images > 0 and seed + num_images - 1 > MAX_SEED:
        raise ValueError(
            f"seed {seed} with {num_images} images needs seeds up to {seed + num_images - 1}, above the largest "
            f"generator seed 2**63-1; use a smaller seed"
        )
    shard = shard_indices(num_images, rank, world_size)
    batch_size = min(batch_size, max(len(shard), 1))
    pipe.check_batch_fits(batch_size, lower="use a smaller batch_size")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _, _, height, width = pipe._sample_shape(1)
    report = SampleReport()

    def todo() -> Iterator[list[int]]:
        """The missing images of the shard in batches, found lazily (only one batch of indices at a time)."""
        batch: list[int] = []
        for i in shard:
            whole = is_whole_image(image_path(folder, i), (width, height))
            if whole:
                report.skipped += 1
                bar.update(1)
                continue
            if whole is False:
                report.remade += 1
                if on_remade is not None:
                    on_remade(image_path(folder, i))
            batch.append(i)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    from tqdm.auto import tqdm

    # Only pass disable=True: leaving it unset lets TQDM_DISABLE and tqdm's other environment settings apply.
    bar_options = {} if progress else {"disable": True}
    with tqdm(total=len(shard), unit="img", desc="images", **bar_options) as bar:
        for batch in todo():
            generators = [torch.Generator("cpu").manual_seed(seed + i) for i in batch]
            latents = pipe(
                batch_size=len(batch),
                generator=generators,
                num_inference_steps=num_inference_steps,
                eta=eta,
                output_type="latent",
            )[0]  # the final sample (``[0]`` types for both of the call's return types)
            if not bool(torch.isfinite(latents).all()):  # once per batch: one device sync
                raise _non_finite_error(pipe, batch)
            for i, image in zip(batch, postprocess(latents, "pil")):
                save_image(image, image_path(folder, i))
            report.written += len(batch)
            bar.update(len(batch))
            if on_batch is not None:
                on_batch(batch)
    return report
