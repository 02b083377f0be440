"""``ddpm inpaint``: the result and the grid, the known region kept, --overwrite, --mask-means (tiny UNet)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main

from helpers import write_tiny_repo


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inpaint")
    repo = write_tiny_repo(folder / "repo")
    levels = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(levels).save(folder / "image.png")
    hole = np.zeros((16, 16), np.uint8)
    hole[8:] = 255  # white marks the hole: --mask-means fill
    Image.fromarray(hole).save(folder / "hole.png")
    return folder, repo, levels


def test_inpaint_writes_result_and_grid_keeps_the_known_half_and_never_clobbers(files, capsys):
    folder, repo, levels = files
    out = folder / "done.png"
    argv = ["inpaint", str(folder / "image.png"), "--mask", str(folder / "hole.png"), "--model", str(repo)]
    argv += ["--mask-means", "fill", "--steps", "3", "--jump-length", "1", "--jump-n-sample", "2", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    result = np.asarray(Image.open(out).convert("RGB"), dtype=np.int64)
    assert np.abs(result[:8] - levels[:8]).max() <= 1  # kept within one 8-bit level
    assert np.abs(result[8:] - levels[8:]).max() > 10  # filled
    assert Image.open(folder / "done-grid.png").size == (48, 16)  # input | mask | result
    assert main([*argv, "--out", str(out)]) == 1
    assert "done.png exists; add --overwrite" in capsys.readouterr().err
    assert main([*argv, "--out", str(out), "--overwrite", "--seed", "1"]) == 0
    assert main([*argv, "--out", str(out), "--scheduler", "ddim"]) == 1
    assert "--scheduler ddim does not apply to ddpm inpaint" in capsys.readouterr().err


def test_a_mask_resized_with_its_image_is_checked_as_an_unresized_one_is(files, capsys):
    """32x16 image and mask for the 16x16 model: the resize keeps the centre 16 columns. A hole only in the cut-off
    edges leaves nothing to fill (refused, as an all-keep mask is); a kept part only there leaves nothing kept (runs,
    as an all-fill mask does)."""
    folder, repo, _ = files
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(folder / "wide.png")
    edges = np.zeros((16, 32), np.uint8)
    edges[:, :8] = edges[:, 24:] = 255  # white only in the edges the crop cuts off
    Image.fromarray(edges).save(folder / "edges.png")
    argv = ["inpaint", str(folder / "wide.png"), "--mask", str(folder / "edges.png"), "--model", str(repo)]
    argv += ["--steps", "2", "--jump-length", "1", "--jump-n-sample", "1", "--no-progress"]
    out = folder / "wide-out.png"
    assert main([*argv, "--mask-means", "fill", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is 32x16; resized to the model's 16x16, centre-cropped to its shape" in err
    assert f"mask {folder / 'edges.png'}: the mask marks nothing to fill once resized with its image" in err
    assert not out.exists()
    assert main([*argv, "--out", str(out)]) == 0  # white = keep: nothing kept at 16x16, all of it filled
    assert Image.open(out).size == (16, 16)
