"""The pipelines' diffusers surface: the same calls on a diffusers pipeline and a ddpm one, results compared.

Both pipelines hold the same micro UNet weights (diffusers' random init, perturbed, copied into ddpm's model), so
images agree within the UNet's fp32 parity tolerance (1e-4).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm

diffusers = pytest.importorskip("diffusers")
diffusers_utils = pytest.importorskip("diffusers.utils")

from helpers import TINY_UNET_CONFIG, diffusers_unet  # noqa: E402

MICRO_CONFIG: dict[str, Any] = {
    **TINY_UNET_CONFIG,
    "block_out_channels": [8, 16],
    "norm_num_groups": 4,
    "sample_size": 8,
}
ATOL = 1e-4


@pytest.fixture(scope="module")
def unets() -> tuple[ddpm.UNet2DModel, Any]:
    theirs = diffusers_unet(MICRO_CONFIG, seed=3)
    ours = ddpm.UNet2DModel.from_config(MICRO_CONFIG).eval()
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _pipes(unets: tuple[ddpm.UNet2DModel, Any], pipeline: str = "DDIMPipeline", scheduler: str = "DDIMScheduler"):
    ours = getattr(ddpm, pipeline)(unet=unets[0], scheduler=getattr(ddpm, scheduler)())
    theirs = getattr(diffusers, pipeline)(unet=unets[1], scheduler=getattr(diffusers, scheduler)())
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(pipe: Any, **kwargs: Any) -> np.ndarray:
    return pipe(generator=_gen(), num_inference_steps=3, output_type="np", **kwargs).images


@pytest.mark.parametrize(
    ("pipeline", "scheduler"),
    [("DDPMPipeline", "DDPMScheduler"), ("DDIMPipeline", "DDIMScheduler"), ("PNDMPipeline", "PNDMScheduler")],
)
def test_diffusion_pipeline_from_pretrained_builds_the_class_model_index_names(
    unets, tmp_path: Path, pipeline: str, scheduler: str
) -> None:
    from ddpm import DiffusionPipeline

    assert DiffusionPipeline is ddpm.pipelines.DiffusionPipeline
    ours, theirs = _pipes(unets, pipeline, scheduler)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    for folder in ("ours", "theirs"):
        ours_loaded = DiffusionPipeline.from_pretrained(tmp_path / folder)
        theirs_loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / folder)
        assert type(ours_loaded).__name__ == type(theirs_loaded).__name__ == pipeline
        assert type(ours_loaded.scheduler).__name__ == type(theirs_loaded.scheduler).__name__ == scheduler
    # the round trip keeps the images (the comparison diffusers' test_save_load_local makes)
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "ours")
    reloaded.set_progress_bar_config(disable=True)
    steps = 4 if pipeline == "PNDMPipeline" else 2
    before = ours(generator=_gen(), num_inference_steps=steps, output_type="np").images
    after = reloaded(generator=_gen(), num_inference_steps=steps, output_type="np").images
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    ("pipeline", "scheduler"), [("DDPMPipeline", "DDPMScheduler"), ("DDIMPipeline", "DDIMScheduler")]
)
def test_pipe_config_is_diffusers_read_only_component_map(unets, tmp_path: Path, pipeline: str, scheduler: str) -> None:
    ours, theirs = _pipes(unets, pipeline, scheduler)
    assert dict(ours.config) == dict(theirs.config) == {"unet": ("diffusers", "UNet2DModel"), "scheduler": (
        "diffusers", scheduler)}  # fmt: skip
    with pytest.raises(TypeError):
        ours.config["unet"] = ("diffusers", "Other")  # read-only
    # model_index.json holds the same entries (as JSON lists), plus the pipeline class and the version
    ours.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert {k: tuple(v) for k, v in index.items() if not k.startswith("_")} == dict(ours.config)
    assert index["_class_name"] == pipeline
    # it follows the parts
    ours.scheduler = ddpm.PNDMScheduler()
    assert ours.config["scheduler"] == ("diffusers", "PNDMScheduler")


def test_attention_slicing_is_a_no_op_that_keeps_the_images(unets) -> None:
    ours, theirs = _pipes(unets)
    plain = _images(ours)
    for slice_size in ("auto", "max", 1, 2, None):
        ours.enable_attention_slicing(slice_size)
        theirs.enable_attention_slicing(slice_size)  # diffusers takes the same values
        np.testing.assert_array_equal(_images(ours), plain)
    ours.enable_attention_slicing()
    ours.disable_attention_slicing()
    theirs.disable_attention_slicing()
    np.testing.assert_array_equal(_images(ours), plain)
    np.testing.assert_allclose(_images(theirs), plain, atol=ATOL)
    with pytest.raises(ValueError, match="slice_size"):
        ours.enable_attention_slicing("half")


def test_make_image_grid_matches_diffusers_and_is_importable_from_utils() -> None:
    from ddpm.utils import make_image_grid

    assert make_image_grid is ddpm.make_image_grid is ddpm.image_processing.make_image_grid
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)) for _ in range(6)]
    for kwargs in ({"rows": 2, "cols": 3}, {"rows": 3, "cols": 2, "resize": 4}, {"rows": 1, "cols": 6}):
        ours, theirs = make_image_grid(images, **kwargs), diffusers_utils.make_image_grid(images, **kwargs)
        assert ours.size == theirs.size and ours.mode == theirs.mode
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.parametrize(
    ("pipeline", "scheduler", "kwargs"),
    [
        ("DDPMPipeline", "DDPMScheduler", {}),
        ("DDIMPipeline", "DDIMScheduler", {"eta": 0.0}),
        ("DDIMPipeline", "DDIMScheduler", {"eta": 1.0}),
    ],
)
def test_same_seed_same_images_in_every_output_type(unets, pipeline: str, scheduler: str, kwargs) -> None:
    ours, theirs = _pipes(unets, pipeline, scheduler)
    expected = theirs(generator=_gen(), num_inference_steps=3, output_type="pt", **kwargs).images
    np.testing.assert_allclose(_images(ours, **kwargs), _images(theirs, **kwargs), atol=ATOL)
    pt = ours(generator=_gen(), num_inference_steps=3, output_type="pt", **kwargs).images
    torch.testing.assert_close(pt, expected, atol=ATOL, rtol=0)
    # "latent" is the sample before post-processing: diffusers' [-1, 1] -> [0, 1] mapping of it gives "pt"
    latent = ours(generator=_gen(), num_inference_steps=3, output_type="latent", **kwargs).images
    torch.testing.assert_close((latent / 2 + 0.5).clamp(0, 1), expected, atol=ATOL, rtol=0)


def test_callback_on_step_end_sees_diffusers_samples_and_can_replace_them(unets) -> None:
    ours, theirs = _pipes(unets)
    assert set(ours._callback_tensor_inputs) >= {"latents"}
    seen: list[torch.Tensor] = []

    def record(pipe, i, t, tensors):
        assert set(tensors) == set(pipe._callback_tensor_inputs)
        seen.append(tensors["latents"].clone())
        return tensors

    ours(
        generator=_gen(), num_inference_steps=3, callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=ours._callback_tensor_inputs,
    )  # fmt: skip
    assert ours.num_timesteps == 3 == len(seen)
    # diffusers' own loop with the same noise gives the same sample after each step
    scheduler, unet = theirs.scheduler, theirs.unet
    sample = diffusers_utils.torch_utils.randn_tensor((1, 3, 8, 8), generator=_gen())
    scheduler.set_timesteps(3)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            sample = scheduler.step(unet(sample, t).sample, t, sample).prev_sample
            torch.testing.assert_close(seen[i], sample, atol=ATOL, rtol=0)

    def zero_last(pipe, i, t, tensors):
        if i == pipe.num_timesteps - 1:
            tensors["latents"] = torch.zeros_like(tensors["latents"])
        return tensors

    out = ours(generator=_gen(), num_inference_steps=3, output_type="latent", callback_on_step_end=zero_last)[0]
    assert out.abs().sum() == 0
    with pytest.raises(ValueError, match="unknown"):
        ours(num_inference_steps=1, callback_on_step_end=record, callback_on_step_end_tensor_inputs=["noise"])


def test_to_forms_progress_bar_components_and_numpy_to_pil_as_in_diffusers() -> None:
    theirs_unet = diffusers_unet(MICRO_CONFIG, seed=4)
    ours_unet = ddpm.UNet2DModel.from_config(MICRO_CONFIG).eval()
    ours, theirs = _pipes((ours_unet, theirs_unet))
    forms: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (("cpu",), {}),
        ((torch.float64,), {}),
        (("cpu", torch.float32), {}),
        ((), {"device": "cpu"}),
        ((), {"dtype": torch.float64}),
        ((), {"device": torch.device("cpu"), "dtype": torch.float32, "silence_dtype_warnings": True}),
    ]
    for args, kwargs in forms:
        assert ours.to(*args, **kwargs) is ours and theirs.to(*args, **kwargs) is theirs
        assert (ours.device, ours.dtype) == (theirs.device, theirs.dtype)
    assert list(ours.components) == list(theirs.components) == ["unet", "scheduler"]
    assert list(ours.progress_bar(range(3))) == list(theirs.progress_bar(range(3))) == [0, 1, 2]
    ours.set_progress_bar_config(disable=False, file=io.StringIO())
    with ours.progress_bar(total=2) as ours_bar:
        ours_bar.update()
        assert ours_bar.n == 1 and ours_bar.total == 2
    array = np.random.default_rng(1).random((2, 4, 4, 3), dtype=np.float32)
    for ours_image, theirs_image in zip(
        ddpm.DiffusionPipeline.numpy_to_pil(array), diffusers.DiffusionPipeline.numpy_to_pil(array), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(ours_image), np.asarray(theirs_image))
