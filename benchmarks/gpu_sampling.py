"""Sampling speed, ddpm against diffusers, on the same weights in one process: forwards, full loops, memory, FLOP/s.

What it measures (each item prints as soon as it is done; ``--json FILE`` also writes everything as JSON):

1. **matmul**: the bf16 matrix-product throughput of this device (``--matmul-size``³, mean of 10 after 3 warm-ups),
   the peak that the UNet's achieved TFLOP/s are compared with.
2. **flops**: the UNet's FLOPs per image and step, counted once with ``torch.utils.flop_counter.FlopCounterMode`` on
   diffusers' model (the architecture's nominal count; every TFLOP/s figure below divides this count by a time).
3. **forward**: one UNet call per dtype (``--dtypes``) and batch size (``--batch-sizes``): diffusers eager (its
   default NCHW layout), ddpm eager, and ddpm's fast-path runner (a CUDA graph on CUDA, the eager fallback on CPU);
   medians of ``--repeats`` interleaved runs (the order alternates), milliseconds, ratios to diffusers, TFLOP/s and
   peak memory.
4. **sampling**: full pipeline calls with a CPU generator (same seed, same noise in both libraries): DDPM with
   ``--steps`` steps at batch 1 and DDIM with ``--ddim-steps`` at each of ``--ddim-batch-sizes``, for diffusers
   fp32, ddpm fp32, ddpm's plain loop in each of ``--plain-dtypes`` (what ``ddpm sample --dtype`` runs) and ddpm's
   fast path in each of ``--fast-dtypes`` (CUDA graphs, optional ``--ddpm-compile``); seconds, peak memory,
   capture/compile time, and each run's images against ddpm's fp32 images (max |diff| and PSNR, images in [0, 1]).
   After a fast run, 5 more steps run with every step after the first under
   ``torch.cuda.set_sync_debug_mode("error")``: a host synchronisation inside the loop is reported (``syncs``).
5. **profile** (opt-in, ``--parts ...,profile``): ``torch.profiler`` over ``--profile-repeats`` forwards at
   ``--profile-batch`` in ``--profile-dtype`` for diffusers, ddpm in its device's layout and ddpm in the other
   layout; prints each one's top kernels by device time (self time on CPU): where a slow forward spends it.
6. ``--compare-layouts``: the forward part also times ddpm in the layout its device does not prefer (channels_last
   on CUDA, NCHW on CPU), the check that ``preferred_memory_format`` picks the faster one.
7. ``--diffusers-compiled``: diffusers as its speed guide recommends (fp16, channels_last, TF32,
   ``torch.compile(mode="reduce-overhead")``), with its compile time (the first call at each shape), in the
   forward and sampling parts.

The weights are diffusers' random initialisation, perturbed with a fixed seed (tests/helpers.py), loaded into both
libraries, or trained weights from ``--model DIR``. On CPU the "fast" runner is the eager fallback: half-precision
UNet, float32 sample and scheduler.

GPU run (H100/H200; 404 s on an H200 with --repeats 5; see benchmarks/README.md for the wheels to carry):
    python benchmarks/gpu_sampling.py --device cuda --json $OUT/gpu_sampling.json --diffusers-compiled
CPU smoke test (CI, a few seconds):
    python benchmarks/gpu_sampling.py --device cpu --config tiny --batch-sizes 1,2 --steps 3 --ddim-steps 2 \
        --ddim-batch-sizes 1,2 --dtypes fp32,bf16 --repeats 2 --warmup 1 --matmul-size 256
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddpm import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from ddpm.evaluation.metrics import compare_images
from ddpm.fast import UNetRunner, default_fast_dtype

from helpers import (
    CELEBAHQ_SCHEDULER_CONFIG,
    CELEBAHQ_UNET_CONFIG,
    CIFAR10_SCHEDULER_CONFIG,
    CIFAR10_UNET_CONFIG,
    TINY_UNET_CONFIG,
    diffusers_unet,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {dtype: name for name, dtype in DTYPES.items()}
CONFIGS = {
    "celebahq-256": (CELEBAHQ_UNET_CONFIG, CELEBAHQ_SCHEDULER_CONFIG),
    "cifar10-32": (CIFAR10_UNET_CONFIG, CIFAR10_SCHEDULER_CONFIG),
    "tiny": (TINY_UNET_CONFIG, CIFAR10_SCHEDULER_CONFIG),
}
PARTS = ("matmul", "forward", "ddpm", "ddim", "profile")
DEFAULT_PARTS = ("matmul", "forward", "ddpm", "ddim")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="celebahq-256", help="architecture")
    parser.add_argument("--model", type=Path, default=None, help="a saved pipeline folder (unet/, scheduler/) whose "
                        "trained weights replace the random ones (overrides --config)")  # fmt: skip
    parser.add_argument("--dtypes", default="fp32,fp16,bf16", help="forward dtypes, comma-separated")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 16, 64], help="forward batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="timed forwards per contender")
    parser.add_argument("--warmup", type=int, default=3, help="untimed forwards per contender first")
    parser.add_argument("--steps", type=int, default=1000, help="DDPM steps of the sampling part (batch 1)")
    parser.add_argument("--ddim-steps", type=int, default=50, help="DDIM steps of the sampling part")
    parser.add_argument("--ddim-batch-sizes", type=_ints, default=[1, 16], help="DDIM batch sizes")
    parser.add_argument("--fast-dtypes", default=None, help="fast-path UNet dtypes of the sampling part, comma-"
                        "separated (default: bf16,fp16 on CUDA; bf16 on CPUs with native bf16, else fp32)")  # fmt: skip
    parser.add_argument("--plain-dtypes", default=None, help="also run ddpm's plain loop with the UNet and x_t in "
                        "these dtypes (what `ddpm sample --dtype` does), e.g. bf16")  # fmt: skip
    parser.add_argument("--ddpm-compile", default="off", help="torch.compile mode for ddpm's fast path (default off)")
    parser.add_argument("--compile-budget", type=float, default=120.0, help="seconds ddpm may spend compiling")
    parser.add_argument("--diffusers-compiled", action="store_true", help="add diffusers fp16 + channels_last + TF32 "
                        "+ torch.compile(mode='reduce-overhead')")  # fmt: skip
    parser.add_argument("--matmul-size", type=int, default=None, help="n of the n×n×n bf16 peak product "
                        "(default 8192 on CUDA, 2048 on CPU)")  # fmt: skip
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"which parts to run, from {','.join(PARTS)} "
                        f"(default: {','.join(DEFAULT_PARTS)})")  # fmt: skip
    parser.add_argument("--compare-layouts", action="store_true", help="forward part: also time ddpm in the layout "
                        "its device does not prefer")  # fmt: skip
    parser.add_argument("--profile-batch", type=int, default=None, help="profile part: batch (default 64 on CUDA, "
                        "2 on CPU)")  # fmt: skip
    parser.add_argument("--profile-dtype", choices=sorted(DTYPES), default="bf16", help="profile part: dtype")
    parser.add_argument("--profile-repeats", type=int, default=3, help="profile part: profiled forwards")
    parser.add_argument("--profile-rows", type=int, default=12, help="profile part: kernels listed per contender")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {','.join(PARTS)}")
    return args


# ------------------------------------------------------------------------------------------------ timing helpers


class Clock:
    """Wall-clock seconds of a call, synchronising the device before and after so queued work is counted."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - start, out

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**30


def _fmt(value: float | None, spec: str = ".3f", none: str = "n/a") -> str:
    return none if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


# ------------------------------------------------------------------------------------------------ parts


def measure_matmul(clock: Clock, n: int) -> dict[str, Any]:
    """bf16 n×n×n matrix-product TFLOP/s: mean of 10 products after 3 warm-ups."""
    g = torch.Generator(clock.device).manual_seed(0)
    a = torch.randn(n, n, device=clock.device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=clock.device, dtype=torch.bfloat16, generator=g)
    for _ in range(3):
        a @ b
    seconds, _ = clock.time(lambda: [a @ b for _ in range(10)])
    tflops = 10 * 2 * n**3 / seconds / 1e12
    print(f"\nmatmul: bf16 {n}x{n}x{n}: {tflops:.1f} TFLOP/s (the peak the UNet figures are compared with)")
    return {"n": n, "tflops": tflops}


def count_flops(model: torch.nn.Module, config: dict[str, Any], device: torch.device) -> float:
    """FLOPs of one batch-1 forward (multiply-add = 2), counted by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    size = config["sample_size"]
    x = torch.randn(1, config["in_channels"], size, size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x, torch.tensor([500], device=device))
    flops = float(counter.get_total_flops())
    print(f"flops: {flops / 1e9:.1f} GFLOP per image per step (diffusers' UNet, FlopCounterMode)")
    return flops


def measure_forward(args: argparse.Namespace, clock: Clock, reference: torch.nn.Module, config: dict[str, Any],
                    flops: float | None, peak: float | None) -> list[dict[str, Any]]:  # fmt: skip
    """Median forward times per dtype and batch size, interleaved across contenders."""
    device, rows = clock.device, []
    size = config["sample_size"]
    t = torch.tensor([500], device=device)
    for name in args.dtypes.split(","):
        dtype = DTYPES[name.strip()]
        ours = UNet2DModel.from_config(config).eval()
        ours.load_state_dict(reference.state_dict())
        ours.to(device, dtype)
        contenders: dict[str, Callable[[torch.Tensor], Any]] = {}
        theirs = copy.deepcopy(reference).to(device, dtype)
        contenders["diffusers"] = lambda x, m=theirs: m(x, t).sample
        if args.diffusers_compiled and name == "fp16":
            compiled = _diffusers_best_practice(copy.deepcopy(reference), device)

            def run_compiled(x: torch.Tensor, m: torch.nn.Module = compiled) -> torch.Tensor:
                with _tf32():  # NCHW input, as diffusers' pipeline passes it; copy out of inductor's graph memory
                    return m(x, t).sample.clone()

            contenders["diffusers compiled"] = run_compiled
        contenders["ddpm"] = lambda x, m=ours: m(x, t).sample
        if args.compare_layouts:
            other, label = _other_layout(device)
            flipped = copy.deepcopy(ours).to(memory_format=other)
            contenders[f"ddpm {label}"] = lambda x, m=flipped: m(x.contiguous(memory_format=other), t).sample
        runner = UNetRunner(ours, compile_mode=_compile_mode(args), compile_budget_s=args.compile_budget)
        contenders["ddpm fast"] = lambda x, r=runner: r(x, t)
        for batch in args.batch_sizes:
            x = torch.randn(batch, config["in_channels"], size, size, device=device, dtype=dtype)
            times: dict[str, list[float]] = {k: [] for k in contenders}
            memory: dict[str, float | None] = {}
            first: dict[str, float] = {}
            outputs: dict[str, torch.Tensor] = {}
            with torch.inference_mode():
                for key, fn in list(contenders.items()):
                    clock.reset_peak()
                    try:
                        first[key], _ = clock.time(lambda fn=fn: fn(x))  # compiles / captures for this shape
                        for _ in range(args.warmup):
                            fn(x)
                    except Exception as exc:
                        if key != "diffusers compiled":
                            raise
                        print(f"  {key}: dropped, it failed at batch {batch}: {type(exc).__name__}: {exc}")
                        del contenders[key], times[key]
                        continue
                    memory[key] = clock.peak_gib()
                order = list(contenders)
                for r in range(args.repeats):
                    for key in order if r % 2 == 0 else reversed(order):
                        seconds, outputs[key] = clock.time(lambda fn=contenders[key]: fn(x))
                        times[key].append(seconds)
            base = statistics.median(times["diffusers"])
            print(f"\nforward {name}, batch {batch} ({args.repeats} interleaved repeats):")
            for key, values in times.items():
                med = statistics.median(values)
                achieved = flops * batch / med / 1e12 if flops else None
                diff = (outputs[key].float() - outputs["diffusers"].float()).abs().max().item()
                row = {
                    "dtype": name, "batch": batch, "contender": key, "median_ms": med * 1e3,
                    "ratio_to_diffusers": med / base, "tflops": achieved,
                    "fraction_of_matmul_peak": achieved / peak if achieved and peak else None,
                    "peak_memory_gib": memory[key], "first_call_s": first[key], "max_abs_diff_to_diffusers": diff,
                    "runs_ms": [v * 1e3 for v in values],
                }  # fmt: skip
                if key == "ddpm fast":
                    row.update(mode=runner.stats.mode, setup_s=runner.stats.setup_s, compile_s=runner.stats.compile_s)
                rows.append(row)
                extra = f"   [{runner.stats.mode}, setup {runner.stats.setup_s:.2f} s]" if key == "ddpm fast" else ""
                print(
                    f"  {key:<19} {med * 1e3:9.2f} ms   ratio {med / base:5.3f}   {_fmt(achieved, '6.3g')} TFLOP/s"
                    f" ({_fmt(row['fraction_of_matmul_peak'], '.0%')} of matmul)   peak {_fmt(memory[key], '.2f')} GiB"
                    f"   first call {first[key]:.2f} s   max|diff| {diff:.1e}{extra}"
                )
        del ours, theirs, contenders, runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def measure_sampling(args: argparse.Namespace, clock: Clock, reference: torch.nn.Module, config: dict[str, Any],
                     scheduler_config: dict[str, Any], kind: str) -> list[dict[str, Any]]:  # fmt: skip
    """Full pipeline calls: diffusers fp32, ddpm fp32, ddpm fast (and diffusers compiled), same seed."""
    import diffusers

    device = clock.device
    if args.fast_dtypes:
        fast_dtypes = [DTYPES[name.strip()] for name in args.fast_dtypes.split(",")]
    else:
        fast_dtypes = [torch.bfloat16, torch.float16] if device.type == "cuda" else [default_fast_dtype(device)]
    d_sched = getattr(diffusers, f"{kind.upper()}Scheduler").from_config(scheduler_config)
    ours_sched_cls = DDPMScheduler if kind == "ddpm" else DDIMScheduler
    d_pipe_cls = diffusers.DDPMPipeline if kind == "ddpm" else diffusers.DDIMPipeline

    def ours_unet() -> UNet2DModel:
        unet = UNet2DModel.from_config(config).eval()
        unet.load_state_dict(reference.state_dict())
        return unet.to(device)

    pipes: dict[str, Any] = {"diffusers fp32": d_pipe_cls(unet=copy.deepcopy(reference).to(device), scheduler=d_sched)}
    if args.diffusers_compiled:
        compiled = _diffusers_best_practice(copy.deepcopy(reference), device)
        pipes["diffusers compiled"] = d_pipe_cls(unet=compiled, scheduler=copy.deepcopy(d_sched))
    pipes["ddpm fp32"] = DDPMPipeline(unet=ours_unet(), scheduler=ours_sched_cls.from_config(scheduler_config))
    for name in args.plain_dtypes.split(",") if args.plain_dtypes else []:
        plain = DDPMPipeline(unet=ours_unet(), scheduler=ours_sched_cls.from_config(scheduler_config))
        pipes[f"ddpm {name.strip()}"] = plain.to(DTYPES[name.strip()])  # UNet and x_t in this dtype (--dtype)
    for fast_dtype in fast_dtypes:
        fast = DDPMPipeline(unet=ours_unet(), scheduler=ours_sched_cls.from_config(scheduler_config))
        pipes[f"ddpm fast {_NAMES[fast_dtype]}"] = fast.enable_fast_sampling(
            fast_dtype, compile=_compile_mode(args) or False, compile_budget_s=args.compile_budget
        )
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)

    steps = args.steps if kind == "ddpm" else args.ddim_steps
    batches = [1] if kind == "ddpm" else args.ddim_batch_sizes
    rows = []
    for batch in batches:
        images: dict[str, torch.Tensor] = {}
        print(f"\n{kind.upper()}-{steps} at batch {batch} (CPU generator seed {args.seed}):")
        for key, pipe in list(pipes.items()):
            tf32 = key == "diffusers compiled"
            try:
                # Warm-up: 2 steps at this batch size (cuDNN choices, CUDA-graph capture, compilation).
                warm_s, _ = clock.time(lambda p=pipe: _call(p, batch, 2, args.seed, tf32=tf32))
                clock.reset_peak()
                seconds, out = clock.time(lambda p=pipe: _call(p, batch, steps, args.seed, tf32=tf32))
            except Exception as exc:
                if key != "diffusers compiled":
                    raise
                print(f"  {key}: dropped, it failed: {type(exc).__name__}: {exc}")
                del pipes[key]
                continue
            images[key] = torch.from_numpy(out)
            is_fast = key.startswith("ddpm fast")
            syncs = _find_syncs(pipe, batch, min(steps, 5), args.seed) if is_fast else None
            row: dict[str, Any] = {
                "kind": kind, "steps": steps, "batch": batch, "contender": key, "seconds": seconds,
                "peak_memory_gib": clock.peak_gib(), "warmup_call_s": warm_s, "syncs_in_loop": syncs,
            }  # fmt: skip
            if is_fast:
                stats = pipe.fast_sampler.stats
                row.update(mode=stats.mode, setup_s=stats.setup_s, compile_s=stats.compile_s,
                           compile_error=stats.compile_error)  # fmt: skip
            rows.append(row)
        reference_images = images["ddpm fp32"]
        for row in rows[-len(pipes) :]:
            candidate = images[row["contender"]]
            difference = compare_images(reference_images, candidate)
            worst = min(compare_images(reference_images[i], candidate[i]).psnr_db for i in range(batch))
            row.update(max_abs_vs_ddpm_fp32=difference.max_abs, psnr_db_vs_ddpm_fp32=difference.psnr_db,
                       worst_image_psnr_db=worst)  # fmt: skip
            extra = ""
            if row["contender"].startswith("ddpm fast"):
                compiled = _fmt(row["compile_s"], ".1f", none="off") + ("" if row["compile_s"] is None else " s")
                extra = f"   [{row['mode']}, setup {row['setup_s']:.2f} s, compile {compiled}"
                extra += f", syncs in loop: {row['syncs_in_loop'] or 'not checked (CPU)'}]"
            print(
                f"  {row['contender']:<19} {row['seconds']:8.2f} s   peak {_fmt(row['peak_memory_gib'], '.2f')} GiB   "
                f"warm-up call {row['warmup_call_s']:.2f} s   vs ddpm fp32: max|diff| {difference.max_abs:.1e}, "
                f"PSNR {_fmt(difference.psnr_db, '.1f')} dB (worst image {_fmt(worst, '.1f')}){extra}"
            )
    return rows


def _other_layout(device: torch.device) -> tuple[torch.memory_format, str]:
    """The layout ddpm's UNet does not use on ``device``, and its name."""
    from ddpm.models.unet_2d import preferred_memory_format

    if preferred_memory_format(device) == torch.channels_last:
        return torch.contiguous_format, "NCHW"
    return torch.channels_last, "NHWC"


def measure_profile(args: argparse.Namespace, clock: Clock, reference: torch.nn.Module,
                    config: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """Top kernels by device time (self CPU time off CUDA) of a few forwards per contender."""
    from torch.profiler import ProfilerActivity, profile

    device = clock.device
    dtype = DTYPES[args.profile_dtype]
    batch = args.profile_batch or (64 if device.type == "cuda" else 2)
    size = config["sample_size"]
    x = torch.randn(batch, config["in_channels"], size, size, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    ours = UNet2DModel.from_config(config).eval()
    ours.load_state_dict(reference.state_dict())
    ours.to(device, dtype)
    other, label = _other_layout(device)
    contenders = {
        "diffusers": copy.deepcopy(reference).to(device, dtype),
        "ddpm": ours,
        f"ddpm {label}": copy.deepcopy(ours).to(memory_format=other),
    }
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    sort_key = "self_device_time_total" if on_cuda else "self_cpu_time_total"
    rows = []
    print(f"\nprofile: {args.profile_dtype}, batch {batch}, {args.profile_repeats} forwards per contender "
          f"(top {args.profile_rows} by {'device' if on_cuda else 'self CPU'} time)")  # fmt: skip
    with torch.inference_mode():
        for key, model in contenders.items():
            inp = x.contiguous(memory_format=other) if key.endswith(label) else x
            for _ in range(2):
                model(inp, t)  # warm-up: cuDNN choices
            clock.sync()
            with profile(activities=activities) as prof:
                for _ in range(args.profile_repeats):
                    model(inp, t)
                clock.sync()
            events = prof.key_averages()
            if on_cuda:  # the kernels themselves: an operator's device time is also its kernels' (no double count)
                events = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            total = sum(getattr(e, sort_key) for e in events) / args.profile_repeats / 1e3  # ms per forward
            top = sorted(events, key=lambda e: getattr(e, sort_key), reverse=True)[: args.profile_rows]
            print(f"\n  {key}: {total:.2f} ms of {'device' if on_cuda else 'self CPU'} time per forward")
            kernels = []
            for e in top:
                ms = getattr(e, sort_key) / args.profile_repeats / 1e3
                calls = e.count // args.profile_repeats
                print(f"    {ms:9.3f} ms  {100 * ms / total if total else 0:5.1f} %  {calls:5d} calls  {e.key[:90]}")
                kernels.append({"name": e.key, "ms_per_forward": ms, "calls_per_forward": calls})
            rows.append({"contender": key, "dtype": args.profile_dtype, "batch": batch, "ms_per_forward": total,
                         "top": kernels})  # fmt: skip
    return rows


def _call(pipe: Any, batch: int, steps: int, seed: int, tf32: bool = False, **kwargs: Any) -> Any:
    generator = torch.Generator("cpu").manual_seed(seed)
    with _tf32() if tf32 else contextlib.nullcontext():
        return pipe(batch_size=batch, generator=generator, num_inference_steps=steps, output_type="np", **kwargs)[0]


def _find_syncs(pipe: Any, batch: int, steps: int, seed: int) -> str | None:
    """Run ``steps`` steps of ddpm's pipeline with every CUDA host synchronisation after step 0 made an error.

    Returns "none", the error, or None off CUDA (where there is nothing to check).
    """
    if pipe.device.type != "cuda":
        return None
    last = steps - 1

    def no_syncs_after_step_0(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> None:
        torch.cuda.set_sync_debug_mode("error" if i < last else "default")

    try:
        _call(pipe, batch, steps, seed, callback_on_step_end=no_syncs_after_step_0)
    except RuntimeError as exc:
        return f"found: {exc}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "none"


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    """TF32 matrix products and convolutions inside the block only (diffusers' speed-guide setting)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _compile_mode(args: argparse.Namespace) -> str | None:
    return None if args.ddpm_compile == "off" else args.ddpm_compile


_COMPILED: dict[str, torch.nn.Module] = {}


def _diffusers_best_practice(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """diffusers' speed-guide setup: fp16, channels_last, torch.compile(mode="reduce-overhead"); callers add TF32.

    Built once per run and shared by the forward and sampling parts, so each batch size compiles only once (the
    first call at each size is reported as its compile time).
    """
    if "diffusers" not in _COMPILED:
        model = model.to(device, torch.float16).to(memory_format=torch.channels_last)
        _COMPILED["diffusers"] = torch.compile(model, mode="reduce-overhead")
    return _COMPILED["diffusers"]


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    clock = Clock(device)
    parts = set(args.parts.split(","))
    import diffusers

    config, scheduler_config = CONFIGS[args.config]
    label = f"{args.config} architecture, random weights"
    if args.model is not None:
        label = f"trained weights from {args.model}"
        trained = UNet2DModel.from_pretrained(args.model, subfolder="unet")
        config = {k: v for k, v in trained.config.to_dict().items() if not k.startswith("_")}
        scheduler_config = DDPMScheduler.from_pretrained(args.model, subfolder="scheduler").config.to_dict()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    env = {
        "device": str(device), "card": card, "torch": torch.__version__, "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(), "config": args.config, "weights": label,
        "argv": sys.argv[1:] if argv is None else argv,
    }  # fmt: skip
    print(f"{card} ({device}); torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{torch.get_num_threads()} CPU threads; {label}")  # fmt: skip
    results: dict[str, Any] = {"env": env}
    start = time.perf_counter()

    if args.model is not None:
        reference = diffusers.UNet2DModel.from_config(config).eval()
        reference.load_state_dict(trained.state_dict())
        reference.to(device)
    else:
        reference = diffusers_unet(config, seed=args.seed).to(device)
    results["parameters"] = sum(p.numel() for p in reference.parameters())
    results["flops_per_image_step"] = flops = count_flops(reference, config, device)
    peak = None
    if "matmul" in parts:
        size = args.matmul_size or (8192 if device.type == "cuda" else 2048)
        results["matmul"] = measure_matmul(clock, size)
        peak = results["matmul"]["tflops"]
    if "forward" in parts:
        results["forward"] = measure_forward(args, clock, reference, config, flops, peak)
    results["sampling"] = []
    for kind in ("ddpm", "ddim"):
        if kind in parts:
            results["sampling"] += measure_sampling(args, clock, reference, config, scheduler_config, kind)
    if "profile" in parts:
        results["profile"] = measure_profile(args, clock, reference, config)
    results["total_s"] = time.perf_counter() - start
    print(f"\ntotal {results['total_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"results in {args.json}")
    return results


if __name__ == "__main__":
    main()
