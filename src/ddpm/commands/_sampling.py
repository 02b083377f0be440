"""What every command that runs a sampler shares: its options, its defaults and how it loads the pipeline.

``ddpm sample`` and the image-editing commands take the same ``--scheduler``, ``--steps``, ``--seed``, ``--eta``,
``--device``, ``--dtype``, ``--fast``, ``--compile``, ``--compile-budget``, ``--threads`` and ``--no-progress``
options (:func:`add_sampler_options`), resolve the step count the same way (:func:`default_steps`) and load the
model the same way (:func:`load_pipeline`), so a change to one sampler option reaches every command. The editing
commands fit an input image (and inpainting's mask) to the model by one rule (:func:`fit_to_model`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fast import COMPILE_MODES
from ..runtime import DEVICES, DTYPES
from ..schedulers.presets import SAMPLER_PRESETS, SamplerPreset, sampler_preset
from ._common import finite_float, positive, positive_seconds, seed, threads

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from ..pipelines import DiffusionPipeline

__all__ = [
    "DEFAULT_SCHEDULER",
    "DTYPE_ALIASES",
    "MIN_USEFUL_STEPS",
    "SCHEDULER_CHOICES",
    "Precision",
    "add_sampler_options",
    "check_eta",
    "default_steps",
    "dtype_name",
    "fast_dtype_name",
    "finite_images",
    "fit_to_model",
    "load_pipeline",
    "resolve_precision",
    "warn_few_steps",
]

#: The sampler of a bare ``ddpm sample``, with its preset's 10 steps: on the bundled model (docs/schedulers.md, 100
#: images) DPM-Solver++ 3M in 10 UNet calls scores Fréchet distance 1.64, precision 0.77, recall 0.93, against
#: DDIM-50's 1.83, 0.79, 0.92 in 50 calls and real digits' 1.62, 0.86, 0.87: the best quality for its time.
DEFAULT_SCHEDULER = "dpm++3m"
#: ``--scheduler`` values: the names of the sampler presets (:data:`~ddpm.schedulers.presets.SAMPLER_PRESETS`).
SCHEDULER_CHOICES: tuple[str, ...] = tuple(SAMPLER_PRESETS)
#: Fewer steps than this give blurred or noisy images with every sampler (``--steps 1`` with DDIM returns the
#: starting noise: its one timestep is t=0); a warning says so.
MIN_USEFUL_STEPS = 5


def add_sampler_options(parser: argparse.ArgumentParser, *, default_scheduler: str = DEFAULT_SCHEDULER) -> None:
    """Add the sampler options shared by ``ddpm sample`` and the editing commands to ``parser``.

    ``default_scheduler`` is the command's own default sampler (``ddpm sample``'s unless the command's algorithm
    needs another: interpolation inverts with DDIM).
    """
    default = SAMPLER_PRESETS[default_scheduler]
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULER_CHOICES,
        default=default_scheduler,
        metavar="NAME",
        help=f"sampler, one of {', '.join(SCHEDULER_CHOICES)} (default: {default_scheduler}, "
        f"{default.default_steps} steps; `ddpm info` lists them)",
    )
    steps = ", ".join(f"{p.default_steps} for {p.name}" for p in SAMPLER_PRESETS.values())
    parser.add_argument(
        "--steps",
        type=positive,
        default=None,
        metavar="N",
        help=f"denoising steps (default: {steps}; fewer than {MIN_USEFUL_STEPS} gives noise)",
    )
    parser.add_argument("--seed", type=seed, default=0, metavar="S", help="image i uses seed S+i (default: 0)")
    parser.add_argument(
        "--eta",
        type=finite_float,
        default=None,
        metavar="E",
        help="DDIM's eta (--scheduler ddim only): 0 deterministic, 1 DDPM-like",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="where to run (default: auto = cuda if available)"
    )
    parser.add_argument(
        "--dtype",
        type=dtype_name,
        choices=tuple(DTYPES),
        default=None,
        help="UNet precision (float32, float16, bfloat16 are accepted too; default: see --fast)",
    )
    parser.add_argument(
        "--fast",
        action="store_const",
        const=True,
        default=None,
        help="fast path: half-precision UNet with fp32 scheduler math, CUDA graphs on CUDA (default: on for a CPU "
        "with native bf16 when --dtype is not given, off elsewhere; see docs/performance.md)",
    )
    parser.add_argument(
        "--no-fast",
        action="store_true",
        help="the plain loop in --dtype (default fp32) even on a CPU with native bf16",
    )
    parser.add_argument(
        "--compile",
        choices=("off", *COMPILE_MODES),
        default="off",
        help="with --fast: also torch.compile the UNet in this mode (default: off)",
    )
    parser.add_argument(
        "--compile-budget",
        type=positive_seconds,
        default=120.0,
        metavar="S",
        help="with --compile: run uncompiled if compiling takes longer than S seconds (default: 120)",
    )
    parser.add_argument(
        "--threads",
        type=threads,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: torch's choice; on a busy or shared machine 1 or 2 is often faster)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def warn_few_steps(command: str, steps: int, sampler: str, default: int) -> None:
    """Warn on stderr that ``--steps`` below :data:`MIN_USEFUL_STEPS` gives noise or blurs (the run goes on).

    ``command`` is the subcommand's name, ``sampler`` what runs the steps (a ``--scheduler`` name, or ``RePaint``) and
    ``default`` its default step count, which the warning suggests.
    """
    if steps < MIN_USEFUL_STEPS:
        print(
            f"ddpm {command}: warning: --steps {steps} is too few for {sampler}: the images come out as noise or "
            f"blurs; use --steps {default} (its default) or more",
            file=sys.stderr,
        )


def default_steps(scheduler: str) -> int:
    """The step count of ``--scheduler NAME`` when ``--steps`` is not given (the preset's default)."""
    return sampler_preset(scheduler).default_steps


def check_eta(scheduler: str, eta: float | None) -> None:
    """Refuse ``--eta`` with a sampler that has no η (any value but 0).

    Raises:
        ValueError: ``eta`` is given and nonzero, and ``scheduler`` has no η; the message names those that do.
    """
    if eta is None or eta == 0 or sampler_preset(scheduler).takes_eta:
        return
    from ..schedulers import SCHEDULERS

    # (a sampler whose class is missing is refused when it is chosen; here it only cannot be listed)
    with_eta = [p.name for p in SAMPLER_PRESETS.values() if p.scheduler in SCHEDULERS and p.takes_eta]
    raise ValueError(
        f"--eta {eta:g} applies only to --scheduler {', '.join(with_eta)} (got --scheduler {scheduler}, which has no "
        "eta); drop --eta"
    )


def fast_dtype_name(device: torch.device) -> str:
    """The ``--dtype`` name of the fast path's default precision on ``device``."""
    from ..fast import default_fast_dtype

    names = {dtype: name for name, dtype in DTYPES.items()}
    return names[default_fast_dtype(device)]


def load_pipeline(args: argparse.Namespace, model: str, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """The pipeline of ``model`` with the ``--scheduler`` sampler built from the model's scheduler config, on
    ``device`` in ``dtype``, with ``--fast``/``--compile`` applied and the per-call progress bar off (the commands
    show their own)."""
    from ..pipelines import DDPMPipeline

    preset: SamplerPreset = sampler_preset(args.scheduler)
    preset.scheduler_class()  # a sampler this installation lacks is refused before the model is read
    pipe = DDPMPipeline.from_pretrained(model, torch_dtype=dtype).to(device)
    pipe.scheduler = preset.build(pipe.scheduler.config)
    if args.fast:
        compile_mode = None if args.compile == "off" else args.compile
        pipe.enable_fast_sampling(dtype, compile=compile_mode, compile_budget_s=args.compile_budget)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------ input images: one rule for all


def fit_to_model(
    command: str,
    image: Image.Image,
    path: Path,
    *,
    channels: int,
    sample_size: int | Sequence[int] | None,
    mask: Image.Image | None = None,
    mask_path: Path | None = None,
) -> tuple[Image.Image, Image.Image | None]:
    """``image`` (and inpainting's ``mask``) made to fit the model, the rule of ``ddpm edit``, ``interpolate`` and
    ``inpaint``, with one note on stderr for each change, naming the file.

    * An image of other channels is converted: to grayscale (``L``) for a 1-channel model, else to ``RGB``.
    * An image of another size than the model's ``sample_size`` is scaled (bicubic) to cover it and centre-cropped
      to it (:func:`~ddpm.image_processing.resize_center_crop`); ``sample_size`` None keeps the image's size.
    * The mask, which must already have the image's size (the caller refuses one that has not), gets the image's
      geometry (the same scale and crop box) with nearest-neighbour resampling, so it stays black and white.

    Args:
        command: The command's name, for the notes (``"edit"``).
        image: The decoded image.
        path: Its file, for the notes.
        channels: The model's ``in_channels``.
        sample_size: The model's ``sample_size``: a side, ``(height, width)``, or None.
        mask: The mask (any mode), of the image's size, or None.
        mask_path: Its file, for the notes.

    Returns:
        The image and the mask (None when none was given), both of the model's size.
    """
    from ..image_processing import resize_center_crop

    def note(text: str) -> None:
        print(f"ddpm {command}: note: {text}", file=sys.stderr)

    if mask is not None and mask.size != image.size:
        raise ValueError(
            f"the mask ({mask.size[0]}x{mask.size[1]}) must have the image's size ({image.size[0]}x{image.size[1]})"
        )
    mode = "L" if channels == 1 else "RGB"
    if image.mode != mode:
        note(f"{path} is {image.mode}; converted to {'grayscale' if channels == 1 else 'RGB'} for the model")
        image = image.convert(mode)
    if sample_size is None:
        return image, mask
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
    if image.size == (width, height):
        return image, mask
    old_w, old_h = image.size
    cropped = old_w * height != old_h * width  # another shape: the centre is kept, the edges cut off
    image = resize_center_crop(image, (height, width))
    how = ", centre-cropped to its shape (the edges cut off)" if cropped else ""
    note(f"{path} is {old_w}x{old_h}; resized to the model's {width}x{height}{how}")
    if mask is not None:
        mask = resize_center_crop(mask, (height, width), nearest=True)
        note(f"mask {mask_path} resized with its image to {width}x{height} (nearest neighbour: no new gray levels)")
    return image, mask


def finite_images(sample: Any, dtype: torch.dtype, *, command: str, what: str) -> list[Image.Image]:
    """PIL images from a pipeline's final sample (``output_type="latent"``), after one check that every value is
    finite: NaN or infinity (a NaN weight, a float16 overflow) would be written as black images with exit status 0.

    Args:
        sample: The final sample, NCHW in [-1, 1].
        dtype: The precision the UNet ran in (the likely cause differs).
        command: The command, for the advice (``"ddpm edit"``).
        what: What was being made, for the message (``"the edited images"``).

    Raises:
        FloatingPointError: The sample holds NaN or infinity; names the likely cause and what to do. Nothing is
            written.
    """
    import torch

    from ..image_processing import postprocess
    from ..pipelines.batch import non_finite_cause

    if not bool(torch.isfinite(sample).all()):  # once per batch: one device sync
        raise FloatingPointError(
            f"the model produced non-finite values (NaN or infinity) for {what}, so no image was written; "
            f"{non_finite_cause(dtype, command)}"
        )
    return postprocess(sample, "pil")


# ---------------------------------------------------------------------------------- precision: --dtype and --fast

#: What ``--dtype`` accepts besides the names of :data:`ddpm.runtime.DTYPES`: torch's names for the same precisions.
DTYPE_ALIASES: dict[str, str] = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


#: The precision every run without ``--dtype``/``--fast`` had before the bf16 CPU default (``dtype``, ``fast``).
OLD_DEFAULT: tuple[str, bool] = ("fp32", False)


def dtype_name(text: str) -> str:
    """``--dtype``'s argparse type: ``fp32``/``fp16``/``bf16``, or torch's name for one (``float32`` -> ``fp32``);
    argparse's ``choices`` then refuses anything else."""
    return DTYPE_ALIASES.get(text.lower(), text.lower())


@dataclasses.dataclass(frozen=True)
class Precision:
    """How a sampling command runs the UNet, and why.

    Attributes:
        dtype: The ``--dtype`` name of the UNet's precision (``"fp32"``, ``"bf16"``, ``"fp16"``).
        fast: Whether the fast path runs (half-precision UNet, fp32 scheduler; :mod:`ddpm.fast`).
        reason: Why, in words, with the option that changes it (the second half of :meth:`describe`).
    """

    dtype: str
    fast: bool
    reason: str

    def describe(self) -> str:
        """The line a command prints, e.g. ``UNet in bf16 (fast path: this CPU has native bf16; --dtype fp32 for
        full precision)``."""
        return f"UNet in {self.dtype} ({self.reason})"


def resolve_precision(
    args: argparse.Namespace, device: torch.device, recorded: Mapping[str, Any] | None = None
) -> Precision:
    """The UNet precision of a sampling command from ``--dtype``, ``--fast`` and ``--no-fast`` on ``device``.

    Explicit options win: ``--fast`` (in ``--dtype``, default the device's fast dtype), then ``--no-fast`` or
    ``--dtype`` alone (the plain loop in that dtype, default fp32). With none of them the device's default runs:
    the bf16 fast path on a CPU with native bf16 (:func:`ddpm.fast.cpu_supports_bf16`), the fp32 plain loop on
    any other CPU and on CUDA; except that a run resuming a folder whose manifest (``recorded``) says fp32 without
    the fast path keeps that (a folder made before the CPU default changed resumes as it began rather than being
    refused for mixing).

    Raises:
        ValueError: ``--fast`` together with ``--no-fast``.
    """
    if args.fast and args.no_fast:
        raise ValueError("--fast and --no-fast contradict each other; give one of them (or neither for the default)")
    if args.fast:
        dtype = args.dtype or fast_dtype_name(device)
        return Precision(dtype, True, "fast path: --fast")
    if args.no_fast or args.dtype is not None:
        dtype = args.dtype or "fp32"
        given = [option for option, on in (("--no-fast", args.no_fast), (f"--dtype {dtype}", args.dtype)) if on]
        return Precision(dtype, False, " ".join(given))
    default = _device_default(device)
    old = recorded is not None and (recorded.get("dtype"), recorded.get("fast", False)) == OLD_DEFAULT
    if old and (default.dtype, default.fast) != OLD_DEFAULT:
        # A folder made by a run without these options before the CPU default became bf16: resume it as it began.
        return Precision("fp32", False, "as the images already in the folder; --dtype or --fast to choose")
    return default


def _device_default(device: torch.device) -> Precision:
    """The precision of a new run without ``--dtype``, ``--fast`` or ``--no-fast`` on ``device``."""
    from ..fast import cpu_supports_bf16

    if device.type == "cpu":
        if cpu_supports_bf16():
            return Precision("bf16", True, "fast path: this CPU has native bf16; --dtype fp32 for full precision")
        return Precision("fp32", False, "this CPU has no native bf16")
    return Precision("fp32", False, f"the default on {device.type}; --fast for half precision")
