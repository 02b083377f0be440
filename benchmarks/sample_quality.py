"""Sample quality of a digit model under several samplers, with real-vs-real as the reference.

Generates N images with each sampler from the same seeds (image i from a CPU generator seeded S+i, as
``ddpm sample`` does), scores them against the held-out MNIST digits with ``ddpm.evaluation`` (improved
precision/recall with k-NN manifolds, Fréchet distance in the digit classifier's feature space, predicted-class
histogram), and prints one Markdown table. The reference row scores N real training-split digits the same way
(mean ± std over random draws): every metric depends on N, so compare rows only at equal N.

    python benchmarks/sample_quality.py                       # bundled ddpm-mnist, N=200, the four samplers
    python benchmarks/sample_quality.py --model runs/mnist --num-images 500 --out quality-samples

Quality against the number of UNet calls (NFE), every sampler of ``ddpm sample --scheduler`` at each count:

    python benchmarks/sample_quality.py --nfe 3,5,10,20,50 --num-images 100 --plot fd-vs-calls.png

A sampler runs with the most steps whose calls (``len(scheduler.timesteps)`` after ``set_timesteps``: 2n - 1 for
Heun, n + 9 for PNDM) do not exceed the NFE; the table shows the steps and the actual calls, and a sampler that
cannot take so few calls (PNDM below 13) is left out of that column. ``--compare-diffusers`` adds, for each sampler
that diffusers has, the same run with diffusers' scheduler class in the same loop (the same UNet and noise).

Needs mlxtend (pip install 'ddpm[train]'); the plot needs matplotlib (pip install 'ddpm[bench]').
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import time
from pathlib import Path
from typing import Any

import torch

SAMPLERS = {"ddpm-1000": ("ddpm", 1000), "ddim-50": ("ddim", 50), "ddim-20": ("ddim", 20), "pndm-50": ("pndm", 50)}
#: The samplers the high-order ones are judged against (issue 15's acceptance): the rest are "new".
CLASSIC = ("ddpm", "ddim", "pndm")


@dataclasses.dataclass
class Run:
    """One sampler at one step count: what was asked, what it cost, and its scores."""

    sampler: str
    steps: int
    calls: int
    seconds: float
    scores: Any  # ddpm.evaluation.QualityReport
    nfe: int | None = None


def _scheduler(pipe: Any, sampler: str, implementation: str) -> Any:
    """The ``sampler`` preset on the model's scheduler config: ddpm's class, or diffusers' class of the same name."""
    from ddpm.schedulers.presets import sampler_preset

    preset = sampler_preset(sampler)
    if implementation == "ddpm":
        return preset.build(pipe.scheduler.config)
    import diffusers

    cls = getattr(diffusers, preset.scheduler_class().__name__)
    config = {k: v for k, v in pipe.scheduler.config.to_dict().items() if k != "_use_default_values"}
    return cls.from_config(config, **preset.overrides)


def model_calls(scheduler: Any, steps: int) -> int | None:
    """The UNet calls of ``steps`` steps (``len(timesteps)``), or None where the sampler cannot take that many."""
    try:
        scheduler.set_timesteps(steps)
    except ValueError:
        return None
    return len(scheduler.timesteps)


def steps_for(scheduler: Any, nfe: int) -> tuple[int, int] | None:
    """The most steps whose UNet calls are at most ``nfe``, and those calls; None if even one step costs more."""
    for steps in range(nfe, 0, -1):
        calls = model_calls(scheduler, steps)
        if calls is not None and calls <= nfe:
            return steps, calls
    return None


def _diffusers_loop(pipe: Any, scheduler: Any, generators: list[torch.Generator], steps: int) -> torch.Tensor:
    """Algorithm 2 with a diffusers scheduler (which ddpm's pipeline cannot always drive: UniPC's step() takes no
    generator); the same initial noise and UNet as ddpm's pipeline. Returns images in [0, 1], (B, C, H, W)."""
    from ddpm.utils import randn_tensor

    unet = pipe.unet
    size = unet.config.sample_size
    shape = (len(generators), unet.config.in_channels, size, size)
    x = randn_tensor(shape, generator=generators) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    extra = {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_output = unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(model_output, t, x, **extra).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


def generate(
    model: str, scheduler: str, steps: int, n: int, seed: int, batch_size: int, implementation: str = "ddpm"
) -> tuple[torch.Tensor, float, int]:
    """``n`` images (uint8, (n, C, H, W)) from ``model`` with the ``scheduler`` sampler in ``steps`` steps; returns
    them, the seconds and the UNet calls per image."""
    from ddpm import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(model)
    pipe.scheduler = _scheduler(pipe, scheduler, implementation)
    pipe.set_progress_bar_config(disable=True)
    calls = model_calls(pipe.scheduler, steps)
    if calls is None:
        raise SystemExit(f"{scheduler} cannot take {steps} steps")
    chunks = []
    start = time.perf_counter()
    for first in range(0, n, batch_size):
        count = min(batch_size, n - first)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(first, first + count)]
        if implementation == "ddpm":
            images = pipe(batch_size=count, generator=generators, num_inference_steps=steps, output_type="pt").images
        else:
            images = _diffusers_loop(pipe, pipe.scheduler, generators, steps)
        chunks.append((images * 255).round().to(torch.uint8).cpu())  # (B, C, H, W) in [0, 1] -> uint8
    return torch.cat(chunks), time.perf_counter() - start, calls


def _save_grid(out: Path | None, name: str, images: torch.Tensor) -> None:
    from ddpm.image_processing import make_image_grid, numpy_to_pil

    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    count = min(100, len(images))
    side = int(count**0.5)
    pil = numpy_to_pil(images[: side * side].permute(0, 2, 3, 1).float().numpy() / 255)  # (N, H, W, C) in [0, 1]
    make_image_grid(pil, rows=side, cols=side).save(out / f"{name}.png")


def _score(images: torch.Tensor) -> tuple[Any, Any]:
    from ddpm.evaluation import evaluate_digits

    return evaluate_digits(images)


def fixed_samplers(args: argparse.Namespace) -> None:
    """The original table: the named samplers of :data:`SAMPLERS` at their step counts."""
    from ddpm.evaluation import format_table

    rows, reference, timings = [], None, []
    for name in args.samplers.split(","):
        if name not in SAMPLERS:
            raise SystemExit(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}")
        scheduler, steps = SAMPLERS[name]
        images, seconds, _ = generate(args.model, scheduler, steps, args.num_images, args.seed, args.batch_size)
        report, reference = _score(images)
        rows.append(type(report)(**{**report.to_dict(), "name": name}))
        timings.append(f"{name}: {seconds:.0f} s ({seconds / args.num_images * 1000:.0f} ms/image)")
        _save_grid(args.out, name, images)
    _print_header(args)
    print(format_table([*rows, reference]))
    print("generation time: " + "; ".join(timings))


def _print_header(args: argparse.Namespace) -> None:
    print(
        f"model {args.model}, N={args.num_images} per sampler, seeds {args.seed}..{args.seed + args.num_images - 1}, "
        f"{torch.get_num_threads()} CPU thread(s)"
    )


def nfe_sweep(args: argparse.Namespace) -> None:
    """Every sampler at each number of UNet calls: a Markdown table, the acceptance check, a plot and a JSON file."""
    from ddpm import DDPMPipeline
    from ddpm.schedulers.presets import SAMPLER_PRESETS

    nfes = sorted({int(v) for v in args.nfe.split(",")})
    if not nfes or nfes[0] < 1:
        raise SystemExit(f"--nfe takes positive UNet call counts, got {args.nfe!r}")
    names = args.samplers.split(",") if args.samplers else list(SAMPLER_PRESETS)
    unknown = [n for n in names if n not in SAMPLER_PRESETS]
    if unknown:
        raise SystemExit(f"unknown sampler(s) {', '.join(unknown)}; choose from {', '.join(SAMPLER_PRESETS)}")
    if args.plot is not None:
        _check_matplotlib()
    implementations = ["ddpm", "diffusers"] if args.compare_diffusers else ["ddpm"]
    runs, reference = load_runs(args.load or [], args.num_images)
    done = {(r.sampler, r.calls) for r in runs}
    config_pipe = DDPMPipeline.from_pretrained(args.model)
    if not args.report_only:
        generate(args.model, "ddim", 2, 1, args.seed, 1)  # warm-up: the first run's time would include start-up
    for implementation in implementations if not args.report_only else []:
        for name in names:
            if implementation == "diffusers" and name in CLASSIC:
                continue  # the reference is for the new samplers; the classic ones are tested against diffusers
            label = name if implementation == "ddpm" else f"{name} (diffusers)"
            planned: dict[int, tuple[int, int]] = {}
            for nfe in nfes:
                found = steps_for(_scheduler(config_pipe, name, implementation), nfe)
                if found is not None and found not in planned.values():
                    planned[nfe] = found
            for nfe, (steps, planned_calls) in planned.items():
                if (label, planned_calls) in done:
                    continue  # from --load
                images, seconds, calls = generate(
                    args.model, name, steps, args.num_images, args.seed, args.batch_size, implementation
                )
                report, reference = _score(images)
                runs.append(Run(label, steps, calls, seconds, report, nfe))
                print(
                    f"  {label:<24} {steps:>4} steps {calls:>4} calls: precision {report.precision:.3f} recall "
                    f"{report.recall:.3f} Fréchet {report.frechet_distance:.3f} ({seconds:.0f} s)",
                    flush=True,
                )
                _save_grid(args.out, f"{label.replace(' ', '_')}-{calls}", images)
                if args.json is not None:  # after every run: an interrupted sweep resumes with --load
                    save_runs(args.json, runs, reference)
    if reference is None:
        raise SystemExit("nothing to report: no sampler could run at these numbers of calls")
    order = {name: i for i, name in enumerate(SAMPLER_PRESETS)}
    runs.sort(key=lambda r: ("(" in r.sampler, order.get(r.sampler.split()[0], len(order)), r.calls))
    if args.json is not None:
        save_runs(args.json, runs, reference)
    _print_header(args)
    print(nfe_table(runs, reference, args.num_images))
    print()
    print(acceptance(runs, reference))
    if args.plot is not None:
        plot(runs, reference, args.plot)
        print(f"plot: {args.plot}")


def save_runs(path: Path, runs: list[Run], reference: Any) -> None:
    """Every run and the reference row as JSON (what ``--load`` reads)."""
    data = {
        "reference": reference.to_dict(),
        "runs": [{**dataclasses.asdict(r), "scores": r.scores.to_dict()} for r in runs],
    }
    path.write_text(json.dumps(data, indent=1) + "\n")


def load_runs(paths: list[Path], n: int) -> tuple[list[Run], Any]:
    """The runs and the reference row of earlier ``--json`` files (made with the same N and seeds)."""
    from ddpm.evaluation import QualityReport

    def report(d: dict[str, Any]) -> QualityReport:
        fields = {**d, "class_counts": tuple(d["class_counts"])}
        if fields.get("spread") is not None:
            fields["spread"] = tuple(fields["spread"])
        return QualityReport(**fields)

    runs, reference = [], None
    for path in paths:
        data = json.loads(path.read_text())
        reference = report(data["reference"])
        if reference.n != n:
            raise SystemExit(f"{path} scored {reference.n} images per run, not --num-images {n}")
        runs += [Run(**{**r, "scores": report(r["scores"])}) for r in data["runs"]]
    return runs, reference


def nfe_table(runs: list[Run], reference: Any, n: int) -> str:
    """One Markdown row per run, sampler by sampler, then the real-vs-real row."""
    lines = [
        "| sampler | steps | UNet calls | precision ↑ | recall ↑ | Fréchet distance ↓ | CPU time / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        s = r.scores
        lines.append(
            f"| {r.sampler} | {r.steps} | {r.calls} | {s.precision:.3f} | {s.recall:.3f} | {s.frechet_distance:.3f} "
            f"| {r.seconds / n:.3f} s |"
        )
    p, rc, fd = reference.spread
    lines.append(
        f"| real digits (train split, {n}) | – | – | {reference.precision:.3f} ± {p:.3f} | "
        f"{reference.recall:.3f} ± {rc:.3f} | {reference.frechet_distance:.3f} ± {fd:.3f} | – |"
    )
    return "\n".join(lines)


def acceptance(runs: list[Run], reference: Any, calls: int = 5, ddim_calls: int = 20) -> str:
    """Issue 15's check: the best new sampler at ``calls`` UNet calls against DDIM at ``ddim_calls`` and ``calls``."""

    def at(sampler: str, n: int) -> Run | None:
        return next((r for r in runs if r.sampler == sampler and r.calls == n), None)

    ddim_ref, ddim_low = at("ddim", ddim_calls), at("ddim", calls)
    new = [r for r in runs if r.calls == calls and r.sampler not in CLASSIC and "(" not in r.sampler]
    if ddim_ref is None or ddim_low is None or not new:
        return f"acceptance: not checked (needs ddim at {calls} and {ddim_calls} calls and a new sampler at {calls})"
    best = min(new, key=lambda r: r.scores.frechet_distance)
    fd, target = best.scores.frechet_distance, ddim_ref.scores.frechet_distance
    close = (
        abs(best.scores.precision - reference.precision) <= 0.1 and abs(best.scores.recall - reference.recall) <= 0.1
    )
    held = fd <= 1.1 * target and fd < ddim_low.scores.frechet_distance and close
    return (
        f"acceptance ({'holds' if held else 'does not hold'}): best new sampler at {calls} calls is {best.sampler}, "
        f"Fréchet {fd:.3f} vs DDIM-{ddim_calls} {target:.3f} (limit {1.1 * target:.3f}) and DDIM at {calls} calls "
        f"{ddim_low.scores.frechet_distance:.3f}; precision {best.scores.precision:.3f} / recall "
        f"{best.scores.recall:.3f} vs real {reference.precision:.3f} / {reference.recall:.3f}"
    )


def _check_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit("the plot needs matplotlib: pip install 'ddpm[bench]' (or pip install matplotlib)") from None


def plot(runs: list[Run], reference: Any, path: Path) -> None:
    """Fréchet distance against UNet calls, one line per sampler, real-vs-real as a dashed band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullLocator, ScalarFormatter

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    samplers = list(dict.fromkeys(r.sampler for r in runs))
    markers = "os^vD<>phX*P"
    for i, name in enumerate(samplers):
        points = sorted((r.calls, r.scores.frechet_distance) for r in runs if r.sampler == name)
        style = "--" if "(" in name else "-"
        ax.plot(*zip(*points), style, marker=markers[i % len(markers)], label=name)
    fd, spread = reference.frechet_distance, reference.spread[2]
    ax.axhspan(fd - spread, fd + spread, color="grey", alpha=0.2)
    ax.axhline(fd, color="grey", linestyle=":", label="real vs real")
    ax.set_xscale("log")
    ax.set_yscale("log")
    calls = sorted({r.calls for r in runs})
    ax.set_xticks(calls, [str(c) for c in calls])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("UNet calls per image")
    ax.set_ylabel("Fréchet distance (digit features) ↓")
    ax.set_title(f"ddpm-mnist, {reference.n} images per point")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ddpm-mnist", help="pipeline folder, bundled name or Hub id")
    parser.add_argument("--num-images", type=int, default=None, help="images per run (default: 200; 100 with --nfe)")
    parser.add_argument(
        "--samplers",
        default=None,
        help=f"comma-separated, from {', '.join(SAMPLERS)}; with --nfe, ddpm sample's --scheduler names (default: all)",
    )
    parser.add_argument(
        "--nfe",
        default=None,
        metavar="N,N,...",
        help="run every sampler at each of these numbers of UNet calls (e.g. 3,5,10,20,50)",
    )
    parser.add_argument("--compare-diffusers", action="store_true", help="with --nfe: also run diffusers' classes")
    parser.add_argument("--plot", type=Path, default=None, help="with --nfe: write Fréchet distance vs calls here")
    parser.add_argument("--json", type=Path, default=None, help="with --nfe: write every figure to this JSON file")
    parser.add_argument(
        "--load",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="with --nfe: start from the runs in these --json files (their samplers are not run again)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="with --load: run nothing, print the table and draw the plot"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also save each run's images as a grid here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.nfe is None:
        if args.compare_diffusers or args.plot or args.json:
            parser.error("--compare-diffusers, --plot and --json go with --nfe")
        args.num_images = args.num_images or 200
        args.samplers = args.samplers or ",".join(SAMPLERS)
        fixed_samplers(args)
    else:
        args.num_images = args.num_images or 100
        nfe_sweep(args)


if __name__ == "__main__":
    main()
