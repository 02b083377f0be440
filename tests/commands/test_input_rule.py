"""One rule for an input image of another size or channels than the model's, in ``ddpm edit``, ``interpolate`` and
``inpaint``: resized to cover the model's size and centre-cropped, converted to its channels, a note for each change;
inpainting's mask (of the image's size) follows its image's geometry, nearest neighbour."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.commands._sampling import fit_to_model
from ddpm.image_processing import resize_center_crop


def _fit(
    image: Image.Image, size: int | tuple[int, int] | None, channels: int = 1, mask: Image.Image | None = None
) -> tuple[Image.Image, Image.Image | None, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        fitted, fitted_mask = fit_to_model(
            "edit", image, Path("in.png"), channels=channels, sample_size=size, mask=mask, mask_path=Path("m.png")
        )
    return fitted, fitted_mask, err.getvalue()


def test_an_image_of_the_models_size_and_channels_is_left_alone_without_a_note() -> None:
    image = Image.new("L", (32, 32), 7)
    fitted, mask, err = _fit(image, 32)
    assert fitted is image and mask is None and err == ""


def test_each_change_gets_one_note_naming_the_file_and_the_new_size() -> None:
    fitted, _, err = _fit(Image.new("RGB", (64, 64), (200, 10, 10)), 32)
    assert fitted.mode == "L" and fitted.size == (32, 32)
    assert err.splitlines() == [
        "ddpm edit: note: in.png is RGB; converted to grayscale for the model",
        "ddpm edit: note: in.png is 64x64; resized to the model's 32x32",
    ]
    fitted, _, err = _fit(Image.new("L", (16, 16)), 32, channels=3)  # upscaled, and to RGB
    assert fitted.mode == "RGB" and fitted.size == (32, 32) and err.count("note:") == 2
    fitted, _, err = _fit(Image.new("L", (80, 64)), 32)
    assert fitted.size == (32, 32)
    assert err.strip() == (
        "ddpm edit: note: in.png is 80x64; resized to the model's 32x32, centre-cropped to its shape "
        "(the edges cut off)"
    )


def test_a_rectangular_model_size_is_height_width_and_none_keeps_the_image_size() -> None:
    fitted, _, _ = _fit(Image.new("L", (64, 64)), (16, 32))  # (height, width)
    assert fitted.size == (32, 16)
    image = Image.new("L", (24, 40))
    fitted, _, err = _fit(image, None)
    assert fitted.size == (24, 40) and err == ""


def test_the_mask_gets_its_images_geometry_and_stays_black_and_white() -> None:
    noisy = (np.random.default_rng(0).random((64, 80)) > 0.5).astype(np.uint8) * 255
    fitted, mask, err = _fit(Image.new("RGB", (80, 64)), 32, mask=Image.fromarray(noisy))
    assert mask is not None and mask.size == fitted.size == (32, 32)
    assert set(np.unique(np.asarray(mask)).tolist()) <= {0, 255}  # no new gray level
    assert "mask m.png resized with its image to 32x32" in err
    # the same scale and crop box: 16-pixel blocks (8 after the 1/2 scale), with the 80-pixel width cropped by 4
    # pixels each side at the model's size; the image's blocks (bicubic) fall where the mask's do
    rows, cols = np.indices((64, 80))
    blocks = (((rows // 16) + (cols // 16)) % 2 * 255).astype(np.uint8)
    fitted, mask, _ = _fit(Image.fromarray(blocks), 32, mask=Image.fromarray(blocks))
    assert mask is not None
    assert np.array_equal(np.asarray(mask), blocks[::2, 8:72:2])  # the centre 64 columns, every other pixel
    assert np.array_equal(np.asarray(fitted) >= 128, np.asarray(mask) == 255)
    # a half mask whose border falls inside the crop stays exactly half
    half = np.full((64, 64), 255, np.uint8)
    half[32:] = 0
    _, mask, _ = _fit(Image.new("RGB", (64, 64)), 32, mask=Image.fromarray(half))
    assert mask is not None and np.array_equal(np.asarray(mask)[:16], np.full((16, 32), 255))
    assert not np.asarray(mask)[16:].any()


def test_resize_center_crop_of_a_square_is_the_old_short_side_rule() -> None:
    image = Image.fromarray((np.random.default_rng(1).random((30, 50)) * 255).astype(np.uint8))
    assert np.array_equal(np.asarray(resize_center_crop(image, 20)), np.asarray(resize_center_crop(image, (20, 20))))
    assert resize_center_crop(image, 20).size == (20, 20)


# ------------------------------------------------------------------ the three commands on the bundled 32x32 model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A 64x64 RGB image and a 64x64 mask (white = keep the top half): another size and mode than the model's."""
    folder = tmp_path_factory.mktemp("rule")
    levels = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(levels).save(folder / "big.png")
    mask = np.full((64, 64), 255, np.uint8)
    mask[32:] = 0
    Image.fromarray(mask).save(folder / "mask.png")
    return folder


def _run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main([*argv, "--no-progress", "--threads", "1"])
    return status, err.getvalue()


def _notes(err: str, command: str, path: Path) -> None:
    assert f"ddpm {command}: note: {path} is RGB; converted to grayscale for the model" in err, err
    assert f"ddpm {command}: note: {path} is 64x64; resized to the model's 32x32" in err, err


def test_edit_fits_a_64x64_rgb_image(files: Path) -> None:
    out = files / "edit"
    status, err = _run("edit", str(files / "big.png"), "--strength", "0.5", "--steps", "2", "--out", str(out))
    assert status == 0, err
    _notes(err, "edit", files / "big.png")
    assert Image.open(out / "edit-000.png").size == (32, 32)


def test_interpolate_fits_a_64x64_rgb_image_where_it_used_to_refuse_it(files: Path) -> None:
    out = files / "interp"
    status, err = _run(
        "interpolate", str(files / "big.png"), "seed:1", "--frames", "2", "--steps", "2", "--out", str(out)
    )
    assert status == 0, err
    _notes(err, "interpolate", files / "big.png")
    assert Image.open(out / "frame_000.png").size == (32, 32)


def test_inpaint_fits_image_and_mask_and_keeps_the_resized_input_where_the_mask_keeps(files: Path) -> None:
    out = files / "done.png"
    argv = ["inpaint", str(files / "big.png"), "--mask", str(files / "mask.png"), "--out", str(out)]
    status, err = _run(*argv, "--steps", "2", "--jump-length", "1", "--jump-n-sample", "1")
    assert status == 0, err
    _notes(err, "inpaint", files / "big.png")
    assert f"ddpm inpaint: note: mask {files / 'mask.png'} resized with its image to 32x32" in err
    result = np.asarray(Image.open(out), dtype=np.int64)
    assert result.shape == (32, 32)
    expected = np.asarray(resize_center_crop(Image.open(files / "big.png").convert("L"), 32), dtype=np.int64)
    assert np.abs(result[:16] - expected[:16]).max() <= 1  # the kept top half: the resized input
    assert np.abs(result[16:] - expected[16:]).max() > 10  # the bottom half: filled
    assert Image.open(files / "done-grid.png").size == (3 * 32, 32)  # input | mask | result, all at 32x32
