"""A first run that needs no download: a tiny untrained UNet, five DDIM steps, one PNG.

    python examples/quick_start.py                       # writes quick_start.png (noise-like: the UNet is untrained)
    python examples/quick_start.py --model google/ddpm-cifar10-32 --steps 50   # a trained model instead

Everything here is the public API: build a ``UNet2DModel`` and a scheduler, put them in a pipeline, call it.
"""

from __future__ import annotations

import argparse
import os

import torch

from ddpm import DDIMPipeline, DDIMScheduler, UNet2DModel


def tiny_unet() -> UNet2DModel:
    """A 32x32 RGB UNet with every block type (plain, attention, mid-block attention) and random weights."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=32,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=os.environ.get("DDPM_MODEL"), help="a Hub id or folder (default: tiny UNet)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="quick_start.png")
    args = parser.parse_args()

    if args.model:
        pipe = DDIMPipeline.from_pretrained(args.model)
    else:
        pipe = DDIMPipeline(unet=tiny_unet().eval(), scheduler=DDIMScheduler())
    image = pipe(num_inference_steps=args.steps, generator=torch.Generator("cpu").manual_seed(args.seed)).images[0]
    image.save(args.out)
    print(f"saved a {image.size[0]}x{image.size[1]} image to {args.out}")


if __name__ == "__main__":
    main()
