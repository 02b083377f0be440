"""``ddpm edit``: image-to-image (SDEdit) on one image, with any sampler: noise it to ``--strength`` and denoise.

Variation ``i`` comes from a CPU generator seeded ``--seed + i``, so the files do not depend on ``--batch-size``.
The output folder gets ``edit-000.png``, ``edit-001.png``, ... and ``grid.png`` (the input, then the variations);
existing files of those names are refused unless ``--overwrite``. Everything that can be checked (the strength, the
image file, the step count, the folder) is checked before the model is loaded or anything is written.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from ..runtime import DTYPES, resolve_device
from ._common import at_most, plural, positive, resolve_model, set_threads
from ._sampling import (
    add_sampler_options,
    default_steps,
    fast_dtype_name,
    finite_images,
    fit_to_model,
    load_pipeline,
    warn_few_steps,
)

NAME = "edit"
HELP = "image-to-image (SDEdit): noise an image to --strength and denoise it with the model"

#: The most ``--num-images``: variations of one image, all shown in one grid row.
MAX_NUM_IMAGES = 64
#: The default output folder, inside which each input image gets its own folder.
DEFAULT_OUT_ROOT = Path("edits")
GRID_NAME = "grid.png"

EXAMPLES = """\
examples:
  ddpm edit digit.png --strength 0.5                       (the bundled digits model, DDIM with 50 steps)
  ddpm edit digit.png --strength 0.3 --num-images 8 --seed 100 --out edits/digit
  ddpm edit face.png --model google/ddpm-ema-celebahq-256 --strength 0.6 --scheduler pndm --device cuda

The call runs the last int(STEPS * S) of STEPS steps: --strength 0.3 keeps the image's shapes and redraws its
details, 0.8 keeps only its rough layout, 1 starts from (almost) pure noise. An image of another size than the
model's is resized to cover it and centre-cropped to it, one of other channels converted (grayscale <-> RGB), each
with a note on stderr (the rule of ddpm edit, interpolate and inpaint).
Variation i uses seed S+i. Writes edit-000.png, ... and grid.png (the input, then the variations) into --out.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``edit`` subcommand to ``subparsers`` and return it."""
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="the image to edit (PNG, JPEG, ...)")
    parser.add_argument(
        "--strength",
        type=float,
        required=True,
        metavar="S",
        help="how far to noise the image, in (0, 1]: 0.3 keeps most of it, 0.8 only its layout",
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="a Hub id (google/ddpm-cifar10-32), a local pipeline folder, or a bundled model name (default: the "
        "bundled model)",
    )
    parser.add_argument(
        "--num-images",
        type=at_most(MAX_NUM_IMAGES),
        default=1,
        metavar="N",
        help=f"variations to make, from seeds S..S+N-1 (default: 1, at most {MAX_NUM_IMAGES})",
    )
    parser.add_argument(
        "--batch-size", type=positive, default=16, metavar="N", help="images per forward pass (default: 16)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"output folder (default: {DEFAULT_OUT_ROOT}/IMAGE-NAME)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace edit-*.png and grid.png already in --out")
    add_sampler_options(parser, default_scheduler="ddim")
    return parser


def _outputs(out: Path, count: int) -> list[Path]:
    """The files a run writes: one PNG per variation, then the grid."""
    return [out / f"edit-{i:03d}.png" for i in range(count)] + [out / GRID_NAME]


def _check(args: argparse.Namespace, steps: int, out: Path) -> None:
    """Refuse what can be refused before the model is loaded (the image is checked by the caller)."""
    from ..pipelines.batch import MAX_SEED
    from ..pipelines.img2img import denoising_steps

    if not 0.0 < args.strength <= 1.0:  # (NaN fails the comparison)
        raise ValueError(
            f"--strength must be a number in (0, 1] (the fraction of the schedule to noise the image to: 0.3 keeps "
            f"most of it, 1 redraws it), got {args.strength:g}"
        )
    if args.eta is not None and args.eta != 0 and args.scheduler != "ddim":
        raise ValueError(f"--eta {args.eta} applies only to --scheduler ddim (got --scheduler {args.scheduler})")
    if args.compile != "off" and not args.fast:
        raise ValueError(f"--compile {args.compile} needs --fast")
    if args.seed + args.num_images - 1 > MAX_SEED:
        raise ValueError(f"--seed {args.seed} with --num-images {args.num_images} needs seeds above 2**63-1")
    try:
        denoising_steps(steps, args.strength)
    except ValueError:
        raise ValueError(
            f"--strength {args.strength:g} with --steps {steps} runs int({steps} * {args.strength:g}) = 0 steps; use "
            f"--strength {1 / steps:g} or more, or --steps {math.ceil(1 / args.strength)} or more"
        ) from None
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; give a folder (it is created if missing)")
    taken = [p for p in _outputs(out, args.num_images) if p.exists()]
    if taken and not args.overwrite:
        names = ", ".join(p.name for p in taken[:3]) + (", ..." if len(taken) > 3 else "")
        raise ValueError(f"{out} already holds {names}; add --overwrite to replace them, or use another --out")


def run(args: argparse.Namespace) -> int:
    """Edit the image as ``ddpm edit`` was asked; returns the exit status."""
    import torch

    from ..image_processing import load_image, make_image_grid, save_image
    from ..pipelines.img2img import ImageToImagePipeline

    model = resolve_model(args.model)
    steps = args.steps or default_steps(args.scheduler)
    out: Path = (args.out or DEFAULT_OUT_ROOT / (args.image.stem or "image")).expanduser()
    _check(args, steps, out)
    image = load_image(args.image)  # a missing file, a FIFO or a non-image is refused here, before the model loads
    device = resolve_device(args.device)
    dtype_name = args.dtype or (fast_dtype_name(device) if args.fast else "fp32")
    set_threads(args.threads)

    pipe = ImageToImagePipeline.from_pipe(load_pipeline(args, model, device, DTYPES[dtype_name]))
    config = pipe.unet.config
    image, _ = fit_to_model(NAME, image, args.image, channels=config.in_channels, sample_size=config.sample_size)
    pipe.scheduler.set_timesteps(steps)  # refuses a step count the sampler cannot take
    pipe.check_batch_fits(min(args.batch_size, args.num_images), lower="use a smaller --batch-size")
    warn_few_steps(NAME, steps, args.scheduler, default_steps(args.scheduler))  # the run starts: nothing was refused
    pipe.set_progress_bar_config(disable=args.no_progress, desc="ddpm edit", leave=False)

    results = []
    for first in range(0, args.num_images, args.batch_size):
        count = min(args.batch_size, args.num_images - first)
        generators = [torch.Generator().manual_seed(args.seed + i) for i in range(first, first + count)]
        edited = pipe(
            [image] * count,
            strength=args.strength,
            num_inference_steps=steps,
            generator=generators,
            eta=args.eta,
            output_type="latent",
        )
        results += finite_images(edited.images, pipe.dtype, command="ddpm edit", what="the edited images")
    out.mkdir(parents=True, exist_ok=True)
    paths = _outputs(out, args.num_images)
    for img, path in zip(results, paths):
        save_image(img, path)
    save_image(make_image_grid([image, *results], 1, len(results) + 1), paths[-1])
    print(
        f"ddpm edit: {plural(len(results), 'image')} in {out.resolve()} (strength {args.strength:g}: "
        f"{pipe.num_timesteps} of {plural(steps, args.scheduler + ' step')}); grid (input, then results) in "
        f"{paths[-1].name}"
    )
    return 0
