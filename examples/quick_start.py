"""A first image in Python, offline: the bundled digit model, DDIM with 50 steps, one PNG.

    python examples/quick_start.py                                   # ddpm-mnist, shipped with ddpm: no download
    python examples/quick_start.py --model google/ddpm-cifar10-32    # a Hub model (downloaded once, then cached)
    DDPM_MODEL=google/ddpm-cifar10-32 python examples/quick_start.py # the same, for every example

Everything here is the public API: load a pipeline, call it with a seeded generator, save the image.
"""

from __future__ import annotations

import argparse
import os

import torch

from ddpm import DDIMPipeline


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Hub model: --model google/ddpm-cifar10-32 (or DDPM_MODEL=...)"
    )
    parser.add_argument(
        "--model",
        default=os.environ.get("DDPM_MODEL", "ddpm-mnist"),
        help="a Hub id, a local folder or a bundled model (default: $DDPM_MODEL, else the bundled ddpm-mnist)",
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="quick_start.png")
    args = parser.parse_args()

    pipe = DDIMPipeline.from_pretrained(args.model)
    image = pipe(num_inference_steps=args.steps, generator=torch.Generator("cpu").manual_seed(args.seed)).images[0]
    image.save(args.out)
    print(f"saved a {image.size[0]}x{image.size[1]} image from {args.model} to {args.out}")


if __name__ == "__main__":
    main()
