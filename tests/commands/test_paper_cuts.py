"""Issue 14.9's paper cuts across every command, the ones added since included: an ``--out`` that names an existing
file is a one-line error; too few ``--steps`` warn; one progress bar, no cursor-movement junk, when stderr is a log.
(``ddpm sample``'s own cases are in test_sample_reruns.py.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import build_parser, main


@pytest.fixture(scope="module")
def digit(tmp_path_factory) -> tuple[Path, Path]:
    """A 32x32 grayscale "1" (the bundled model's size) and a mask that keeps all but its middle."""
    folder = tmp_path_factory.mktemp("cuts")
    pixels = np.zeros((32, 32), dtype=np.uint8)
    pixels[6:26, 14:18] = 255
    Image.fromarray(pixels).save(folder / "one.png")
    mask = np.full((32, 32), 255, dtype=np.uint8)
    mask[12:20, 12:20] = 0
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "one.png", folder / "mask.png"


def _commands_with_out() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name for name, child in sub.choices.items() if any("--out" in a.option_strings for a in child._actions)}


#: argv of each command with ``--out``, before ``--out``: what it needs to get as far as looking at ``--out``, with
#: too few ``--steps`` where that is a warning (which must not come before a refusal).
OUT_ARGV = {
    "sample": lambda img, mask: ["sample", "--steps", "1"],
    "train": lambda img, mask: ["train", "--data", str(img.parent)],
    "edit": lambda img, mask: ["edit", str(img), "--strength", "1", "--steps", "1"],
    "interpolate": lambda img, mask: ["interpolate", "seed:1", "seed:2", "--steps", "1"],
    "inpaint": lambda img, mask: ["inpaint", str(img), "--mask", str(mask), "--steps", "1"],
}


def test_every_command_with_out_is_checked_here():
    assert _commands_with_out() == set(OUT_ARGV)


@pytest.mark.parametrize("command", sorted(OUT_ARGV))
def test_out_naming_an_existing_file_is_a_one_line_error(command: str, digit, tmp_path: Path, capsys):
    """No FileExistsError traceback and the file untouched, whether the command writes a folder or a file."""
    existing = tmp_path / "taken.png"
    existing.write_bytes(b"mine")
    assert main([*OUT_ARGV[command](*digit), "--out", str(existing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ddpm {command}: error: ") and err.count("\n") == 1 and str(existing) in err, err
    assert "another --out" in err or "give a folder" in err, err  # says what to do
    assert existing.read_bytes() == b"mine"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["edit", "{img}", "--strength", "1", "--steps", "1"], "--steps 1 is too few for ddim: "),
        (
            ["inpaint", "{img}", "--mask", "{mask}", "--steps", "1", "--jump-n-sample", "1"],
            "--steps 1 is too few for RePaint: ",
        ),
        (["interpolate", "seed:1", "seed:2", "--frames", "2", "--steps", "1"], "--steps 1 is too few: "),
    ],
    ids=["edit", "inpaint", "interpolate"],
)
def test_editing_commands_warn_about_too_few_steps_and_show_one_plain_bar(argv, says, digit, tmp_path, capsys):
    """On the bundled model, with the progress bar on and stderr not a terminal (as in a log)."""
    img, mask = digit
    argv = [a.format(img=img, mask=mask) for a in argv]
    out = tmp_path / ("out.png" if argv[0] == "inpaint" else "out")
    assert main([*argv, "--out", str(out), "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert f"ddpm {argv[0]}: warning: {says}" in captured.err
    assert "\x1b[" not in captured.err  # no nested bars moving the cursor up ("[A" in a log)
    if argv[0] == "edit":
        assert "(strength 1: 1 of 1 ddim step)" in captured.out  # not "1 steps"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["sample", "--grid", "{folder}"], "--grid {folder} is a folder; give a file name such as {folder}/grid.png"),
        (["sample", "--grid", "{folder}/grid.txt"], "cannot tell the image format of {folder}/grid.txt: use a file"),
        (["evaluate", "{folder}", "--json", "{folder}"], "--json {folder} is a folder; give a file name such as"),
    ],
    ids=["grid-folder", "grid-format", "json-folder"],
)
def test_files_written_last_are_refused_before_the_work(argv, says, tmp_path: Path, capsys):
    """``--grid`` and ``--json`` are written after minutes of work: a name that cannot be written is refused first."""
    out = tmp_path / "out"
    argv = [a.format(folder=tmp_path) for a in argv] + (["--out", str(out)] if argv[0] == "sample" else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ddpm {argv[0]}: error: {says.format(folder=tmp_path)}"), err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("command", ["sample", "interpolate"])
def test_a_warning_does_not_come_before_a_refusal_of_the_model(command: str, tmp_path: Path, capsys):
    """Too few ``--steps`` and a mistyped model: the one line is the error (the warning comes when the run starts)."""
    points = ["seed:1", "seed:2", "--model"] if command == "interpolate" else []
    assert main([command, *points, "ddpm-mnst", "--steps", "1", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ddpm {command}: error: 'ddpm-mnst' is neither") and err.count("\n") == 1, err
