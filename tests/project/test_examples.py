"""Every file in examples/ runs on a tiny model (made here) and produces what it promises."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import write_tiny_repo

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    return write_tiny_repo(tmp_path_factory.mktemp("tiny"))


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    result = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _run_example(name: str, args: list[str], cwd: Path, monkeypatch, capsys) -> str:
    """Run examples/<name> in this process (no new interpreter and torch import) as ``python <name> <args>``."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_every_example_has_a_test():
    tested = {"model_card.py", "swap_scheduler.py", "manual_loop.py", "quick_start.py", "cli_usage.sh"}
    assert {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")} == tested


def test_quick_start_builds_a_tiny_unet_and_saves_a_png(tmp_path):
    # As the README runs it: a fresh interpreter, no arguments.
    result = _run([sys.executable, str(EXAMPLES / "quick_start.py")], tmp_path)
    with Image.open(tmp_path / "quick_start.png") as img:
        assert img.size == (32, 32) and img.mode == "RGB" and np.asarray(img).std() > 1
    assert "quick_start.png" in result.stdout


def test_quick_start_accepts_a_model(tiny_repo, tmp_path, monkeypatch, capsys):
    _run_example("quick_start.py", ["--model", str(tiny_repo), "--steps", "2"], tmp_path, monkeypatch, capsys)
    assert Image.open(tmp_path / "quick_start.png").size == (16, 16)


def test_model_card_example_runs_the_snippet_on_the_model_from_the_environment(
    tiny_repo, tmp_path, monkeypatch, capsys
):
    from ddpm import DDPMPipeline

    monkeypatch.setenv("DDPM_MODEL", str(tiny_repo))
    monkeypatch.setattr(DDPMPipeline, "default_num_inference_steps", 5)  # the snippet's ddpm() runs 1000 otherwise
    _run_example("model_card.py", [], tmp_path, monkeypatch, capsys)
    assert Image.open(tmp_path / "ddpm_generated_image.png").size == (16, 16)


def test_swap_scheduler_example_saves_three_images_side_by_side(tiny_repo, tmp_path, monkeypatch, capsys):
    out = _run_example(
        "swap_scheduler.py",
        ["--model", str(tiny_repo), "--ddpm-steps", "4", "--steps", "4", "--out", "s.png"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert Image.open(tmp_path / "s.png").size == (3 * 16, 16)
    assert all(name in out for name in ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler"))


def test_manual_loop_example_matches_the_pipeline(tiny_repo, tmp_path, monkeypatch, capsys):
    out = _run_example(
        "manual_loop.py", ["--model", str(tiny_repo), "--steps", "4", "--out", "m.png"], tmp_path, monkeypatch, capsys
    )
    assert Image.open(tmp_path / "m.png").size == (16, 16)
    assert "max difference from DDIMPipeline with the same seed: 0.00e+00" in out


def test_cli_usage_script_runs(tiny_repo, tmp_path):
    _run(
        ["bash", str(EXAMPLES / "cli_usage.sh"), str(tiny_repo), str(tmp_path / "demo")],
        tmp_path,
        DDPM_CLI=f"{sys.executable} -m ddpm",
        DDPM_STEPS="4",
    )  # PNDM needs 4
    assert sorted(p.name for p in (tmp_path / "demo" / "ddim").glob("*.png")) == [f"{i:06d}.png" for i in range(12)]
    assert (tmp_path / "demo" / "ddim-grid.png").is_file()
    assert len(list((tmp_path / "demo" / "pndm-bf16").glob("*.png"))) == 4
