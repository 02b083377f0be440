"""benchmarks/cpu_forward.py runs with a tiny config and reports every figure it promises."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_forward.py"


def test_cpu_forward_benchmark_reports_peak_forwards_ratios_and_profile(tmp_path, capsys):
    pytest.importorskip("diffusers")
    spec = importlib.util.spec_from_file_location("benchmark_cpu_forward", BENCHMARK)
    assert spec is not None and spec.loader is not None
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "cpu.json"
    results = benchmark.main([
        "--config", "tiny", "--size", "8", "--batch-sizes", "1", "--repeats", "1", "--warmup", "0",
        "--conv-repeats", "1", "--profile", "--profile-rows", "3", "--json", str(out),
    ])  # fmt: skip
    assert json.loads(out.read_text())["size"] == 8
    printed = capsys.readouterr().out
    assert "native bf16: " in printed and "load average" in printed and "threads" in printed
    assert set(results["peak"]) == {"fp32", "bf16"} and min(results["peak"].values()) > 0
    assert results["flops_per_image"] > 0
    rows = {r["contender"]: r for r in results["forward"]}
    assert set(rows) == {"ddpm fp32", "ddpm bf16 fast", "diffusers fp32", "diffusers bf16"}
    assert rows["diffusers fp32"]["ratio_to_diffusers"] == 1.0
    assert rows["ddpm fp32"]["max_abs_diff_to_diffusers_fp32"] < 1e-4  # the same weights in both libraries
    assert all(r["fraction_of_peak"] > 0 for r in rows.values())
    profiled = {p["contender"]: p for p in results["profile"]}
    assert set(profiled) == {"ddpm bf16 fast", "ddpm fp32"}
    assert all(0 < len(p["top"]) <= 3 for p in profiled.values())
