"""Sample the same seed with DDPM, DDIM and PNDM from one loaded pipeline, and save the three images side by side.

    python examples/swap_scheduler.py                                   # the bundled ddpm-mnist, offline
    python examples/swap_scheduler.py --model google/ddpm-cifar10-32 --out schedulers.png   # a Hub model

A scheduler holds no weights, only its config, so swapping one is a single line:
``pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from ddpm import DDIMScheduler, DDPMPipeline, DDPMScheduler, PNDMScheduler, make_image_grid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Hub model: --model google/ddpm-cifar10-32 (or DDPM_MODEL=...)"
    )
    parser.add_argument(
        "--model",
        default=os.environ.get("DDPM_MODEL", "ddpm-mnist"),
        help="a Hub id, a local folder or a bundled model (default: $DDPM_MODEL, else the bundled ddpm-mnist)",
    )
    parser.add_argument("--ddpm-steps", type=int, default=1000, help="steps for DDPM (it needs all of them)")
    parser.add_argument("--steps", type=int, default=50, help="steps for DDIM and PNDM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="schedulers.png")
    args = parser.parse_args()

    pipe = DDPMPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(leave=False)
    images = []
    for scheduler_cls, steps in (
        (DDPMScheduler, args.ddpm_steps),
        (DDIMScheduler, args.steps),
        (PNDMScheduler, args.steps),
    ):
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)  # same noise schedule, another sampler
        start = time.perf_counter()
        image = pipe(generator=torch.Generator("cpu").manual_seed(args.seed), num_inference_steps=steps).images[0]
        print(
            f"{scheduler_cls.__name__}: {steps} steps, {len(pipe.scheduler.timesteps)} UNet calls, "
            f"{time.perf_counter() - start:.1f} s"
        )
        images.append(image)
    make_image_grid(images, rows=1, cols=3).save(args.out)
    print(f"DDPM | DDIM | PNDM saved to {args.out}")


if __name__ == "__main__":
    main()
