"""`ddpm sample`'s precision on the CPU: the bf16 fast path by default where the processor has native bf16, fp32
elsewhere, explicit options winning, the line that says which precision ran, the folder names and manifests, and
folders made before this default resuming as they started. The processor is simulated by patching
``ddpm.fast.cpu_supports_bf16`` (this project's CI CPU has no native bf16)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import ddpm.fast
from ddpm.commands._sampling import DEFAULT_SCHEDULER, add_sampler_options, resolve_precision
from ddpm.commands.sample import MANIFEST_NAME

from helpers import write_tiny_repo

BF16_LINE = "ddpm sample: UNet in bf16 (fast path: this CPU has native bf16; --dtype fp32 for full precision)"
FP32_LINE = "ddpm sample: UNet in fp32 (this CPU has no native bf16)"


def _precision(argv: list[str], device: str = "cpu", recorded: dict | None = None):
    parser = argparse.ArgumentParser()
    add_sampler_options(parser)
    return resolve_precision(parser.parse_args(argv), torch.device(device), recorded)


@pytest.mark.parametrize(
    ("native", "argv", "dtype", "fast", "reason"),
    [
        (True, [], "bf16", True, "fast path: this CPU has native bf16; --dtype fp32 for full precision"),
        (False, [], "fp32", False, "this CPU has no native bf16"),
        (True, ["--dtype", "fp32"], "fp32", False, "--dtype fp32"),
        (True, ["--dtype", "float32"], "fp32", False, "--dtype fp32"),  # torch's name is accepted too
        (True, ["--dtype", "bfloat16"], "bf16", False, "--dtype bf16"),  # explicit dtype: the plain loop, as before
        (True, ["--no-fast"], "fp32", False, "--no-fast"),
        (True, ["--no-fast", "--dtype", "bf16"], "bf16", False, "--no-fast --dtype bf16"),
        (True, ["--fast", "--dtype", "fp32"], "fp32", True, "fast path: --fast"),
        (False, ["--fast"], "fp32", True, "fast path: --fast"),  # the fast dtype of a CPU without bf16
        (True, ["--fast"], "bf16", True, "fast path: --fast"),
    ],
)
def test_the_cpu_precision_follows_the_processor_unless_an_option_says(monkeypatch, native, argv, dtype, fast, reason):
    monkeypatch.setattr(ddpm.fast, "cpu_supports_bf16", lambda: native)
    precision = _precision(argv)
    assert (precision.dtype, precision.fast, precision.reason) == (dtype, fast, reason)


def test_cuda_keeps_fp32_and_a_resumed_folder_keeps_its_precision(monkeypatch):
    monkeypatch.setattr(ddpm.fast, "cpu_supports_bf16", lambda: True)
    cuda = _precision([], device="cuda")
    assert (cuda.dtype, cuda.fast, cuda.reason) == ("fp32", False, "the default on cuda; --fast for half precision")
    old = _precision([], recorded={"dtype": "fp32", "fast": False})
    assert (old.dtype, old.fast) == ("fp32", False)
    assert old.describe() == "UNet in fp32 (as the images already in the folder; --dtype or --fast to choose)"
    assert _precision(["--dtype", "bf16"], recorded={"dtype": "fp32", "fast": False}).dtype == "bf16"  # options win
    assert _precision([], recorded={"dtype": "bf16", "fast": True}).reason.startswith("fast path: this CPU")
    monkeypatch.setattr(ddpm.fast, "cpu_supports_bf16", lambda: False)
    assert _precision([], recorded={"dtype": "fp32", "fast": False}).reason == "this CPU has no native bf16"
    fast_folder = _precision([], recorded={"dtype": "fp32", "fast": True})  # a --fast folder: refused, not adopted
    assert (fast_folder.dtype, fast_folder.fast) == ("fp32", False)


def test_fast_and_no_fast_together_are_refused():
    with pytest.raises(ValueError, match="--fast and --no-fast contradict each other"):
        _precision(["--fast", "--no-fast"])


def _sample(repo, *extra: str) -> int:
    from ddpm.cli import main

    return main(["sample", str(repo), "--steps", "1", "--num-images", "1", "--no-progress", "--device", "cpu", *extra])


def _manifest(folder) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def test_sample_on_a_bf16_cpu_runs_the_fast_path_names_its_folder_and_says_so(monkeypatch, tmp_path, capsys):
    repo = write_tiny_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ddpm.fast, "cpu_supports_bf16", lambda: True)
    assert _sample(repo) == 0
    assert BF16_LINE in capsys.readouterr().err.splitlines()
    fast_out = tmp_path / "samples" / f"repo-{DEFAULT_SCHEDULER}-1-bf16-fast"
    assert {k: _manifest(fast_out)[k] for k in ("dtype", "fast")} == {"dtype": "bf16", "fast": True}
    assert _sample(repo, "--dtype", "float32", "--out", str(tmp_path / "full")) == 0  # full precision wins
    assert "ddpm sample: UNet in fp32 (--dtype fp32)" in capsys.readouterr().err.splitlines()
    assert {k: _manifest(tmp_path / "full")[k] for k in ("dtype", "fast")} == {"dtype": "fp32", "fast": False}


def test_a_folder_made_before_the_bf16_default_resumes_in_fp32(monkeypatch, tmp_path, capsys):
    repo = write_tiny_repo(tmp_path / "repo")
    out = tmp_path / "out"
    monkeypatch.setattr(ddpm.fast, "cpu_supports_bf16", lambda: False)  # the folder made in fp32 (the old default)
    assert _sample(repo, "--out", str(out)) == 0
    assert FP32_LINE in capsys.readouterr().err.splitlines()
    manifest = _manifest(out)
    del manifest["fast"]  # as written before the fast flag existed
    (out / MANIFEST_NAME).write_text(json.dumps(manifest))
    monkeypatch.setattr(ddpm.fast, "cpu_supports_bf16", lambda: True)
    for extra in ([], ["--dtype", "fp32"], ["--no-fast"]):  # the same settings, given or not: not refused
        assert _sample(repo, "--out", str(out), "--num-images", "2", *extra) == 0
        err = capsys.readouterr().err
        assert "ddpm sample: UNet in fp32 (" in err and "error" not in err
    assert _manifest(out)["dtype"] == "fp32" and (out / "000001.png").is_file()
    assert _sample(repo, "--out", str(out), "--fast") == 1  # an explicit change is still refused
    assert "fast: False -> True" in capsys.readouterr().err
