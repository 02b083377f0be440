"""The denoising loop written out by hand: a UNet, a scheduler and ten lines, no pipeline.

    python examples/manual_loop.py                                      # the bundled ddpm-mnist, offline
    python examples/manual_loop.py --model google/ddpm-cifar10-32 --steps 50 --out manual.png   # a Hub model

It then runs DDIMPipeline with the same seed and prints how far apart the two images are (zero: the pipeline runs
exactly this loop).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from ddpm import DDIMPipeline, DDIMScheduler, UNet2DModel


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
    parser.add_argument("--out", default="manual.png")
    args = parser.parse_args()

    # The two parts. ddpm-mnist keeps them in "unet/" and "scheduler/", as diffusers saves a pipeline; the flat
    # google/ddpm-* repos keep both at the root, where from_pretrained looks next.
    unet = UNet2DModel.from_pretrained(args.model, subfolder="unet").eval()
    scheduler = DDIMScheduler.from_pretrained(args.model, subfolder="scheduler")

    generator = torch.Generator("cpu").manual_seed(args.seed)
    size = unet.config.sample_size
    sample = torch.randn((1, unet.config.in_channels, size, size), generator=generator)  # x_T ~ N(0, I), (B, C, H, W)
    scheduler.set_timesteps(args.steps)
    with torch.no_grad():
        for t in scheduler.timesteps:
            noise_pred = unet(sample, t).sample  # 1. predict the noise eps_theta(x_t, t)
            sample = scheduler.step(noise_pred, t, sample).prev_sample  # 2. x_t -> x_{t-1}

    image = (sample / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
    array = image.permute(0, 2, 3, 1).numpy()[0]  # (1, C, H, W) -> (H, W, C)
    from PIL import Image

    pixels = (array * 255).round().astype("uint8")
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(args.out)
    print(f"saved {args.out}")

    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        generator=torch.Generator("cpu").manual_seed(args.seed), num_inference_steps=args.steps, output_type="np"
    ).images[0]
    print(f"max difference from DDIMPipeline with the same seed: {np.abs(reference - array).max():.2e}")


if __name__ == "__main__":
    main()
