"""``ddpm sample``: generate images into a folder, one PNG per image, resumable and shardable across processes.

Image ``i`` always comes from a CPU generator seeded ``--seed + i``, so the files do not depend on ``--batch-size``
or on how many processes share the work. A rerun with the same settings skips the images already written (each PNG
is written atomically, so an interrupted run leaves no partial file). The settings are recorded in
``<out>/ddpm_sample.json``; resuming with different settings is refused rather than mixing images.

Several processes: ``torchrun --nproc-per-node K -m ddpm sample ...`` (or ``torchrun ... $(which ddpm) sample``).
Process ``rank`` makes the images with ``i % K == rank``; on CUDA each uses ``cuda:<LOCAL_RANK>``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fast import COMPILE_MODES
from ..runtime import DEVICES, DTYPES, Distributed, resolve_device
from ..schedulers import SCHEDULERS
from ._common import add_model_argument, non_negative, positive, positive_seconds, resolve_model

if TYPE_CHECKING:  # pragma: no cover
    import torch

NAME = "sample"
HELP = "generate images into a folder (one PNG per image, resumable, shardable with torchrun)"

EXAMPLES = """\
examples:
  ddpm sample google/ddpm-cifar10-32 --scheduler ddim --steps 50 --num-images 64 --out samples --grid grid.png
  ddpm sample google/ddpm-ema-celebahq-256 --device cuda --dtype bf16 --num-images 1000 --batch-size 32
  ddpm sample google/ddpm-ema-celebahq-256 --device cuda --fast --num-images 1000 --batch-size 64
  torchrun --nproc-per-node 4 -m ddpm sample google/ddpm-cifar10-32 --num-images 50000 --out fid-samples

Image i is made from seed S+i alone: the files do not depend on --batch-size or the number of processes, and a
rerun with the same settings skips the images already in --out.
"""

#: The file in the output folder that records the settings the images were made with.
MANIFEST_NAME = "ddpm_sample.json"
#: ``--scheduler`` values: the short names of the scheduler registry.
SCHEDULER_CHOICES: tuple[str, ...] = tuple(SCHEDULERS)
#: At most this many images go into ``--grid`` unless ``--grid-size`` says otherwise.
DEFAULT_GRID_SIZE = 64
#: Values assumed for settings that manifests written by earlier versions do not record.
MANIFEST_DEFAULTS: dict[str, Any] = {"fast": False}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sample`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``) and return it."""
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_argument(parser)
    parser.add_argument("--scheduler", choices=SCHEDULER_CHOICES, default="ddpm", help="sampler (default: ddpm)")
    parser.add_argument(
        "--steps",
        type=positive,
        default=None,
        metavar="N",
        help="denoising steps (default: 1000 for ddpm, 50 otherwise)",
    )
    parser.add_argument("--num-images", type=positive, default=1, metavar="N", help="images to generate (default: 1)")
    parser.add_argument(
        "--batch-size",
        type=positive,
        default=16,
        metavar="N",
        help="images per forward pass; memory only (default: 16)",
    )
    parser.add_argument("--seed", type=non_negative, default=0, metavar="S", help="image i uses seed S+i (default: 0)")
    parser.add_argument("--eta", type=float, default=None, metavar="E", help="DDIM eta: 0 deterministic, 1 DDPM-like")
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="where to run (default: auto = cuda if available)"
    )
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default=None,
        help="UNet precision (default: fp32; with --fast, bf16 on CUDA and on CPUs with native bf16)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="fast path: half-precision UNet with fp32 scheduler math, CUDA graphs on CUDA (see docs/performance.md)",
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
        "--threads", type=positive, default=None, metavar="N", help="CPU threads for torch (default: torch's choice)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("samples"), metavar="DIR", help="output folder (default: samples)"
    )
    parser.add_argument(
        "--grid", type=Path, default=None, metavar="FILE", help="also save a grid of the images to FILE"
    )
    parser.add_argument(
        "--grid-size",
        type=positive,
        default=None,
        metavar="K",
        help=f"put the first K images in the grid (default: all, at most {DEFAULT_GRID_SIZE})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _settings(args: argparse.Namespace, model: str, dtype: str) -> dict[str, Any]:
    from ..pipelines import PIPELINES

    steps = args.steps or PIPELINES[args.scheduler].default_num_inference_steps
    model_id = str(Path(model).resolve()) if Path(model).expanduser().is_dir() else model
    return {
        "model": model_id,
        "scheduler": args.scheduler,
        "steps": steps,
        "seed": args.seed,
        "eta": args.eta if args.eta is not None else (0.0 if args.scheduler == "ddim" else None),
        "dtype": dtype,
        "fast": args.fast,
    }


def _check_manifest(out: Path, settings: dict[str, Any], write: bool) -> None:
    """Refuse to resume into a folder made with other settings; record the settings when ``write``."""
    from ..config import read_json
    from ..io import atomic_write_text

    path = out / MANIFEST_NAME
    if path.exists():
        old = read_json(path)
        recorded = {**MANIFEST_DEFAULTS, **old}
        diffs = [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in settings.items() if recorded.get(k) != v]
        if diffs:
            raise ValueError(
                f"{out} holds images made with other settings ({'; '.join(diffs)}); use another --out, or delete "
                f"{out} to start over"
            )
    elif write:
        atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _fast_dtype_name(device: torch.device) -> str:
    """The ``--dtype`` name of the fast path's default precision on ``device``."""
    from ..fast import default_fast_dtype

    names = {dtype: name for name, dtype in DTYPES.items()}
    return names[default_fast_dtype(device)]


def _write_grid(out: Path, grid: Path, count: int) -> Path:
    from PIL import Image

    from ..image_processing import grid_shape, make_image_grid, save_image
    from ..pipelines.batch import image_path

    images = []
    for i in range(count):
        with Image.open(image_path(out, i)) as img:
            images.append(img.convert("RGB"))
    rows, cols = grid_shape(count)
    return save_image(make_image_grid(images, rows, cols), grid)


def run(args: argparse.Namespace) -> int:
    """Generate the images ``ddpm sample`` was asked for; returns the exit status."""
    model = resolve_model(args.model)
    if args.eta is not None and args.eta != 0 and args.scheduler != "ddim":
        raise ValueError(f"--eta {args.eta} applies only to --scheduler ddim (got --scheduler {args.scheduler})")
    from ..pipelines import PIPELINES
    from ..pipelines.batch import sample_to_folder

    if args.compile != "off" and not args.fast:
        raise ValueError(f"--compile {args.compile} needs --fast")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    dist = Distributed()
    device = resolve_device(args.device, dist.local_rank)
    dtype_name = args.dtype or (_fast_dtype_name(device) if args.fast else "fp32")
    dtype = DTYPES[dtype_name]
    out: Path = args.out.expanduser()
    settings = _settings(args, model, dtype_name)

    with dist.joined(device):
        main_process = dist.is_main
        out.mkdir(parents=True, exist_ok=True)
        _check_manifest(out, settings, write=main_process)

        pipe = PIPELINES[args.scheduler].from_pretrained(model, torch_dtype=dtype).to(device)
        if args.fast:
            compile_mode = None if args.compile == "off" else args.compile
            pipe.enable_fast_sampling(dtype, compile=compile_mode, compile_budget_s=args.compile_budget)
        show = main_process and not args.no_progress
        pipe.set_progress_bar_config(leave=False, desc="steps", **({} if show else {"disable": True}))
        report = sample_to_folder(
            pipe,
            out,
            args.num_images,
            batch_size=args.batch_size,
            seed=args.seed,
            num_inference_steps=settings["steps"],
            eta=args.eta,
            rank=dist.rank,
            world_size=dist.world_size,
            progress=show,
        )
        written, skipped = dist.all_sum([len(report.written), len(report.skipped)])
        dist.barrier()  # every shard is on disk before the grid is made
        if main_process:
            print(f"ddpm sample: {args.num_images} images in {out.resolve()} ({written} new, {skipped} already there)")
            if args.grid is not None:
                count = min(args.num_images, args.grid_size or DEFAULT_GRID_SIZE)
                grid = _write_grid(out, args.grid.expanduser(), count)
                print(f"ddpm sample: grid of the first {count} images in {grid.resolve()}")
    return 0
