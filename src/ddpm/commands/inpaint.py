"""``ddpm inpaint IMAGE --mask MASK``: fill part of an image with RePaint (:class:`ddpm.RePaintPipeline`).

Writes the result to ``--out`` (default ``<IMAGE stem>-inpainted.png`` in the current folder) and a grid
``input | mask | result`` next to it (``<out stem>-grid.png``). Neither file is replaced without ``--overwrite``.
Every input (the files, their sizes, the mask, the options) is checked before the model is loaded. The image is
then fitted to the model as ``ddpm edit`` and ``ddpm interpolate`` fit theirs (:func:`._sampling.fit_to_model`), the
mask with the image's geometry; a mask whose hole the resizing loses is refused before the model runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..runtime import DTYPES, resolve_device
from ._common import non_negative_float, positive, resolve_model, set_threads
from ._sampling import add_sampler_options, fast_dtype_name, finite_images, fit_to_model, warn_few_steps

NAME = "inpaint"
HELP = "fill the masked part of an image (RePaint)"

#: Steps, jump length and jump count of a bare ``ddpm inpaint``: diffusers' RePaintPipeline defaults (the paper's).
DEFAULT_STEPS, DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE = 250, 10, 10

EXAMPLES = """\
examples:
  ddpm inpaint digit.png --mask hole.png                        (the bundled digits model; white = keep)
  ddpm inpaint digit.png --mask hole.png --mask-means fill      (white marks the part to fill)
  ddpm inpaint face.png --mask mask.png --model google/ddpm-ema-celebahq-256 --device cuda
  ddpm inpaint digit.png --mask hole.png --steps 50 --jump-length 5 --jump-n-sample 5 --out done.png
  ddpm inpaint digit.png --mask hole.png --steps 25 --jump-length 5 --jump-n-sample 3 --eta 1 --guidance 10

The mask must have the image's size. An image of another size than the model's is resized to cover it and
centre-cropped to it, and the mask with it (nearest neighbour, so it stays black and white); one of other channels
is converted (grayscale <-> RGB); each change with a note on stderr (the rule of ddpm edit, interpolate and
inpaint). By default (diffusers' convention) WHITE marks the part KEPT and BLACK the part to fill; --mask-means fill
says the opposite. The sampler is RePaint's own loop (DDIM-style steps, --eta 1 for DDPM steps), so --scheduler
does not apply; --steps is the grid of timesteps n, and the UNet runs about n + n * (jump-n-sample - 1) times.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``inpaint`` subcommand to ``subparsers`` and return it."""
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="the image to inpaint (PNG, JPEG, ...)")
    parser.add_argument(
        "--mask", type=Path, required=True, metavar="MASK", help="the mask, of the image's size (resized with it)"
    )
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="a Hub id, a local pipeline folder or a bundled model name (default: the bundled ddpm-mnist)",
    )
    parser.add_argument(
        "--mask-means",
        choices=("keep", "fill"),
        default="keep",
        help="what white means in the mask: keep (default, diffusers' convention) or fill",
    )
    parser.add_argument(
        "--jump-length",
        type=positive,
        default=DEFAULT_JUMP_LENGTH,
        metavar="J",
        help=f"grid steps per jump back up (default: {DEFAULT_JUMP_LENGTH})",
    )
    parser.add_argument(
        "--jump-n-sample",
        type=positive,
        default=DEFAULT_JUMP_N_SAMPLE,
        metavar="R",
        help=f"passes over each jump point; 1: no resampling (default: {DEFAULT_JUMP_N_SAMPLE})",
    )
    parser.add_argument(
        "--guidance",
        type=non_negative_float,
        default=0.0,
        metavar="W",
        help="reconstruction guidance w_r (Ho et al. 2022): 0 is plain RePaint (default); about 10 makes the fill "
        "agree with the kept part in far fewer steps, each about 3x the cost",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="the result (default: IMAGE's name + -inpainted.png); the grid goes to FILE's name + -grid",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out and its grid if they exist")
    add_sampler_options(parser)
    parser.set_defaults(scheduler=None)  # RePaint runs its own loop: --scheduler is refused when given
    for action in parser._actions:
        if action.dest == "steps":
            action.help = f"grid timesteps n (default: {DEFAULT_STEPS})"
        elif action.dest == "scheduler":
            action.help = "does not apply: RePaint runs its own loop (DDIM-style steps; --eta 1 for DDPM steps)"
        elif action.dest == "eta":
            action.help = "eta of the steps: 0 DDIM (default), 1 DDPM (the paper's)"
    return parser


def _outputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The result and grid paths, refused when they exist (without ``--overwrite``) or cannot be written."""
    from ..image_processing import _pil_format

    out: Path = (args.out or Path(f"{args.image.stem}-inpainted.png")).expanduser()
    grid = out.with_name(f"{out.stem}-grid{out.suffix}")
    try:
        _pil_format(out)
    except ValueError:
        raise ValueError(f"--out {out}: cannot tell the image format; use a name ending in .png, .jpg, ...") from None
    for path in (out, grid):
        if path.is_dir():
            raise ValueError(f"--out {out}: {path} is a folder; give a file name such as {path / 'inpainted.png'}")
        if path.exists() and not args.overwrite:
            raise ValueError(f"{path} exists; add --overwrite to replace it, or choose another --out")
    return out, grid


def run(args: argparse.Namespace) -> int:
    """Inpaint the image; returns the exit status."""
    if args.scheduler is not None:
        raise ValueError(
            f"--scheduler {args.scheduler} does not apply to ddpm inpaint: RePaint runs its own loop "
            "(DDIM-style steps; --eta 1 gives DDPM steps)"
        )
    if args.compile != "off" and not args.fast:
        raise ValueError(f"--compile {args.compile} needs --fast")
    if args.eta is not None and not 0.0 <= args.eta <= 1.0:
        raise ValueError(f"--eta {args.eta} is outside [0, 1] (0: DDIM steps, 1: DDPM steps)")
    from ..image_processing import load_image
    from ..pipelines.repaint import prepare_mask

    image = load_image(args.image, what="image")
    mask = load_image(args.mask, mode="L", what="mask")
    if mask.size != image.size:
        raise ValueError(
            f"the mask {args.mask} is {mask.size[0]}x{mask.size[1]} but the image {args.image} is "
            f"{image.size[0]}x{image.size[1]}; give a mask of the image's size"
        )
    try:
        prepare_mask(mask, size=(image.size[1], image.size[0]), batch_size=1, mask_means=args.mask_means)
    except Exception as exc:  # the same check the pipeline makes, named after the file
        raise ValueError(f"mask {args.mask}: {exc}".replace("mask_means=", "--mask-means ")) from None
    out, grid = _outputs(args)
    model = resolve_model(args.model)
    set_threads(args.threads)
    pipe = _load(args, model)
    config = pipe.unet.config
    fitted, fitted_mask = fit_to_model(
        NAME,
        image,
        args.image,
        channels=config.in_channels,
        sample_size=config.sample_size,
        mask=mask,
        mask_path=args.mask,
    )
    assert fitted_mask is not None
    if fitted_mask is not mask:
        _check_resized_mask(args, fitted_mask)
    warn_few_steps(NAME, args.steps or DEFAULT_STEPS, "RePaint", DEFAULT_STEPS)  # the run starts: nothing was refused
    result = _inpaint(args, pipe, fitted, fitted_mask)
    _save(out, grid, fitted, fitted_mask, result)
    print(f"ddpm inpaint: the result in {out.resolve()}, input | mask | result in {grid.resolve()}")
    return 0


def _load(args: argparse.Namespace, model: str) -> Any:
    from ..pipelines import RePaintPipeline

    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype or (fast_dtype_name(device) if args.fast else "fp32")]
    pipe = RePaintPipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    if args.fast:
        compile_mode = None if args.compile == "off" else args.compile
        pipe.enable_fast_sampling(dtype, compile=compile_mode, compile_budget_s=args.compile_budget)
    pipe.set_progress_bar_config(disable=args.no_progress, desc="ddpm inpaint", file=sys.stderr)
    return pipe


def _check_resized_mask(args: argparse.Namespace, mask: Any) -> None:
    """Refuse a mask whose hole the resizing lost, as an empty mask is refused (a mask that keeps nothing runs)."""
    from ..errors import ImageError
    from ..pipelines.repaint import prepare_mask

    try:
        prepare_mask(mask, size=(mask.size[1], mask.size[0]), batch_size=1, mask_means=args.mask_means)
    except ImageError:  # the mask passed these checks at its own size: only its hole can be gone
        raise ValueError(
            f"mask {args.mask}: the mask marks nothing to fill once resized with its image to the model's "
            f"{mask.size[0]}x{mask.size[1]}: its hole lies outside the centre that is kept, or is too thin to "
            "survive; crop the image and the mask around the hole first, or widen the hole"
        ) from None


def _inpaint(args: argparse.Namespace, pipe: Any, image: Any, mask: Any) -> Any:
    import torch

    sample = pipe(
        image,
        mask,
        num_inference_steps=args.steps or DEFAULT_STEPS,
        eta=args.eta or 0.0,
        jump_length=args.jump_length,
        jump_n_sample=args.jump_n_sample,
        generator=torch.Generator().manual_seed(args.seed),
        mask_means=args.mask_means,
        reconstruction_guidance=args.guidance,
        output_type="latent",
    ).images
    return finite_images(sample, pipe.dtype, command="ddpm inpaint", what="the inpainted image")[0]


def _save(out: Path, grid: Path, image: Any, mask: Any, result: Any) -> None:
    from ..image_processing import make_image_grid, save_image

    save_image(result, out)
    panels = [image.convert("RGB"), mask.convert("RGB"), result.convert("RGB")]
    save_image(make_image_grid(panels, 1, 3), grid)
