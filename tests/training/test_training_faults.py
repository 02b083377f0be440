"""Issues 13/14: run folders, faults in the middle of training, Ctrl-C, short runs and the options' bounds.

Disk full and permission denied are simulated by fault injection (``torch.save`` or ``Path.mkdir`` raising the
``OSError`` the kernel gives), which works as root too (these tests run as root, where ``chmod 000`` stops nothing).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from ddpm.cli import main
from ddpm.training import TrainingConfig, TrainingError, TrainingInterrupted, learning_rate_at
from ddpm.training.trainer import CHECKPOINT_NAME, LOG_NAME

from bad_inputs import train_png_header
from helpers import tiny_trainer

SRC = Path(__file__).resolve().parents[2] / "src"
TESTS = Path(__file__).resolve().parents[1]
#: The smallest new model `ddpm train` builds, on 8x8 images (see test_training_cli.py).
TINY = ["--resolution", "8", "--channels", "8,16", "--norm-groups", "4", "--precision", "fp32", "--batch-size", "4"]
QUIET = ["--no-progress", "--sample-every", "0", "--num-samples", "4", "--sample-steps", "2", "--log-every", "1"]


def _images(folder: Path, n: int = 6) -> Path:
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        Image.fromarray(torch.randint(0, 256, (8, 8, 3), dtype=torch.uint8, generator=g).numpy()).save(
            folder / f"{i}.png"
        )
    return folder


def _train(*argv: str) -> int:
    return main(["train", *argv])


def _steps_in_log(folder: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (folder / LOG_NAME).read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- log.jsonl


def test_a_torn_last_log_line_is_dropped_on_resume(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tiny_trainer(tmp_path, max_steps=4).train(until_step=2)
    with open(tmp_path / LOG_NAME, "a") as f:
        f.write('{"step": 3, "loss": 0.1')  # killed mid-append
    with caplog.at_level(logging.WARNING, logger="ddpm.training.trainer"):
        tiny_trainer(tmp_path, max_steps=4).train(resume=True)
    assert _steps_in_log(tmp_path) == [1, 2, 3, 4]
    assert [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()] == [
        f"{tmp_path / LOG_NAME}: dropped its last line, cut short when the run was stopped"
    ]


def test_a_damaged_log_line_before_the_last_is_an_error_naming_the_line(tmp_path: Path) -> None:
    tiny_trainer(tmp_path, max_steps=4).train(until_step=2)
    lines = (tmp_path / LOG_NAME).read_text().splitlines(keepends=True)
    (tmp_path / LOG_NAME).write_text("garbage\n" + "".join(lines[1:]))
    with pytest.raises(TrainingError, match=rf"{tmp_path / LOG_NAME}, line 1: not a log record"):
        tiny_trainer(tmp_path, max_steps=4).train(resume=True)


# ---------------------------------------------------------------------------------------------- disk full


@pytest.mark.parametrize(
    "failure",
    [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("[enforce fail] unexpected pos 704 vs 598")],
    ids=["enospc", "torch-unexpected-pos"],
)
def test_disk_full_while_writing_the_checkpoint_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    tiny_trainer(tmp_path, max_steps=4).train(until_step=2)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()

    def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04 partial")
        raise failure

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(TrainingError) as info:
        tiny_trainer(tmp_path, max_steps=4).train(resume=True)
    message = str(info.value)
    assert f"cannot write the training checkpoint: cannot save {tmp_path / CHECKPOINT_NAME}" in message
    assert (f"the disk holding {tmp_path} is full" if isinstance(failure, OSError) else "is the disk full?") in message
    assert "continue the run with --resume" in message and "\n" not in message
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before  # nothing partial replaced it
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file must be removed"


def test_cli_disk_full_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    data = _images(tmp_path / "images")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "run"
    assert _train("--data", str(data), "--out", str(out), "--steps", "1", *TINY, *QUIET) == 1
    err = capsys.readouterr().err
    last = err.splitlines()[-1]  # after the line that says what is being trained
    assert last.startswith(
        f"ddpm train: error: cannot write the training checkpoint: cannot save {out / CHECKPOINT_NAME}: No space left"
    )
    assert "Traceback" not in err
    assert not (out / CHECKPOINT_NAME).exists()


def test_cli_out_that_is_a_file_or_not_writable_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    data = _images(tmp_path / "images")
    file = tmp_path / "file"
    file.write_text("x")
    assert _train("--data", str(data), "--out", str(file), *TINY, *QUIET) == 1
    assert capsys.readouterr().err == f"ddpm train: error: --out {file} is a file, not a folder; choose another --out\n"

    def denied(self: Path, *args: object, **kwargs: object) -> None:  # what mkdir gives in a read-only folder
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    out = tmp_path / "locked" / "run"
    assert _train("--data", str(data), "--out", str(out), *TINY, *QUIET) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ddpm train: error: cannot write the run folder: cannot save {out}: permission denied")
    assert err.count("\n") == 1


# ---------------------------------------------------------------------------------------------- --out over a model


def test_train_out_over_a_saved_pipeline_is_refused_unless_overwrite(tmp_path: Path, capsys) -> None:
    data = _images(tmp_path / "images")
    model = tmp_path / "model"
    tiny_trainer(tmp_path / "other", max_steps=1).save_pipeline(model)
    before = {p: p.read_bytes() for p in model.rglob("*") if p.is_file()}
    assert _train("--data", str(data), "--out", str(model), "--steps", "1", *TINY, *QUIET) == 1
    err = capsys.readouterr().err
    assert f"refusing to save a training run to {model}" in err
    assert "model_index.json (a saved pipeline)" in err and "pass --overwrite" in err and "another --out" in err
    assert {p: p.read_bytes() for p in model.rglob("*") if p.is_file()} == before  # untouched
    assert _train("--data", str(data), "--out", str(model), "--steps", "1", "--overwrite", *TINY, *QUIET) == 0
    assert (model / CHECKPOINT_NAME).exists()


def test_a_run_folder_is_resumed_or_refused_as_before(tmp_path: Path, capsys) -> None:
    data = _images(tmp_path / "images")
    out = tmp_path / "run"
    assert _train("--data", str(data), "--out", str(out), "--steps", "1", *TINY, *QUIET) == 0
    assert _train("--data", str(data), "--out", str(out), "--steps", "1", *TINY, *QUIET) == 1
    assert "already holds a training run; pass --resume to continue it, --overwrite to start it over" in (
        capsys.readouterr().err
    )
    assert _train("--data", str(data), "--out", str(out), "--steps", "1", "--overwrite", *TINY, *QUIET) == 0
    assert _steps_in_log(out) == [1]  # a new run starts a new log


def test_resume_of_a_run_without_a_checkpoint_says_so(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    TrainingConfig().save_json(out)
    (out / "data.json").write_text('{"data": "mnist", "resolution": 32, "color": "L"}')
    assert _train("--out", str(out), "--resume") == 1
    assert capsys.readouterr().err.startswith(
        f"ddpm train: error: {out} has no checkpoint.pt yet (the run stopped before its first checkpoint); start "
        "again without --resume"
    )
    assert _train("--out", str(tmp_path / "nothing"), "--resume") == 1
    assert "is not there (no such folder)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- run files, data


def test_data_json_without_its_keys_names_the_file_and_the_key(tmp_path: Path, capsys) -> None:
    data = _images(tmp_path / "images")
    out = tmp_path / "run"
    assert _train("--data", str(data), "--out", str(out), "--steps", "1", *TINY, *QUIET) == 0
    (out / "data.json").write_text("{}")
    assert _train("--out", str(out), "--resume", "--steps", "2") == 1
    assert f"{out / 'data.json'} lacks the key 'data'" in capsys.readouterr().err
    (out / "data.json").write_text('{"data": "x", "resolution": "8", "color": "RGB"}')
    assert _train("--out", str(out), "--resume", "--steps", "2") == 1
    assert "key 'resolution' has value '8'; expected a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("entry", "value", "says"),
    [
        ("step", "3", "checkpoint entry 'step' is '3', expected an integer >= 0"),
        ("optimizer", [1, 2], "checkpoint entry 'optimizer' is list, expected an optimiser state dict"),
        ("model", {}, "checkpoint entry 'model' is dict, expected a dict of weight tensors"),
        ("rng", {"torch": 1}, "checkpoint entry 'rng' is dict, expected a dict of the RNG states"),
    ],
)
def test_checkpoint_entries_of_the_wrong_type_name_the_file_and_the_entry(
    tmp_path: Path, entry: str, value: object, says: str
) -> None:
    tiny_trainer(tmp_path, max_steps=4).train(until_step=2)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    state[entry] = value
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(TrainingError, match="restore it from a copy") as info:
        tiny_trainer(tmp_path, max_steps=4).train(resume=True)
    assert str(info.value).startswith(f"{tmp_path / CHECKPOINT_NAME}: {says}")


def test_checkpoint_weights_of_the_wrong_shape_name_the_entry(tmp_path: Path) -> None:
    tiny_trainer(tmp_path, max_steps=4).train(until_step=2)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = torch.zeros(3)
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(TrainingError, match=r"checkpoint entry 'model' does not fit this model \(RuntimeError"):
        tiny_trainer(tmp_path, max_steps=4).train(resume=True)


def test_bomb_and_fifo_images_are_refused_by_name(tmp_path: Path, capsys) -> None:
    data = _images(tmp_path / "images")
    bomb = train_png_header(data / "bomb.png", 20000, 20000)  # 400 M pixels (a real one is ~400 KB of zlib)
    assert _train("--data", str(data), "--out", str(tmp_path / "run"), *TINY, *QUIET) == 1
    err = capsys.readouterr().err
    assert f"image {bomb} has more than the 134,217,728 pixels a training image may have" in err
    assert not (tmp_path / "run").exists(), "a refused run must not leave an empty run folder"
    train_png_header(bomb, 12000, 12000)  # below Pillow's own limit, above ours
    assert _train("--data", str(data), "--out", str(tmp_path / "run"), *TINY, *QUIET) == 1
    assert f"image {bomb} is 12000×12000 (144,000,000 pixels), more than the 134,217,728" in capsys.readouterr().err
    bomb.unlink()
    os.mkfifo(data / "pipe.png")
    assert _train("--data", str(data), "--out", str(tmp_path / "run"), *TINY, *QUIET) == 1  # and no hang
    assert f"training image {data / 'pipe.png'} is a FIFO (named pipe), not a regular file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- Ctrl-C


def test_sigint_saves_a_checkpoint_at_the_end_of_the_step(tmp_path: Path) -> None:
    trainer = tiny_trainer(tmp_path, max_steps=50)
    train_step = trainer._train_step

    def step_then_signal(*args: object) -> object:
        result = train_step(*args)
        if trainer.step == 2:  # the step being run is the third
            os.kill(os.getpid(), signal.SIGINT)
        return result

    trainer._train_step = step_then_signal
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        trainer.train()
    assert info.value.step == 3 and info.value.checkpoint == tmp_path / CHECKPOINT_NAME
    assert str(info.value) == f"interrupted at step 3; checkpoint saved to {tmp_path / CHECKPOINT_NAME}"
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    resumed = tiny_trainer(tmp_path, max_steps=5)
    resumed.train(resume=True)
    assert resumed.step == 5 and _steps_in_log(tmp_path) == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_ctrl_c_in_ddpm_train_leaves_a_checkpoint_that_resume_continues(tmp_path: Path) -> None:
    data = _images(tmp_path / "images")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "HF_HUB_OFFLINE": "1"}
    argv = ["--data", str(data), "--out", str(out), "--steps", "100000", "--threads", "1", *TINY, *QUIET]
    process = subprocess.Popen(
        [sys.executable, "-m", "ddpm", "train", *argv], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not ((out / LOG_NAME).exists() and (out / LOG_NAME).read_text().count("\n") >= 2):
            assert process.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    saved = torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"]
    assert saved >= 2
    assert f"interrupted at step {saved}; checkpoint saved to {out / CHECKPOINT_NAME}; continue with --resume" in err
    assert "Traceback" not in err
    assert main(["train", "--out", str(out), "--resume", "--steps", str(saved + 2)]) == 0
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["step"] == saved + 2
    assert _steps_in_log(out) == list(range(1, saved + 3))


# ---------------------------------------------------------------------------------------------- short runs


def test_warm_up_scales_to_a_short_run_and_a_long_explicit_one_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert TrainingConfig(max_steps=50).warmup == 5
    assert TrainingConfig(max_steps=100_000).warmup == 500
    assert TrainingConfig(max_steps=50, warmup_steps=20).warmup == 20
    assert learning_rate_at(4, TrainingConfig(max_steps=50)) == pytest.approx(5e-4)  # the peak after 5 steps
    with caplog.at_level(logging.WARNING, logger="ddpm.training.trainer"):
        tiny_trainer(tmp_path, max_steps=6, warmup_steps=500)
    assert "warmup_steps 500 is more than 50 % of the run's 6 steps" in caplog.text


def test_the_final_line_labels_the_mean_loss_the_bar_shows(tmp_path: Path, capsys) -> None:
    data = _images(tmp_path / "images")
    out = tmp_path / "run"
    flags = [*TINY, *QUIET[:-2], "--log-every", "2", "--threads", "1"]
    assert _train("--data", str(data), "--out", str(out), "--steps", "3", *flags) == 0
    err = capsys.readouterr().err
    assert "learning-rate warm-up 0 steps" in err  # 10 % of 3 steps
    assert "step 3: mean loss over the last 2 steps " in err
    result = tiny_trainer(tmp_path / "lib", max_steps=3, log_every=2).train()
    assert result["loss_steps"] == 2 and result["step"] == 3


def test_the_first_line_counts_in_the_singular_for_one(tmp_path: Path, capsys) -> None:
    """One image, one process, a warm-up of one step: no "1 images" (issue 14.9); ``--threads`` is applied; the
    progress bar (on, stderr not a terminal) is one bar, without the cursor movements of nested ones."""
    data = _images(tmp_path / "images", n=1)
    assert QUIET[0] == "--no-progress"
    argv = ["--steps", "1", "--warmup-steps", "1", *TINY, "--batch-size", "1", *QUIET[1:], "--threads", "1"]
    threads = torch.get_num_threads()
    try:
        assert _train("--data", str(data), "--out", str(tmp_path / "run"), *argv) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "\x1b[" not in err and "train: 100%" in err, err
    first = err.splitlines()[0]
    assert " on 1 image (" in first and ", 1 process, " in first and "learning-rate warm-up 1 step; " in first, first


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--threads", "0"], "--threads: must be from 1 to 1024"),
        (["--steps", "0"], "--steps: must be at least 1"),
        (["--lr", "nan"], "--lr: must be a finite number"),
        (["--seed", str(2**64)], "--seed: must be from 0 to 2**32-1, got 18446744073709551616"),
        (["--seed", str(2**32)], "--seed: must be from 0 to 2**32-1, got 4294967296"),
        (["--warmup-steps", "-1"], "--warmup-steps: must be >= 0"),
        (["--resolution", "0"], "--resolution: must be at least 1"),
    ],
)
def test_train_numbers_out_of_range_are_usage_errors(tmp_path: Path, capsys, argv: list[str], says: str) -> None:
    with pytest.raises(SystemExit) as info:
        _train("--data", "mnist", "--out", str(tmp_path / "run"), *argv)
    assert info.value.code == 2 and says in capsys.readouterr().err


def test_a_training_seed_past_2_32_is_refused_by_the_config_as_well() -> None:
    """From Python or a hand-edited training_config.json (the CLI refuses it as a usage error)."""
    from ddpm import DDPMError

    with pytest.raises(
        DDPMError, match=r"config key 'seed' has value 4294967296; expected an integer from 0 to 2\*\*32-1"
    ):
        TrainingConfig.from_dict({"seed": 2**32})


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--ema-max-decay", "1.5"], "config key 'ema_max_decay' has value 1.5; expected a number below 1"),
        (["--channels", "8,0"], "--channels [8, 0]: each channel count must be from 1 to 8192"),
        (["--resolution", "8192"], "--resolution 8192 must be from 1 to 4096 pixels"),
    ],
)
def test_train_values_no_run_can_use_are_refused_before_work(
    tmp_path: Path, capsys, argv: list[str], says: str
) -> None:
    data = _images(tmp_path / "images")
    assert _train("--data", str(data), "--out", str(tmp_path / "run"), *TINY, *QUIET, *argv) == 1
    assert says in capsys.readouterr().err
