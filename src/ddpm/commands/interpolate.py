"""``ddpm interpolate A B --frames N``: images between two digits (or faces, or seeds), through their DDIM noise.

A and B are image files, inverted to their noise x_T with deterministic DDIM (Song et al. 2021, Sec. 5.4), or seeds,
whose noise is the one ``ddpm sample --seed S`` starts from. The two noises are interpolated spherically (Sec. 5.3)
and every frame is decoded with DDIM (:class:`ddpm.DDIMInversionPipeline`). The frames are written as PNGs, with a
grid and an animated GIF, into ``--out``.

How A and B are read: ``seed:3`` is always seed 3; an existing file is an image; a whole number that is not a file
is a seed (``3``); anything else is a missing image file.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runtime import DTYPES, resolve_device
from ._common import MAX_SEED, plural, resolve_model, set_threads
from ._sampling import (
    MIN_USEFUL_STEPS,
    add_sampler_options,
    default_steps,
    fast_dtype_name,
    finite_images,
    fit_to_model,
    load_pipeline,
)

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

NAME = "interpolate"
HELP = "images between two images or two seeds, through their DDIM noise (frames, a grid and a GIF)"

#: The most ``--frames``: more than this is a typo, not an animation.
MAX_FRAMES = 1000
#: The folder written when ``--out`` is not given.
DEFAULT_OUT = Path("interpolation")
GRID_NAME = "grid.png"
GIF_NAME = "interpolation.gif"
#: The files ``ddpm interpolate`` writes (``--overwrite`` replaces these, and deletes no other file).
FRAME_NAME = re.compile(r"frame_[0-9]{3,}\.png")
#: Milliseconds per frame of the GIF.
GIF_FRAME_MS = 120

EXAMPLES = """\
examples:
  ddpm interpolate seed:1 seed:2                     (the bundled digits model: 8 frames from seed 1 to seed 2)
  ddpm interpolate three.png seven.png --frames 12 --steps 100 --out three-to-seven
  ddpm interpolate a.png b.png --model google/ddpm-ema-celebahq-256 --device cuda --frames 16

A and B: an image file (inverted to its noise with DDIM), or a seed: seed:3, or a whole number that is not a file.
An image of another size than the model's is resized to cover it and centre-cropped to it, one of other channels
converted (grayscale <-> RGB), each with a note on stderr (the rule of ddpm edit, interpolate and inpaint).
The frames go from A to B, both included; with images, the end frames are the images (as fitted) up to the
round-trip error (more --steps, less error). Inversion needs deterministic DDIM: --scheduler ddim (the default)
and --eta 0 only; --seed is not used (the seeds are A and B).
"""


@dataclass(frozen=True)
class EndPoint:
    """A or B: a seed, or an image file (opened and checked, not yet fitted to the model)."""

    text: str
    seed: int | None = None
    path: Path | None = None
    image: Image.Image | None = None


def frames(text: str) -> int:
    """The ``--frames`` option type: a whole number from 2 (both end points) to :data:`MAX_FRAMES`."""
    value = int(text)
    if not 2 <= value <= MAX_FRAMES:
        raise argparse.ArgumentTypeError(f"must be from 2 to {MAX_FRAMES:,} (both end points count), got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``interpolate`` subcommand to ``subparsers`` and return it."""
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", metavar="A", help="the first end point: an image file, or a seed (seed:3, or 3)")
    parser.add_argument("b", metavar="B", help="the last end point: an image file, or a seed")
    parser.add_argument(
        "--frames", type=frames, default=8, metavar="N", help="images from A to B, both included (default: 8)"
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="a Hub id (google/ddpm-cifar10-32), a local pipeline folder, or a bundled model name (default: the "
        "bundled model)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"folder for frame_000.png..., {GRID_NAME} and {GIF_NAME} (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the frames, grid and GIF of an earlier run in --out"
    )
    add_sampler_options(parser, default_scheduler="ddim")
    return parser


def end_point(name: str, text: str) -> EndPoint:
    """Read A or B (see the module docstring); an image is opened and decoded here, before any model is loaded.

    Raises:
        ValueError: A seed out of range, or a file that does not exist.
        ImageError: The file is not a regular, readable image.
    """
    from ..image_processing import load_image

    if text.startswith("seed:"):
        return EndPoint(text, seed=_seed(name, text[len("seed:") :]))
    path = Path(text).expanduser()
    if os.path.lexists(path):
        return EndPoint(text, path=path, image=load_image(path, what=f"{name} image"))
    if re.fullmatch(r"[0-9]+", text):
        return EndPoint(text, seed=_seed(name, text))
    raise ValueError(
        f"{name}: {text} is not a file (and not a seed); give an image file, or a seed written as seed:3 or 3"
    )


def _seed(name: str, digits: str) -> int:
    if not re.fullmatch(r"[0-9]+", digits) or int(digits) > MAX_SEED:
        raise ValueError(f"{name}: seed:{digits} is not a seed; a seed is a whole number from 0 to 2**63-1")
    return int(digits)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.scheduler != "ddim":
        raise ValueError(
            f"--scheduler {args.scheduler}: interpolation inverts images with deterministic DDIM, so only "
            "--scheduler ddim (the default) applies"
        )
    if args.eta:
        raise ValueError(f"--eta {args.eta}: inversion needs deterministic DDIM; leave --eta out (or give 0)")
    if args.compile != "off" and not args.fast:
        raise ValueError(f"--compile {args.compile} needs --fast")


def _outputs(out: Path, count: int) -> list[Path]:
    return [out / f"frame_{i:03d}.png" for i in range(count)] + [out / GRID_NAME, out / GIF_NAME]


def _ours(out: Path) -> list[Path]:
    """The files of an earlier run in ``out``."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if FRAME_NAME.fullmatch(p.name) or p.name in (GRID_NAME, GIF_NAME))


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a folder (it is created if missing)")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to --out {out}: {existing} is not writable; choose a folder you can write to")
    earlier = _ours(out)
    if earlier and not overwrite:
        raise ValueError(
            f"--out {out} already holds an interpolation ({plural(len(earlier), 'file')}: {earlier[0].name}, ...); "
            "add --overwrite to replace it, or use another --out"
        )


def _write(out: Path, images: list[Image.Image], overwrite: bool) -> None:
    from ..image_processing import grid_shape, make_image_grid, save_image
    from ..io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for path in _ours(out):
            if path.is_file() and not path.is_symlink():
                path.unlink()
    for path, image in zip(_outputs(out, len(images)), images):
        save_image(image, path)
    rows, cols = (1, len(images)) if len(images) <= 16 else grid_shape(len(images))
    save_image(make_image_grid(images, rows, cols), out / GRID_NAME)
    scale = max(1, 128 // max(images[0].size))  # small digits are enlarged in the GIF (nearest neighbour)
    shown = [im.resize((im.width * scale, im.height * scale), 0) for im in images]
    shown = shown + shown[-2:0:-1]  # there and back

    def write_gif(tmp: Path) -> None:
        shown[0].save(tmp, format="GIF", save_all=True, append_images=shown[1:], duration=GIF_FRAME_MS, loop=0)

    atomic_write(out / GIF_NAME, write_gif)


def run(args: argparse.Namespace) -> int:
    """Make the interpolation ``ddpm interpolate`` was asked for; returns the exit status."""
    steps = args.steps or default_steps("ddim")
    _check_arguments(args)
    points = [end_point("A", args.a), end_point("B", args.b)]
    model = resolve_model(args.model)
    out: Path = (args.out if args.out is not None else DEFAULT_OUT).expanduser()
    _check_out(out, args.overwrite)
    set_threads(args.threads)

    from ..pipelines import DDIMInversionPipeline

    device = resolve_device(args.device)
    dtype_name = args.dtype or (fast_dtype_name(device) if args.fast else "fp32")
    loaded = load_pipeline(args, model, device, DTYPES[dtype_name])
    pipe = DDIMInversionPipeline(**loaded.components)
    pipe._fast = loaded.fast_sampler  # the UNet runner --fast made (None without it)
    config = pipe.unet.config
    sources: list[Any] = []
    for point in points:
        if point.image is not None and point.path is not None:
            image, _ = fit_to_model(
                NAME, point.image, point.path, channels=config.in_channels, sample_size=config.sample_size
            )
            sources.append(image)
        else:
            sources.append(point.seed)
    pipe.scheduler.set_timesteps(steps)  # refuses a step count the schedule cannot take
    pipe.check_batch_fits(args.frames, lower="ask for fewer --frames")
    if steps < MIN_USEFUL_STEPS:  # the run starts: nothing was refused
        print(
            f"ddpm interpolate: warning: --steps {steps} is too few: the frames come out blurred, and images are "
            "not given back; use --steps 20 or more (the default is 50)",
            file=sys.stderr,
        )
    pipe.set_progress_bar_config(disable=args.no_progress, desc="ddpm interpolate", leave=False)

    sample = pipe.interpolate(sources[0], sources[1], args.frames, num_inference_steps=steps, output_type="latent")
    images = finite_images(sample.images, pipe.dtype, command="ddpm interpolate", what="the interpolation's frames")
    _write(out, images, args.overwrite)
    print(
        f"ddpm interpolate: {plural(len(images), 'frame')} from {args.a} to {args.b} in {out.resolve()} "
        f"(frame_000.png ..., {GRID_NAME}, {GIF_NAME})"
    )
    return 0
