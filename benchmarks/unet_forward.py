"""UNet2DModel forward time, ddpm versus diffusers, on the same weights, interleaved in one process.

Both models get the celebahq-256 architecture (google/ddpm-ema-celebahq-256's config.json) and the same seeded
random weights (diffusers builds them; ddpm loads its state dict). Each repeat times one batch forward of each model,
alternating which goes first, under ``torch.no_grad()``; the script prints per-dtype medians, the ratio
ddpm/diffusers (below 1 means ddpm is faster) and the largest output difference. Process CPU time is printed
beside wall time: on a machine shared with other jobs it is the steadier of the two.

dtypes: ``fp32``, and ``bf16`` = both models converted with ``.to(torch.bfloat16)`` and fed bf16 input (bf16
weights, no autocast). Each library runs as its users get it by default: diffusers in its default (NCHW) layout,
ddpm with its CPU defaults (channels_last). ``--diffusers-channels-last`` adds diffusers with
``.to(memory_format=torch.channels_last)`` as a third contender.

Full size, as quoted in the docs (slow: about 4 s per forward on 2 cores):
    python benchmarks/unet_forward.py --threads 2 --repeats 5
Smoke test:
    python benchmarks/unet_forward.py --size 64 --repeats 2 --dtypes fp32
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")  # diffusers warns about .to(dtype) on every conversion
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddpm.models import UNet2DModel

from helpers import CELEBAHQ_UNET_CONFIG, CIFAR10_UNET_CONFIG, diffusers_unet

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CONFIGS = {"celebahq-256": CELEBAHQ_UNET_CONFIG, "cifar10-32": CIFAR10_UNET_CONFIG}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="celebahq-256", help="architecture")
    parser.add_argument("--size", type=int, default=None, help="image height/width (default: the config's)")
    parser.add_argument("--batch", type=int, default=1, help="batch size")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per model and dtype")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per model and dtype first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--timestep", type=int, default=500, help="the timestep fed to both models")
    parser.add_argument(
        "--diffusers-channels-last", action="store_true", help="also time diffusers converted to channels_last"
    )
    return parser.parse_args(argv)


def time_forward(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """Wall-clock and process CPU seconds of one forward (CPU time is steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = model(x, t).sample
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = CONFIGS[args.config]
    size = args.size or config["sample_size"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config} architecture at "
        f"{args.batch}x3x{size}x{size}; {args.repeats} interleaved repeats after {args.warmup} warm-up"
    )
    reference = diffusers_unet(config, seed=0)
    ours = UNet2DModel.from_config(config).eval()
    ours.load_state_dict(reference.state_dict())

    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(args.batch, 3, size, size, generator=generator)
    timestep = torch.tensor(args.timestep)
    for name in args.dtypes.split(","):
        dtype = DTYPES[name.strip()]
        contenders: dict[str, torch.nn.Module] = {
            "diffusers": reference.to(dtype),
            "ddpm": ours.to(dtype),
        }
        if args.diffusers_channels_last:
            twin = copy.deepcopy(reference)
            contenders["diffusers+channels_last"] = twin.to(dtype, memory_format=torch.channels_last)
        x = sample.to(dtype)
        times: dict[str, list[float]] = {k: [] for k in contenders}
        cpu_times: dict[str, list[float]] = {k: [] for k in contenders}
        outputs: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for _ in range(args.warmup):
                for model in contenders.values():
                    model(x, timestep)
            order = list(contenders)
            for r in range(args.repeats):
                for key in order if r % 2 == 0 else reversed(order):
                    seconds, cpu_seconds, outputs[key] = time_forward(contenders[key], x, timestep)
                    times[key].append(seconds)
                    cpu_times[key].append(cpu_seconds)
        base = statistics.median(times["diffusers"])
        cpu_base = statistics.median(cpu_times["diffusers"])
        print(f"\n{name} ({'bf16 weights and input, no autocast' if name == 'bf16' else name + ' weights and input'}):")
        for key, values in times.items():
            med = statistics.median(values)
            cpu_med = statistics.median(cpu_times[key])
            diff = (outputs[key].float() - outputs["diffusers"].float()).abs().max().item()
            runs = ", ".join(f"{v:.3f}" for v in values)
            print(
                f"  {key:<24} median {med:8.3f} s   ratio to diffusers {med / base:5.3f}   "
                f"(CPU time {cpu_med:7.3f} s, ratio {cpu_med / cpu_base:5.3f})   max|diff| {diff:.1e}   runs [{runs}]"
            )


if __name__ == "__main__":
    main()
