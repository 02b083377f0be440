"""``ddpm sample`` (issues 13/14): default sampler and folder, reruns, --overwrite, bounded arguments, memory and
finiteness checks, progress output; ``ddpm info`` without a model; the tool's exit paths (no command, closed pipe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import ddpm.models.unet_2d as unet_module
from ddpm.cli import EXIT_BROKEN_PIPE, main
from ddpm.commands.sample import MANIFEST_NAME, default_out
from ddpm.memory import LIMIT_ENV
from ddpm.pipelines.batch import is_whole_image, shard_indices

from helpers import write_tiny_repo

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    return write_tiny_repo(tmp_path_factory.mktemp("tiny") / "tiny")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def _sample(repo, *extra: str) -> int:
    return main(["sample", str(repo), "--steps", "5", "--no-progress", *extra])


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def test_readme_flow_a_plain_run_after_an_explicit_out_is_not_refused(tiny_repo, tmp_path, monkeypatch, capsys):
    """README: `ddpm sample --scheduler ddim ... --out samples`, then plain `ddpm sample`: both succeed."""
    monkeypatch.chdir(tmp_path)
    assert main(["sample", str(tiny_repo), "--steps", "2", "--num-images", "2", "--out", "samples"]) == 0
    assert main(["sample", str(tiny_repo), "--steps", "3"]) == 0  # other settings, no --out: its own folder
    assert main(["sample", str(tiny_repo), "--scheduler", "ddpm", "--steps", "3", "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert _pngs(tmp_path / "samples") == ["000000.png", "000001.png"]
    assert _pngs(tmp_path / "samples" / "tiny-dpm++3m-3") == ["000000.png"]
    assert _pngs(tmp_path / "samples" / "tiny-ddpm-3-seed5") == ["000000.png"]
    assert "writing to samples/tiny-dpm++3m-3 (named after the settings" in err


def test_the_default_is_dpm_solver_3m_with_10_steps_and_the_folder_is_named_after_the_settings():
    import argparse

    from ddpm.commands._sampling import default_steps
    from ddpm.commands.sample import add_parser

    parser = argparse.ArgumentParser()
    args = add_parser(parser.add_subparsers()).parse_args([])
    assert args.scheduler == "dpm++3m" and args.steps is None and args.out is None and default_steps("dpm++3m") == 10
    help_text = " ".join(add_parser(argparse.ArgumentParser().add_subparsers()).format_help().split())
    assert "The default sampler is dpm++3m (DPM-Solver++ 3M) with 10 steps" in help_text
    assert "Fréchet distance 1.64, precision 0.77, recall 0.93" in help_text and "3.0 s/image" in help_text
    assert "--threads 1 or 2" in help_text
    base = {"model": "google/ddpm-cifar10-32", "scheduler": "ddim", "steps": 50, "seed": 0, "eta": 0.0}
    assert default_out({**base, "dtype": "fp32", "fast": False}) == Path("samples/ddpm-cifar10-32-ddim-50")
    assert default_out({**base, "seed": 3, "eta": 0.5, "dtype": "bf16", "fast": True}) == Path(
        "samples/ddpm-cifar10-32-ddim-50-seed3-eta0.5-bf16-fast"
    )


def test_other_settings_in_an_explicit_out_offer_overwrite_which_deletes_only_ddpm_files(tiny_repo, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sample(tiny_repo, "--num-images", "3", "--out", str(out)) == 0
    (out / "notes.txt").write_text("mine")
    (out / "photo.png").write_bytes(b"not ours")
    assert _sample(tiny_repo, "--out", str(out), "--seed", "1") == 1
    err = capsys.readouterr().err
    assert "seed: 0 -> 1" in err and "add --overwrite to delete its images and start over, or use another --out" in err
    assert _sample(tiny_repo, "--out", str(out), "--seed", "1", "--overwrite") == 0
    assert "--overwrite: deleted 3 images from" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", MANIFEST_NAME, "notes.txt", "photo.png"]
    assert json.loads((out / MANIFEST_NAME).read_text())["seed"] == 1


def test_a_failed_run_writes_nothing_so_the_corrected_run_starts(tiny_repo, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["sample", str(tmp_path / "no-such-model"), "--out", str(out)]) == 1  # a typo
    monkeypatch.setenv(LIMIT_ENV, "10MiB")  # the model (about 3 MiB) fits, a batch of 64 does not
    assert _sample(tiny_repo, "--out", str(out), "--batch-size", "64", "--num-images", "64") == 1  # too big
    assert "use a smaller --batch-size" in capsys.readouterr().err
    assert _sample(tiny_repo, "--out", str(out), "--steps", "5000") == 1  # more steps than the model has timesteps
    assert "use at most 1000" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps({"model": "x", "seed": 7}))  # a manifest without images mixes nothing
    monkeypatch.delenv(LIMIT_ENV)
    assert _sample(tiny_repo, "--out", str(out), "--scheduler", "ddpm") == 0  # other settings than the typo run


def test_empty_and_truncated_pngs_are_made_again_and_the_grid_works(tiny_repo, tmp_path, capsys):
    out, grid = tmp_path / "out", tmp_path / "grid.png"
    assert _sample(tiny_repo, "--num-images", "3", "--out", str(out)) == 0
    good = (out / "000001.png").read_bytes()
    (out / "000000.png").write_bytes(b"")
    (out / "000001.png").write_bytes(good[: len(good) // 2])
    assert is_whole_image(out / "000001.png", (16, 16)) is False
    assert is_whole_image(out / "000002.png", (16, 16)) is True
    assert is_whole_image(out / "000009.png", (16, 16)) is None
    capsys.readouterr()
    assert _sample(tiny_repo, "--num-images", "3", "--out", str(out), "--grid", str(grid)) == 0
    captured = capsys.readouterr()
    assert "000000.png is empty or truncated" in captured.err and "000001.png is empty or truncated" in captured.err
    assert "(2 new, 1 already there)" in captured.out
    assert (out / "000001.png").read_bytes() == good
    with Image.open(grid) as img:
        assert img.size == (2 * 16, 2 * 16)


def test_a_fifo_named_like_an_image_is_refused_not_waited_on(tiny_repo, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sample(tiny_repo, "--out", str(out)) == 0
    os.mkfifo(out / "000001.png")
    assert _sample(tiny_repo, "--num-images", "2", "--out", str(out)) == 1
    assert "000001.png is a FIFO" in capsys.readouterr().err


def test_non_finite_model_output_stops_the_run_with_the_cause_and_no_png(tiny_repo, tmp_path, capsys, monkeypatch):
    forward = unet_module.UNet2DModel.forward

    def nan_forward(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out[0][0, 0, 0, 0] = float("nan")  # the sample, in both return forms
        return out

    monkeypatch.setattr(unet_module.UNet2DModel, "forward", nan_forward)
    out = tmp_path / "out"
    assert _sample(tiny_repo, "--num-images", "2", "--out", str(out)) == 1
    precision, err = capsys.readouterr().err.split("\n", 1)  # the first line says which precision ran
    assert precision.startswith("ddpm sample: UNet in fp32 (")
    assert err.count("\n") == 1 and "non-finite values (NaN or infinity) for images 000000.png to 000001.png" in err
    assert "no PNG was written" in err and "weights" in err
    assert _pngs(out) == []
    assert _sample(tiny_repo, "--dtype", "fp16", "--device", "cpu", "--out", str(tmp_path / "half")) == 1
    assert "--dtype bf16 or --dtype fp32" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--eta", "nan", "must be a finite number"),
        ("--seed", str(2**64), "must be from 0 to 2**63-1"),
        ("--threads", "100000", "must be from 1 to 1024"),
        ("--num-images", str(10**9), "must be at most 10,000,000"),
        ("--num-images", "1e6", "invalid positive value"),
        ("--grid-size", "100000", "must be at most 1,024"),
        ("--compile-budget", "inf", "positive number of seconds"),
    ],
)
def test_unbounded_or_non_finite_numbers_are_usage_errors(tiny_repo, option, value, says, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", str(tiny_repo), option, value])
    assert info.value.code == 2 and says in capsys.readouterr().err


def test_seeds_past_the_largest_are_refused_before_loading(tiny_repo, tmp_path, capsys):
    assert _sample(tiny_repo, "--seed", str(2**63 - 2), "--num-images", "3", "--out", str(tmp_path / "o")) == 1
    assert "needs seeds up to 9223372036854775808, above 2**63-1; use --seed 9223372036854775805 or less" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()


def test_a_million_images_in_a_million_batch_is_refused_before_any_generator(tiny_repo, tmp_path, capsys, monkeypatch):
    def no_generators(*args, **kwargs):
        raise AssertionError("a generator was made before the memory check")

    monkeypatch.setattr(torch, "Generator", no_generators)
    monkeypatch.setenv(LIMIT_ENV, "1GiB")
    args = ["--num-images", "1000000", "--batch-size", "1000000", "--out", str(tmp_path / "o")]
    assert _sample(tiny_repo, *args) == 1
    err = capsys.readouterr().err
    assert "sampling a batch of 1000000 images of 16x16 needs about" in err and "use a smaller --batch-size" in err


def test_many_images_are_walked_lazily():
    indices = shard_indices(10**12, rank=1, world_size=4)
    assert isinstance(indices, range) and len(indices) == 250_000_000_000 and indices[0] == 1


def test_out_that_is_a_file_or_unwritable_is_a_one_line_error(tiny_repo, tmp_path, capsys, monkeypatch):
    """Unwritable is simulated (the tests run as root, which may write anywhere): os.access says no, then mkdir
    raises PermissionError."""
    (tmp_path / "f.png").write_bytes(b"x")
    assert _sample(tiny_repo, "--out", str(tmp_path / "f.png")) == 1
    assert capsys.readouterr().err.endswith("is a file, not a folder; give a folder (it is created if missing)\n")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    assert _sample(tiny_repo, "--out", str(tmp_path / "ro")) == 1
    assert "is not writable; choose a folder you can write to" in capsys.readouterr().err
    monkeypatch.undo()

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    assert _sample(tiny_repo, "--out", str(tmp_path / "ro")) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write to --out" in err and "Permission denied" in err


def test_few_steps_warn_plurals_are_right_and_progress_is_plain_lines_in_a_log(tiny_repo, tmp_path, capsys):
    assert main(["sample", str(tiny_repo), "--steps", "1", "--num-images", "1", "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "warning: --steps 1 is too few for dpm++3m" in captured.err  # the default sampler
    assert "use --steps 10 (its default) or more" in captured.err
    assert "ddpm sample: 1 image in" in captured.out
    assert "1/1 image made" in captured.err and "\r" not in captured.err and "\x1b[" not in captured.err


def test_info_without_a_model_lists_the_bundled_models_and_schedulers(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "ddpm-mnist  5.5 MB, 2,734,945 parameters  An unconditional DDPM" in text
    assert "samplers (ddpm sample --scheduler NAME; --steps N overrides the default steps):" in text
    assert "  ddim         DDIMScheduler, 50 steps  DDIM (Song et al. 2021)" in text


def test_no_command_prints_the_help_with_status_2(capsys):
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: ddpm")


def test_a_closed_pipe_ends_quietly():
    """`ddpm info | head -0`: the reader is gone before anything is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ddpm", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert err == ""
