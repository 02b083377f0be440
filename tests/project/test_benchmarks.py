"""benchmarks/gpu_sampling.py runs on CPU with small settings and reports every part it promises."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_sampling_profiles_and_compares_layouts_on_cpu():
    pytest.importorskip("diffusers")
    benchmark = _load("gpu_sampling")
    results = benchmark.main([
        "--device", "cpu", "--config", "tiny", "--batch-sizes", "1", "--dtypes", "fp32", "--repeats", "1",
        "--warmup", "0", "--parts", "forward,profile", "--compare-layouts", "--profile-repeats", "1",
        "--profile-rows", "4",
    ])  # fmt: skip
    forward = {r["contender"]: r for r in results["forward"]}
    assert set(forward) == {"diffusers", "ddpm", "ddpm NCHW", "ddpm fast"}  # NCHW: the layout the CPU does not use
    assert forward["ddpm NCHW"]["max_abs_diff_to_diffusers"] < 1e-4
    profiled = {r["contender"]: r for r in results["profile"]}
    assert set(profiled) == {"diffusers", "ddpm", "ddpm NCHW"}
    for row in profiled.values():
        assert row["ms_per_forward"] > 0 and 0 < len(row["top"]) <= 4
        assert any("conv" in kernel["name"] for kernel in row["top"])  # convolutions dominate a UNet


def test_gpu_sampling_benchmark_runs_on_cpu_with_small_settings(tmp_path):
    pytest.importorskip("diffusers")
    benchmark = _load("gpu_sampling")
    out = tmp_path / "results.json"
    results = benchmark.main([
        "--device", "cpu", "--config", "tiny", "--batch-sizes", "1,2", "--steps", "3", "--ddim-steps", "2",
        "--ddim-batch-sizes", "1,2", "--dtypes", "fp32,bf16", "--repeats", "2", "--warmup", "1",
        "--matmul-size", "128", "--fast-dtypes", "bf16,fp32", "--json", str(out),
    ])  # fmt: skip
    assert json.loads(out.read_text())["env"]["config"] == "tiny"
    assert results["matmul"]["tflops"] > 0 and results["flops_per_image_step"] > 0
    forward = {(r["dtype"], r["batch"], r["contender"]): r for r in results["forward"]}
    forward_contenders = ("diffusers", "ddpm", "ddpm fast")
    assert set(forward) == {(d, b, c) for d in ("fp32", "bf16") for b in (1, 2) for c in forward_contenders}
    for row in forward.values():
        assert row["median_ms"] > 0 and row["tflops"] > 0 and row["peak_memory_gib"] is None  # no CUDA memory on CPU
    assert forward[("fp32", 2, "ddpm")]["max_abs_diff_to_diffusers"] < 1e-4  # the same weights in both libraries
    runs = {(r["kind"], r["batch"], r["contender"]): r for r in results["sampling"]}
    expected_runs = [("ddpm", 1), ("ddim", 1), ("ddim", 2)]
    sampling_contenders = ("diffusers fp32", "ddpm fp32", "ddpm fast bf16", "ddpm fast fp32")
    assert set(runs) == {(k, b, c) for k, b in expected_runs for c in sampling_contenders}
    for kind, batch in expected_runs:
        assert runs[(kind, batch, "ddpm fp32")]["psnr_db_vs_ddpm_fp32"] == math.inf
        assert runs[(kind, batch, "diffusers fp32")]["psnr_db_vs_ddpm_fp32"] > 80  # same noise, same images
        assert runs[(kind, batch, "ddpm fast fp32")]["psnr_db_vs_ddpm_fp32"] > 80  # the fast path's casts only
        fast = runs[(kind, batch, "ddpm fast bf16")]
        assert fast["psnr_db_vs_ddpm_fp32"] >= 35 and fast["mode"] == "eager" and fast["syncs_in_loop"] is None
