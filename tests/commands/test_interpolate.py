"""``ddpm interpolate`` end to end on the bundled model (2 steps): seeds and image files, frames, grid and GIF."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from PIL import Image

from ddpm.cli import main


def _run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["interpolate", *argv])
    return status, err.getvalue()


def test_seeds_and_an_image_give_frames_a_grid_and_a_gif_and_nothing_is_clobbered(tmp_path: Path) -> None:
    out = tmp_path / "out"
    status, err = _run("seed:1", "2", "--frames", "3", "--steps", "2", "--out", str(out), "--no-progress")
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "frame_000.png", "frame_001.png", "frame_002.png", "grid.png", "interpolation.gif",
    ]  # fmt: skip
    with Image.open(out / "interpolation.gif") as gif:
        assert gif.n_frames == 4  # type: ignore[attr-defined]  # there and back
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (3 * 32, 32)
    status, err = _run("seed:1", "2", "--frames", "3", "--steps", "2", "--out", str(out), "--no-progress")
    assert status == 1 and "already holds an interpolation" in err and "--overwrite" in err
    image = out / "frame_000.png"  # an image file as an end point (inverted)
    again = tmp_path / "again"
    status, err = _run(str(image), "seed:5", "--frames", "2", "--steps", "2", "--out", str(again), "--no-progress")
    assert status == 0, err
    status, err = _run(str(image), "seed:5", "--frames", "2", "--steps", "2", "--out", str(out), "--overwrite")
    assert status == 0, err
    assert not (out / "frame_002.png").exists()  # the earlier run's frames are replaced, not mixed in


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["seed:1", "seed:2", "--frames", "1"], "argument --frames: must be from 2 to 1,000"),
        (["seed:1", "seed:2", "--frames", "100000"], "argument --frames: must be from 2 to 1,000"),
    ],
)
def test_frame_counts_are_usage_errors(argv: list[str], says: str) -> None:
    with pytest.raises(SystemExit) as info:
        _run(*argv)
    assert info.value.code == 2


def test_bad_end_points_and_options_are_refused_before_any_work(tmp_path: Path) -> None:
    # (an image of another size or in colour is no longer refused: it is fitted to the model, tests/commands/
    # test_input_rule.py)
    out = str(tmp_path / "out")
    cases = [
        (["1", "seed:x"], "B: seed:x is not a seed"),
        (["1", "2", "--scheduler", "ddpm"], "only --scheduler ddim (the default) applies"),
        (["1", "2", "--eta", "0.5"], "--eta 0.5: inversion needs deterministic DDIM"),
    ]
    for argv, says in cases:
        status, err = _run(*argv, "--out", out, "--no-progress")
        assert status == 1 and says in err, err
    assert not Path(out).exists()
