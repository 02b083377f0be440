"""Inpainting the lower half of held-out digits: ddpm's RePaint, diffusers' RePaint and a nearest-neighbour baseline.

On the bundled ddpm-mnist model, each of ``--count`` held-out MNIST digits (the same number of each class) keeps its
top half and has its bottom half filled by:

* ``ddpm``: :class:`ddpm.RePaintPipeline`, once per ``--guidance`` weight (0: plain RePaint; w > 0 adds
  reconstruction guidance, Ho et al. 2022, ``reconstruction_guidance=w``);
* ``diffusers``: diffusers 0.42.1's ``RePaintPipeline`` on the same weights, with the same generator and settings;
* ``nearest``: the bottom half of the training digit whose top half is nearest (L2) to the digit's top half.

It reports, for each, the largest change of the kept half (8-bit levels) and how often ``ddpm evaluate``'s digit
classifier gives the completed digit its true label, as a Markdown table, and writes a picture (digits | input with
the hole | ddpm | diffusers | nearest) with ``--image``::

    python benchmarks/editing_inpaint.py --steps 25 --jump-length 5 --jump-n-sample 3 --eta 1 --guidance 0,10 \
        --image docs/images/inpaint-mnist.png
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100, help="held-out digits, as many of each class (default 100)")
    parser.add_argument("--steps", type=int, default=50, help="grid timesteps n (default 50; the paper: 250)")
    parser.add_argument("--jump-length", type=int, default=5, help="j (default 5; the paper: 10)")
    parser.add_argument("--jump-n-sample", type=int, default=5, help="r (default 5; the paper: 10)")
    parser.add_argument("--eta", type=float, default=0.0, help="eta of both pipelines (default 0, diffusers')")
    parser.add_argument(
        "--guidance", default="0", help="comma-separated reconstruction guidance weights of ddpm's rows (default: 0)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--image", default=None, help="write the picture (12 digits) to this PNG")
    return parser.parse_args()


def _digits(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` held-out digits, the first count/10 of each class: uint8 (N, 1, 32, 32) and labels (N,)."""
    from ddpm.training.data import mnist_digits

    images, labels = mnist_digits("heldout")
    per_class = count // 10
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(10)])
    return images[keep], labels[keep]


def _nearest_completion(top: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The baseline: each digit's bottom half from the training digit with the nearest top half (uint8 images)."""
    from ddpm.training.data import mnist_digits

    train, _ = mnist_digits("train")
    kept = mask.bool().expand_as(top)  # (N, 1, 32, 32)
    a = top.float().masked_fill(~kept, 0).flatten(1)  # (N, 1024)
    b = train.float().masked_fill(~mask.bool().expand_as(train), 0).flatten(1)  # (M, 1024)
    nearest = torch.cdist(a, b).argmin(dim=1)  # (N,)
    return torch.where(kept, top, train[nearest])


def _run(pipe_call, images: torch.Tensor, mask: torch.Tensor, args, batch_size: int) -> torch.Tensor:
    """A pipeline over the digits in batches, one generator per batch seeded ``seed + first index``; uint8 out."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].float() / 127.5 - 1  # (b, 1, 32, 32) in [-1, 1]
        generator = torch.Generator().manual_seed(args.seed + start)
        result = pipe_call(chunk, mask, generator)  # (b, 32, 32, 1) floats in [0, 1]
        out.append(torch.from_numpy(np.round(np.asarray(result) * 255)).permute(0, 3, 1, 2).to(torch.uint8))
    return torch.cat(out)


def main() -> int:
    args = _args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    torch.set_num_threads(args.threads)
    import diffusers

    from ddpm import RePaintPipeline
    from ddpm.evaluation import load_digit_classifier
    from ddpm.evaluation.classifier import digit_features
    from ddpm.hub import locate

    weights = [float(w) for w in args.guidance.split(",")]
    digits, labels = _digits(args.count)
    mask = torch.zeros(1, 1, 32, 32)
    mask[:, :, :16] = 1  # 1 = keep (diffusers' convention): the top half is kept, the bottom half filled
    settings = dict(
        num_inference_steps=args.steps, eta=args.eta, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample
    )

    ours = RePaintPipeline.from_pretrained("ddpm-mnist")
    ours.set_progress_bar_config(disable=True)
    folder = locate("ddpm-mnist", "model_index.json").path.parent  # the bundled pipeline folder
    theirs = diffusers.RePaintPipeline(
        unet=diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet"),
        scheduler=diffusers.RePaintScheduler.from_pretrained(folder, subfolder="scheduler"),
    )
    theirs.set_progress_bar_config(disable=True)

    results: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    runs = [(f"ddpm, guidance {w:g}" if w else "ddpm", ours, {"reconstruction_guidance": w}) for w in weights]
    for name, pipe, extra in (*runs, ("diffusers", theirs, {})):
        start = time.perf_counter()
        results[name] = _run(
            lambda x, m, g, pipe=pipe, extra=extra: (
                pipe(x, m, generator=g, output_type="np", **settings, **extra).images
            ),
            digits,
            mask,
            args,
            args.batch_size,
        )
        seconds[name] = time.perf_counter() - start
    start = time.perf_counter()
    results["nearest"] = _nearest_completion(digits, mask)
    seconds["nearest"] = time.perf_counter() - start

    classifier = load_digit_classifier()
    kept = mask.bool().expand_as(digits)
    rows = []
    for name, images in results.items():
        _, predicted = digit_features(classifier, images)
        change = int((images.int() - digits.int()).abs()[kept].max())
        rows.append((name, change, float((predicted == labels).float().mean()), seconds[name]))
    _, original_labels = digit_features(classifier, digits)
    print(
        f"{len(digits)} held-out digits, bottom half filled; RePaint n={args.steps}, j={args.jump_length}, "
        f"r={args.jump_n_sample}, eta={args.eta}, seed {args.seed}, {args.threads} threads; the classifier labels "
        f"the original digits correctly {float((original_labels == labels).float().mean()):.0%} of the time\n"
    )
    print("| method | kept half: largest change (8-bit levels) | label of the completion = true label | seconds |")
    print("|---|---|---|---|")
    for name, change, rate, secs in rows:
        print(f"| {name} | {change} | {rate:.0%} | {secs:.0f} |")
    if args.image:
        _picture(args.image, digits, mask, results)
    return 0


def _picture(path: str, digits: torch.Tensor, mask: torch.Tensor, results: dict[str, torch.Tensor]) -> None:
    """Rows: the digit, the input (hole in grey), then one per method (ddpm's, diffusers, nearest); one column per
    class (its first digit)."""
    from PIL import Image

    per_class = len(digits) // 10
    columns = [c * per_class for c in range(10)]
    holed = torch.where(mask.bool().expand_as(digits), digits, torch.full_like(digits, 96))
    rows = [digits, holed, *results.values()]
    grid = torch.cat([torch.cat([row[i, 0] for i in columns], dim=1) for row in rows], dim=0)  # (rows*32, 10*32)
    Image.fromarray(grid.numpy()).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST).save(path)
    print(f"\npicture: {path} (rows: digit, input, {', '.join(results)})")


if __name__ == "__main__":
    raise SystemExit(main())
