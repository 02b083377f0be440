"""Training data: image folders (RGB, grayscale, resize, crop), the MNIST splits and the step-indexed data order."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ddpm.training.data import DataError, ImageFolderDataset, StepBatchSampler, load_training_data, mnist_digits


def _write(path, size, color, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_resizes_the_short_side_and_centre_crops(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red band at the left, cropped away by the centre crop
    img.paste((0, 255, 0), (15, 0, 25, 20))  # green band in the middle
    img.save(tmp_path / "wide.png")
    item = ImageFolderDataset(tmp_path, 10, "RGB")[0]
    assert item.shape == (3, 10, 10) and item.dtype == torch.uint8
    # 40x20 -> 20x10, crop columns 5..15: the left red band (0..5 after resizing) is gone, green is centred.
    assert item[0].max() < 128
    assert item[1, :, 5].min() > 200


def test_image_folder_converts_to_grayscale_and_finds_images_recursively(tmp_path):
    _write(tmp_path / "a" / "one.png", (16, 16), (255, 255, 255))
    _write(tmp_path / "b" / "two.JPG", (32, 24), (0, 0, 0))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolderDataset(tmp_path, 8, "L")
    assert len(ds) == 2
    assert ds[0].shape == (1, 8, 8) and int(ds[0].min()) == 255
    assert ds[1].shape == (1, 8, 8) and int(ds[1].max()) < 5  # JPEG of black


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        ImageFolderDataset(tmp_path / "missing", 8)
    with pytest.raises(DataError, match="holds no images"):
        ImageFolderDataset(tmp_path, 8)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read training image .*broken.png: not an image file Pillow can read"):
        ImageFolderDataset(tmp_path, 8)[0]
    with pytest.raises(DataError, match="color must be 'L'.*'RGB'"):
        ImageFolderDataset(tmp_path, 8, "CMYK")  # type: ignore[arg-type]  # an invalid mode, on purpose


def test_mnist_splits_are_padded_class_balanced_and_disjoint():
    train, train_labels = mnist_digits("train")
    heldout, heldout_labels = mnist_digits("heldout")
    assert train.shape == (4000, 1, 32, 32) and heldout.shape == (1000, 1, 32, 32)
    assert torch.bincount(train_labels).tolist() == [400] * 10
    assert torch.bincount(heldout_labels).tolist() == [100] * 10
    everything, _ = mnist_digits("all")
    assert everything.shape == (5000, 1, 32, 32)
    # Padding: a 2-pixel black border; digits are white on black.
    assert int(train[:, :, :2].max()) == 0 and int(train[:, :, :, -2:].max()) == 0 and int(train.max()) == 255
    # Disjoint by position: the held-out digits are the last 100 of each class.
    assert torch.equal(heldout[:100], everything[400:500])
    assert torch.equal(train[:400], everything[:400])


def test_load_training_data_rejects_mnist_at_other_resolutions():
    with pytest.raises(DataError, match="--resolution 32"):
        load_training_data("mnist", 64)
    with pytest.raises(DataError, match="grayscale"):
        load_training_data("mnist", 32, "RGB")


def test_data_order_is_the_same_for_any_split_over_ranks_and_accumulation():
    one = StepBatchSampler(10, 4, seed=3)
    ranks = [StepBatchSampler(10, 1, accumulation=2, world_size=2, rank=r, seed=3) for r in range(2)]
    iters = [iter(s) for s in ranks]
    for step in range(5):
        expected = one.step_indices(step)
        got: list[int | None] = [None] * 4
        for micro in range(2):
            for r, it in enumerate(iters):
                got[ranks[r].rank_slice(micro)] = next(it)
        assert got == expected


def test_data_order_is_a_permutation_per_epoch_and_resumes_at_any_step():
    sampler = StepBatchSampler(12, 4, seed=0)
    stream = [i for step in range(6) for i in sampler.step_indices(step)]
    assert sorted(stream[:12]) == list(range(12)) and sorted(stream[12:]) == list(range(12))
    assert stream[:12] != stream[12:]
    resumed = iter(StepBatchSampler(12, 4, seed=0, start_step=4))
    assert next(resumed) == sampler.step_indices(4)
