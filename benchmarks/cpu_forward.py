"""The CPU UNet forward against the machine's own convolution peak, ddpm and diffusers, fp32 and bf16, one process.

What one run prints (issue 17's measurement; docs/performance.md, "CPU"):

1. **machine**: CPU model, whether it has native bf16 (AVX512-BF16 / AMX, ``ddpm.fast.cpu_supports_bf16`` and the
   ``/proc/cpuinfo`` flags), torch's thread count and the load average (also at the end: a load that moved during
   the run makes its figures suspect).
2. **peak**: GFLOP/s of a lone 3×3 convolution (C→C, channels_last, bias, the oneDNN kernel the UNet uses) at the
   UNet's main shapes: each resolution level's width at that level's size, at every batch size, in fp32 and bf16.
   The best of each dtype is "the peak" the forwards are compared with.
3. **forward**: per batch size, interleaved repeats (the order alternates) of ddpm fp32 (eager, its CPU layout),
   ddpm bf16 fast path (what ``enable_fast_sampling(torch.bfloat16)`` runs on the CPU: fp32 sample in, bf16 UNet,
   fp32 out), diffusers fp32 and diffusers bf16 (``.to(torch.bfloat16)``, bf16 input, its default NCHW layout), all
   on the same seeded random weights. Medians in seconds, GFLOP/s from the UNet's FLOPs counted once
   (``torch.utils.flop_counter``), the fraction of the same dtype's conv peak, the ratio to diffusers in the same
   dtype (below 1: ddpm is faster) and the largest difference from diffusers fp32.
4. ``--profile``: ``torch.profiler``'s top operators by self CPU time of the bf16 fast path (and of ddpm fp32) at the
   first batch size, i.e. where the time goes.

On a CPU without native bf16 (AMD EPYC here) PyTorch emulates bf16: those figures are printed but say nothing about
a bf16 machine. The full measurement, for a Xeon with AMX (a few minutes on a quiet machine)::

    python benchmarks/cpu_forward.py --profile --json cpu_forward.json

Small (a few minutes on a busy 2-core CPU without bf16)::

    python benchmarks/cpu_forward.py --size 64 --repeats 3 --profile
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddpm.fast import UNetRunner, cpu_supports_bf16
from ddpm.models import UNet2DModel

from helpers import CELEBAHQ_UNET_CONFIG, CIFAR10_UNET_CONFIG, TINY_UNET_CONFIG, diffusers_unet

CONFIGS = {"celebahq-256": CELEBAHQ_UNET_CONFIG, "cifar10-32": CIFAR10_UNET_CONFIG, "tiny": TINY_UNET_CONFIG}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: The contenders, with the dtype whose peak and whose diffusers time they are compared with.
CONTENDERS = {"ddpm fp32": "fp32", "ddpm bf16 fast": "bf16", "diffusers fp32": "fp32", "diffusers bf16": "bf16"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="celebahq-256", help="architecture")
    parser.add_argument("--size", type=int, default=None, help="image height/width (default: the config's)")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 4], help="comma-separated (default: 1,4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per contender and batch")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per contender and batch first")
    parser.add_argument("--conv-repeats", type=int, default=5, help="timed convolutions per peak shape")
    parser.add_argument("--dtypes", default="fp32,bf16", help="which precisions to run (default: fp32,bf16; fp32 alone "
                        "on a CPU without native bf16 saves the slow emulated bf16 runs)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also profile the bf16 fast path and ddpm fp32")
    parser.add_argument("--profile-rows", type=int, default=15, help="operators listed per profile")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ the machine


def machine() -> dict[str, Any]:
    """CPU model, native bf16 (ddpm's check and the kernel's flags), threads, load average, torch version."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model,
        "native_bf16": cpu_supports_bf16(),
        "bf16_flags": [f for f in BF16_FLAGS if f in flags],
        "threads": torch.get_num_threads(),
        "load_average": _load(),
        "torch": torch.__version__,
    }


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ the conv peak


def level_shapes(config: dict[str, Any], size: int) -> list[tuple[int, int]]:
    """(channels, height) of each resolution level: the shapes of the UNet's 3×3 convolutions."""
    shapes = []
    for level, channels in enumerate(config["block_out_channels"]):
        shapes.append((channels, max(1, size >> level)))
    return list(dict.fromkeys(shapes))


def _median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_peak(shapes: list[tuple[int, int]], batches: list[int], repeats: int,
                 dtypes: dict[str, torch.dtype]) -> list[dict[str, Any]]:  # fmt: skip
    """GFLOP/s of a 3×3, C→C, padding-1 convolution with bias in channels_last per shape, batch and dtype."""
    rows = []
    print("\npeak: 3x3 convolution C->C, channels_last, GFLOP/s (median of", repeats, "runs)")
    print(f"  {'shape':<22}" + "".join(f"{name:>10}" for name in dtypes))
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in batches:
            for channels, height in shapes:
                cells = []
                for name, dtype in dtypes.items():
                    x = torch.randn(batch, channels, height, height, generator=g).to(dtype)
                    x = x.contiguous(memory_format=torch.channels_last)
                    w = (torch.randn(channels, channels, 3, 3, generator=g) / (3 * channels**0.5)).to(dtype)
                    w = w.contiguous(memory_format=torch.channels_last)
                    b = torch.zeros(channels, dtype=dtype)
                    seconds = _median_seconds(lambda: F.conv2d(x, w, b, padding=1), repeats)
                    gflops = 2 * batch * channels * channels * 9 * height * height / seconds / 1e9
                    rows.append({"dtype": name, "batch": batch, "channels": channels, "size": height,
                                 "seconds": seconds, "gflops": gflops})  # fmt: skip
                    cells.append(f"{gflops:10.1f}")
                print(f"  {f'{batch}x{channels}x{height}x{height}':<22}" + "".join(cells))
    for name in dtypes:
        best = max((r for r in rows if r["dtype"] == name), key=lambda r: r["gflops"])
        print(f"  {name} peak: {best['gflops']:.1f} GFLOP/s at {best['batch']}x{best['channels']}x{best['size']}^2")
    return rows


# ------------------------------------------------------------------------------------------------ the forwards


def count_flops(model: torch.nn.Module, channels: int, size: int) -> float:
    """FLOPs of one batch-1 forward (multiply-add = 2), counted once by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.randn(1, channels, size, size), torch.tensor([500]))
    return float(counter.get_total_flops())


def build_contenders(config: dict[str, Any], dtypes: list[str]) -> dict[str, Callable[..., torch.Tensor]]:
    """The four forwards on the same seeded random weights; each takes an fp32 sample and returns fp32."""
    reference = diffusers_unet(config, seed=0).eval()
    ours = UNet2DModel.from_config(config).eval()
    ours.load_state_dict(reference.state_dict())
    fast = UNetRunner(copy.deepcopy(ours).to(torch.bfloat16))  # eager on the CPU, with the fast path's casts
    reference_bf16 = copy.deepcopy(reference).to(torch.bfloat16)
    calls: dict[str, Callable[..., torch.Tensor]] = {
        "ddpm fp32": lambda x, t: ours(x, t).sample,
        "ddpm bf16 fast": fast,
        "diffusers fp32": lambda x, t: reference(x, t).sample,
        "diffusers bf16": lambda x, t: reference_bf16(x.to(torch.bfloat16), t).sample.float(),
    }
    return {key: call for key, call in calls.items() if CONTENDERS[key] in dtypes}


def measure_forwards(contenders: dict[str, Callable[..., torch.Tensor]], args: argparse.Namespace, channels: int,
                     size: int, flops: float, peaks: dict[str, float]) -> list[dict[str, Any]]:  # fmt: skip
    """Median forward seconds per contender and batch size, interleaved, against the peak and diffusers."""
    rows = []
    t = torch.tensor([500])
    for batch in args.batch_sizes:
        x = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(batch))
        times: dict[str, list[float]] = {k: [] for k in contenders}
        outputs: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for _ in range(args.warmup):
                for call in contenders.values():
                    call(x, t)
            order = list(contenders)
            for r in range(args.repeats):
                for key in order if r % 2 == 0 else reversed(order):
                    start = time.perf_counter()
                    outputs[key] = contenders[key](x, t)
                    times[key].append(time.perf_counter() - start)
        print(f"\nforward, batch {batch} ({batch * flops / 1e9:.1f} GFLOP), load average {_load()}:")
        print(f"  {'contender':<16}{'median s':>10}{'GFLOP/s':>10}{'of peak':>9}{'/ diffusers':>13}{'max|diff|':>11}")
        for key, dtype in CONTENDERS.items():
            if key not in contenders:
                continue
            med = statistics.median(times[key])
            gflops = batch * flops / med / 1e9
            ratio = med / statistics.median(times[f"diffusers {dtype}"])
            base = outputs.get("diffusers fp32", outputs[f"diffusers {dtype}"])
            diff = (outputs[key] - base).abs().max().item()
            print(f"  {key:<16}{med:10.3f}{gflops:10.1f}{gflops / peaks[dtype]:9.1%}{ratio:13.3f}{diff:11.1e}")
            rows.append({"contender": key, "dtype": dtype, "batch": batch, "median_s": med, "gflops": gflops,
                         "fraction_of_peak": gflops / peaks[dtype], "ratio_to_diffusers": ratio,
                         "max_abs_diff_to_diffusers_fp32": diff, "runs_s": times[key]})  # fmt: skip
    return rows


def profile(contenders: dict[str, Callable[..., torch.Tensor]], channels: int, size: int, batch: int,
            rows: int) -> list[dict[str, Any]]:  # fmt: skip
    """Top operators by self CPU time of one forward of the bf16 fast path and of ddpm fp32."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x, t, results = torch.randn(batch, channels, size, size), torch.tensor([500]), []
    for key in ("ddpm bf16 fast", "ddpm fp32"):
        if key not in contenders:
            continue
        call = contenders[key]
        with torch.no_grad():
            call(x, t)
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                call(x, t)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        print(f"\nprofile: {key}, batch {batch}: {total:.1f} ms of self CPU time (top {rows} operators)")
        top = []
        for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]:
            ms = e.self_cpu_time_total / 1e3
            print(f"  {ms:10.2f} ms {100 * ms / total if total else 0:6.1f} % {e.count:6d} calls  {e.key[:80]}")
            top.append({"name": e.key, "self_ms": ms, "calls": e.count})
        results.append({"contender": key, "batch": batch, "self_ms": total, "top": top})
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = {**CONFIGS[args.config]}
    size = args.size or config["sample_size"]
    config["sample_size"] = size
    info = machine()
    print(f"machine: {info['cpu']}; native bf16: {'yes' if info['native_bf16'] else 'no'} "
          f"(flags: {', '.join(info['bf16_flags']) or 'none'}); torch {info['torch']}, {info['threads']} threads; "
          f"load average {info['load_average']}")  # fmt: skip
    if not info["native_bf16"]:
        print("  (no native bf16: bf16 runs by conversion here; its figures say nothing about a bf16 CPU)")
    print(f"model: {args.config} architecture at {size}x{size}, random weights; batches {args.batch_sizes}; "
          f"{args.repeats} interleaved repeats after {args.warmup} warm-up")  # fmt: skip
    dtypes = {name: DTYPES[name] for name in args.dtypes.split(",")}
    conv = measure_peak(level_shapes(config, size), args.batch_sizes, args.conv_repeats, dtypes)
    peaks = {name: max(r["gflops"] for r in conv if r["dtype"] == name) for name in dtypes}
    contenders = build_contenders(config, list(dtypes))
    ours_fp32 = UNet2DModel.from_config(config).eval()
    flops = count_flops(ours_fp32, config["in_channels"], size)
    del ours_fp32
    print(f"\nflops: {flops / 1e9:.2f} GFLOP per image per forward (FlopCounterMode)")
    forward = measure_forwards(contenders, args, config["in_channels"], size, flops, peaks)
    profiles = (
        profile(contenders, config["in_channels"], size, args.batch_sizes[0], args.profile_rows) if args.profile else []
    )
    results = {"machine": info, "config": args.config, "size": size, "flops_per_image": flops, "peak": peaks,
               "conv": conv, "forward": forward, "profile": profiles, "load_average_end": _load()}  # fmt: skip
    print(f"\nload average at the end: {results['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
