"""The bundled ddpm-mnist model: loads offline by its short name, is the default of ``ddpm sample``, draws digits."""

from __future__ import annotations

import torch
from PIL import Image

from ddpm import DDPMPipeline, UNet2DModel
from ddpm.cli import main
from ddpm.hub import BUNDLED_MODELS, bundled_model_path


def test_bundled_model_is_registered_small_and_loads_offline_by_short_name():
    assert next(iter(BUNDLED_MODELS)) == "ddpm-mnist"
    folder = bundled_model_path("ddpm-mnist")
    assert folder is not None
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    assert (folder / "README.md").is_file()
    pipe = DDPMPipeline.from_pretrained("ddpm-mnist")
    unet = pipe.unet
    assert isinstance(unet, UNet2DModel)
    assert unet.dtype == torch.float32  # fp16 on disk, float32 in memory
    assert (unet.config.sample_size, unet.config.in_channels) == (32, 1)
    assert sum(p.numel() for p in unet.parameters()) <= 5_000_000


def test_ddpm_sample_without_a_model_uses_the_bundled_one(tmp_path):
    out = tmp_path / "samples"
    assert (
        main(
            ["sample", "--scheduler", "ddim", "--steps", "10", "--num-images", "3", "--out", str(out), "--no-progress"]
        )
        == 0
    )
    files = sorted(out.glob("*.png"))
    assert len(files) == 3
    with Image.open(files[0]) as img:
        assert img.size == (32, 32)


def test_bundled_model_meets_the_quality_targets_with_the_acceptance_command(tmp_path):
    """Issue 6's acceptance, as the user runs it: `ddpm sample --scheduler ddim --steps 50 --num-images 100 --seed 0`
    on the bundled model, scored by `ddpm evaluate`: precision and recall within 0.1 of real-vs-real, the Fréchet
    distance within 2x, every class present and the class histogram about as balanced as 100 real digits."""
    import json

    out, report = tmp_path / "samples", tmp_path / "quality.json"
    assert (
        main(
            [
                "sample",
                "--scheduler",
                "ddim",
                "--steps",
                "50",
                "--num-images",
                "100",
                "--seed",
                "0",
                "--batch-size",
                "100",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["evaluate", str(out), "--json", str(report)]) == 0
    scores = json.loads(report.read_text())
    generated, real = scores["generated"], scores["reference"]
    assert generated["n"] == real["n"] == 100
    assert abs(generated["precision"] - real["precision"]) <= 0.1, (generated, real)
    assert abs(generated["recall"] - real["recall"]) <= 0.1, (generated, real)
    assert generated["frechet_distance"] <= 2 * real["frechet_distance"], (generated, real)
    assert min(generated["class_counts"]) >= 3
    assert generated["uniform_tv"] <= 0.2
