"""The bundled ddpm-mnist model: loads offline by its short name, is the default of ``ddpm sample``, draws digits."""

from __future__ import annotations

import pytest
import torch
from helpers import one_thread  # noqa: F401 (fixture)
from PIL import Image

from ddpm import DDIMPipeline, DDPMPipeline
from ddpm.cli import main
from ddpm.hub import BUNDLED_MODELS, bundled_model_path

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bundled_model_is_registered_small_and_loads_offline_by_short_name():
    assert next(iter(BUNDLED_MODELS)) == "ddpm-mnist"
    folder = bundled_model_path("ddpm-mnist")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    assert (folder / "README.md").is_file()
    pipe = DDPMPipeline.from_pretrained("ddpm-mnist")
    assert pipe.unet.dtype == torch.float32  # fp16 on disk, float32 in memory
    assert (pipe.unet.config.sample_size, pipe.unet.config.in_channels) == (32, 1)
    assert sum(p.numel() for p in pipe.unet.parameters()) <= 5_000_000


def test_ddpm_sample_without_a_model_uses_the_bundled_one(tmp_path):
    out = tmp_path / "samples"
    assert main(["sample", "--scheduler", "ddim", "--steps", "10", "--num-images", "3", "--out", str(out),
                 "--no-progress"]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 3
    with Image.open(files[0]) as img:
        assert img.size == (32, 32)


def test_bundled_model_draws_digits_of_every_class():
    from ddpm.evaluation import evaluate_digits

    pipe = DDIMPipeline.from_pretrained("ddpm-mnist")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=50, generator=torch.Generator().manual_seed(0), num_inference_steps=20,
                  output_type="pt").images
    generated, reference = evaluate_digits((images * 255).round().to(torch.uint8), reference_draws=2)
    assert sum(c > 0 for c in generated.class_counts) >= 9
    assert generated.precision > reference.precision - 0.25
    assert generated.frechet_distance < 4 * reference.frechet_distance
