"""Every file in examples/ runs with no arguments, offline, on the bundled model, and on a tiny model (made here)
with its options; each produces what it promises."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from collections.abc import Callable
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


#: What each example promises when run with no arguments, offline, on the bundled model: (command, check).
NO_ARGUMENTS: dict[str, tuple[list[str], Callable[[Path, str], None]]] = {}


def _png(path: Path, size: tuple[int, int]) -> None:
    with Image.open(path) as img:
        assert img.size == size and np.asarray(img).std() > 1, (img.size, path)  # an image, not a flat field


def _no_arguments(name: str, check: Callable[[Path, str], None]) -> None:
    command = ["bash", str(EXAMPLES / name)] if name.endswith(".sh") else ["python", str(EXAMPLES / name)]
    NO_ARGUMENTS[name] = (command, check)


_no_arguments("quick_start.py", lambda cwd, out: _png(cwd / "quick_start.png", (32, 32)))
_no_arguments("manual_loop.py", lambda cwd, out: _png(cwd / "manual.png", (32, 32)))
_no_arguments("model_card.py", lambda cwd, out: _png(cwd / "ddpm_generated_image.png", (32, 32)))
_no_arguments("swap_scheduler.py", lambda cwd, out: _png(cwd / "schedulers.png", (3 * 32, 32)))
_no_arguments(
    "cli_usage.sh",
    lambda cwd, out: _png(cwd / "cli-demo" / "ddim-grid.png", (3 * 32, 3 * 32)),  # 8 images on a 3x3 grid
)
#: A minute or two each on a busy 2-core CPU: 1000 DDPM steps, or 16 images in three runs of the CLI (PNDM in bf16).
SLOW = {"model_card.py", "swap_scheduler.py", "cli_usage.sh"}
#: The bound for one example with no arguments on 2 shared CPU cores (the slow ones took 85-105 s at load 4).
EXAMPLE_TIMEOUT_S = 300


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in sorted(NO_ARGUMENTS)]
)
def test_example_runs_offline_with_no_arguments(name: str, tmp_path: Path, blocked_network_env: dict[str, str]):
    """As a newcomer runs it (``python examples/<name>``, ``ddpm`` from PATH), the network blocked and the HF cache
    empty: it uses the bundled ddpm-mnist and never the Hub."""
    command, check = NO_ARGUMENTS[name]
    result = subprocess.run(
        command, cwd=tmp_path, env=blocked_network_env, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check(tmp_path, result.stdout)


def test_every_example_runs_with_no_arguments():
    assert set(NO_ARGUMENTS) == {p.name for p in EXAMPLES.iterdir() if p.suffix in (".py", ".sh")}


@pytest.mark.parametrize("name", sorted(NO_ARGUMENTS))
def test_example_says_how_to_use_a_hub_model(name: str, tmp_path: Path, monkeypatch, capsys):
    """The docstring (or the script's header) and ``--help`` name the bundled default and how to use a Hub model."""
    text = (EXAMPLES / name).read_text()
    if name.endswith(".sh"):
        header = text[: text.index("set -euo")]
        help_text = _run(["bash", str(EXAMPLES / name), "--help"], tmp_path).stdout
    else:
        header = text[: text.index('"""', 3)]
        with pytest.raises(SystemExit) as exit_:
            _run_example(name, ["--help"], tmp_path, monkeypatch, capsys)
        assert exit_.value.code in (0, None)
        help_text = capsys.readouterr().out
    for said in (header, help_text):
        assert "ddpm-mnist" in said and "google/ddpm-" in said, said


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
    assert len(list((tmp_path / "demo" / "pndm-fast").glob("*.png"))) == 4
