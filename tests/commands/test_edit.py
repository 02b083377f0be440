"""``ddpm edit``: image-to-image on the bundled model, end to end and offline; files, grid, seeds, no clobbering."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm import DDIMScheduler, ImageToImagePipeline
from ddpm.cli import main
from ddpm.image_processing import resize_center_crop

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def digit(tmp_path_factory) -> Path:
    """A 40x40 RGB "1": another size and mode than the bundled model's 32x32 grayscale."""
    pixels = np.zeros((40, 40, 3), dtype=np.uint8)
    pixels[8:32, 18:22] = 255
    path = tmp_path_factory.mktemp("edit") / "one.png"
    Image.fromarray(pixels).save(path)
    return path


def _levels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int64)


def test_edit_end_to_end_offline_on_the_bundled_model_matches_the_pipeline(digit, tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "ddpm", "edit", str(digit), "--strength", "0.4", "--steps", "5", "--num-images", "2"]
    result = subprocess.run(
        [*cmd, "--seed", "7", "--out", str(out), "--no-progress"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "converted to grayscale" in result.stderr and "resized to the model's 32x32" in result.stderr
    assert "2 images in" in result.stdout and "2 of 5 ddim steps" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["edit-000.png", "edit-001.png", "grid.png"]
    assert Image.open(out / "grid.png").size == (3 * 32, 32)  # the input, then the two results
    first, second = _levels(out / "edit-000.png"), _levels(out / "edit-001.png")
    assert first.shape == (32, 32) and not np.array_equal(first, second)  # seeds 7 and 8

    # the same image as the Python API with the generator of seed 7
    pipe = ImageToImagePipeline.from_pretrained("ddpm-mnist")
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = resize_center_crop(Image.open(digit).convert("L"), 32)
    expected = pipe(image, strength=0.4, num_inference_steps=5, generator=torch.Generator().manual_seed(7)).images[0]
    assert np.abs(first - np.asarray(expected, dtype=np.int64)).max() <= 1


def test_edit_never_overwrites_silently_and_the_files_do_not_depend_on_the_batch_size(digit, tmp_path):
    out = tmp_path / "out"
    args = [
        "edit",
        str(digit),
        "--strength",
        "0.2",
        "--steps",
        "5",
        "--num-images",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    before = [_levels(out / f"edit-00{i}.png") for i in range(2)]
    (out / "edit-000.png").write_bytes(b"mine")
    assert main(args) == 1  # refused before any work: the file is untouched
    assert (out / "edit-000.png").read_bytes() == b"mine"
    assert main([*args, "--overwrite", "--batch-size", "1"]) == 0
    after = [_levels(out / f"edit-00{i}.png") for i in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
