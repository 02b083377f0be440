"""Post-processing, PIL conversion, grids and atomic image saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.image_processing import (
    OUTPUT_TYPES,
    grid_shape,
    make_image_grid,
    numpy_to_pil,
    postprocess,
    save_image,
)


def _sample(batch: int = 2, channels: int = 3, size: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn((batch, channels, size, size), generator=g) * 0.8


def test_postprocess_pt_is_nchw_in_unit_range_and_clamped():
    x = _sample()
    x[0, 0, 0, 0] = 5.0
    out = postprocess(x, "pt")
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and out[0, 0, 0, 0] == 1.0
    torch.testing.assert_close(out, (x / 2 + 0.5).clamp(0, 1), rtol=0, atol=0)


def test_postprocess_np_is_nhwc_float32():
    x = _sample()
    out = postprocess(x, "np")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(out, (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy())


def test_postprocess_np_of_bfloat16_sample_is_float32():
    out = postprocess(_sample().to(torch.bfloat16), "np")
    assert out.dtype == np.float32


def test_postprocess_pil_matches_diffusers_rounding():
    diffusers_pil = pytest.importorskip("diffusers.utils.pil_utils")
    x = _sample(batch=3)
    ours = postprocess(x, "pil")
    ref = diffusers_pil.numpy_to_pil((x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy())
    assert [im.mode for im in ours] == ["RGB"] * 3
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_numpy_to_pil_rounds_to_nearest_level_not_truncates():
    img = numpy_to_pil(np.full((1, 2, 2, 3), 0.999, dtype=np.float32))[0]  # 254.745 -> 255, truncation gives 254
    assert np.asarray(img).min() == 255


def test_numpy_to_pil_single_channel_gives_mode_L_and_single_image_gets_batch_dim():
    images = numpy_to_pil(np.zeros((4, 4, 1), dtype=np.float32))
    assert len(images) == 1 and images[0].mode == "L" and images[0].size == (4, 4)


def test_numpy_to_pil_rejects_two_channels():
    with pytest.raises(ValueError, match="shape"):
        numpy_to_pil(np.zeros((1, 4, 4, 2), dtype=np.float32))


def test_postprocess_unknown_output_type_lists_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        postprocess(_sample(), "numpy")
    for name in OUTPUT_TYPES:
        assert repr(name) in str(err.value)


def test_make_image_grid_places_images_row_by_row():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (4, 3), c) for c in colours]
    grid = make_image_grid(images, rows=2, cols=2)
    assert grid.size == (8, 6)
    assert grid.getpixel((0, 0)) == colours[0]
    assert grid.getpixel((4, 0)) == colours[1]
    assert grid.getpixel((0, 3)) == colours[2]
    assert grid.getpixel((4, 3)) == (0, 0, 0)  # the empty cell stays black


def test_make_image_grid_rejects_too_many_images_and_mixed_sizes():
    with pytest.raises(ValueError, match="do not fit"):
        make_image_grid([Image.new("RGB", (2, 2))] * 5, rows=2, cols=2)
    with pytest.raises(ValueError, match="resize"):
        make_image_grid([Image.new("RGB", (2, 2)), Image.new("RGB", (3, 3))], rows=1, cols=2)
    assert make_image_grid([Image.new("RGB", (2, 2)), Image.new("RGB", (3, 3))], 1, 2, resize=4).size == (8, 4)


def test_grid_shape_is_nearly_square_and_holds_every_image():
    for n in range(1, 70):
        rows, cols = grid_shape(n)
        assert rows * cols >= n and rows <= cols and (rows - 1) * cols < n


def test_save_image_writes_png_atomically_and_leaves_no_temporary_file(tmp_path):
    img = Image.new("RGB", (3, 3), (1, 2, 3))
    path = save_image(img, tmp_path / "sub" / "a.png")
    assert Image.open(path).format == "PNG" and Image.open(path).getpixel((0, 0)) == (1, 2, 3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.png"]


def test_save_image_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match="format"):
        save_image(Image.new("RGB", (2, 2)), tmp_path / "a.unknown")
