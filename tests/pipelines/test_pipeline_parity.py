"""Pipelines against diffusers (the oracle) on HF-cache copies of google/ddpm-cifar10-32 and
google/ddpm-ema-celebahq-256: the exact flat layouts, configs and legacy .bin key names, with random perturbed weights.

ddpm loads each model by its Hub id from the offline cache; diffusers loads the same snapshot folder. Same generator,
same steps: ``output_type="np"`` must agree within 2e-3 and PIL images within one 8-bit level.

The 256 px model costs about 4 s per UNet call on a 2-core CPU, so its one test uses batch 1 and 2 steps (8 UNet
calls in all), and the model is built once for the module.
"""

from __future__ import annotations

from types import MethodType
from typing import cast

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from ddpm import DDIMPipeline, DDIMScheduler, DDPMPipeline, PNDMPipeline  # noqa: E402

from helpers import (  # noqa: E402
    CELEBAHQ_SCHEDULER_CONFIG,
    CELEBAHQ_UNET_CONFIG,
    CIFAR10_SCHEDULER_CONFIG,
    CIFAR10_UNET_CONFIG,
    diffusers_unet,
    install_in_hf_cache,
    pil_levels,
    write_flat_repo,
)

CIFAR_ID = "google/ddpm-cifar10-32"
CELEBAHQ_ID = "google/ddpm-ema-celebahq-256"

# The google/ddpm-ema-celebahq-256 model card's code, as published (with diffusers).
MODEL_CARD_SNIPPET = """\
# !pip install diffusers
from diffusers import DDPMPipeline, DDIMPipeline, PNDMPipeline

model_id = "google/ddpm-ema-celebahq-256"

# load model and scheduler
ddpm = DDPMPipeline.from_pretrained(model_id)  # you can replace DDPMPipeline with DDIMPipeline or PNDMPipeline for faster inference

# run pipeline in inference (sample random noise and denoise)
image = ddpm().images[0]

# save image
image.save("ddpm_generated_image.png")
"""

NP_ATOL = 2e-3

# case -> (ddpm pipeline, diffusers pipeline name, call kwargs, steps)
CASES = {
    "ddpm": (DDPMPipeline, "DDPMPipeline", {}, 2),
    "ddim-eta0": (DDIMPipeline, "DDIMPipeline", {"eta": 0.0}, 2),
    "ddim-eta1": (DDIMPipeline, "DDIMPipeline", {"eta": 1.0}, 2),
    "pndm": (PNDMPipeline, "PNDMPipeline", {}, 4),  # 4 is PNDM's minimum: 13 UNet calls
}
# (case, batch size, generator kind). The stochastic cases (noise drawn at every step) get every combination; for
# the deterministic ones only the starting noise depends on the generators.
RUNS = [
    ("ddpm", 1, "single"),
    ("ddpm", 2, "single"),
    ("ddpm", 2, "list"),
    ("ddim-eta1", 1, "list"),
    ("ddim-eta1", 2, "single"),
    ("ddim-eta1", 2, "list"),
    ("ddim-eta0", 1, "single"),
    ("ddim-eta0", 2, "list"),
    ("pndm", 1, "single"),
    ("pndm", 2, "list"),
]


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generators(kind: str, batch: int):
    if kind == "single":
        return torch.Generator("cpu").manual_seed(42)
    return [torch.Generator("cpu").manual_seed(100 + i) for i in range(batch)]


@pytest.fixture(scope="module")
def cifar_snapshot(hf_cache, tmp_path_factory):
    # The real repo has both weight files (safetensors since 2023), with the legacy attention names.
    unet = diffusers_unet(CIFAR10_UNET_CONFIG, seed=1)
    source = write_flat_repo(
        tmp_path_factory.mktemp("cifar"), unet, CIFAR10_UNET_CONFIG, CIFAR10_SCHEDULER_CONFIG, weights="both"
    )
    return install_in_hf_cache(hf_cache, CIFAR_ID, source)


@pytest.fixture(scope="module")
def celebahq_snapshot(hf_cache, tmp_path_factory):
    # The real repo has only the legacy .bin.
    unet = diffusers_unet(CELEBAHQ_UNET_CONFIG, seed=2)
    source = write_flat_repo(
        tmp_path_factory.mktemp("celebahq"), unet, CELEBAHQ_UNET_CONFIG, CELEBAHQ_SCHEDULER_CONFIG, weights="bin"
    )
    del unet
    return install_in_hf_cache(hf_cache, CELEBAHQ_ID, source)


@pytest.fixture(scope="module")
def cifar_pipelines(cifar_snapshot):
    """Each case's (ddpm, diffusers) pipeline pair, loaded once."""
    pairs = {}
    for name, (ours_cls, theirs_name, _, _) in CASES.items():
        ours = _quiet(ours_cls.from_pretrained(CIFAR_ID))
        theirs = _quiet(getattr(diffusers, theirs_name).from_pretrained(cifar_snapshot))
        assert type(ours.scheduler).__name__ == type(theirs.scheduler).__name__
        pairs[name] = (ours, theirs)
    return pairs


@pytest.mark.parametrize("case,batch,generator", RUNS, ids=[f"{c}-b{b}-{g}" for c, b, g in RUNS])
def test_cifar10_matches_diffusers_np_within_2e3_and_pil_within_one_level(cifar_pipelines, case, batch, generator):
    ours, theirs = cifar_pipelines[case]
    _, _, kwargs, steps = CASES[case]

    def call(pipe, output_type):
        return pipe(
            batch_size=batch,
            generator=_generators(generator, batch),
            num_inference_steps=steps,
            output_type=output_type,
            **kwargs,
        ).images

    reference = call(theirs, "np")
    assert reference.shape == (batch, 32, 32, 3) and reference.std() > 0.05  # a real image, not a constant
    a = call(ours, "np")
    assert a.shape == reference.shape and a.dtype == np.float32
    np.testing.assert_allclose(a, reference, atol=NP_ATOL, rtol=0)
    if generator == "list" and batch == 2:
        # diffusers' "pil" output is numpy_to_pil of its "np" output, so the oracle need not run again.
        pil = call(ours, "pil")
        assert [im.size for im in pil] == [(32, 32)] * batch
        assert np.abs(pil_levels(pil) - pil_levels(diffusers.utils.numpy_to_pil(reference))).max() <= 1


def test_model_card_snippet_runs_verbatim_with_the_ddpm_import_and_gives_diffusers_image(
    celebahq_snapshot, tmp_path, monkeypatch
):
    code = MODEL_CARD_SNIPPET.replace("from diffusers import", "from ddpm import")
    assert code.count("from ddpm import") == 1 and "diffusers" in code  # only the import line changed
    monkeypatch.chdir(tmp_path)
    # Two changes made outside the code: DDPM's default 1000 steps become 2 (CI time), and the global RNG that
    # ddpm() draws from is seeded right after loading, so the image can be compared with diffusers'.
    monkeypatch.setattr(DDPMPipeline, "default_num_inference_steps", 2)
    load = cast(MethodType, DDPMPipeline.from_pretrained).__func__

    def load_then_seed(cls, *args, **kwargs):
        pipe = _quiet(load(cls, *args, **kwargs))
        torch.manual_seed(0)
        return pipe

    monkeypatch.setattr(DDPMPipeline, "from_pretrained", classmethod(load_then_seed))
    namespace: dict = {}
    exec(compile(code, "model_card_snippet", "exec"), namespace)

    from PIL import Image

    with Image.open(tmp_path / "ddpm_generated_image.png") as saved:
        assert saved.size == (256, 256) and saved.mode == "RGB"
        ours = pil_levels([saved])
    pipe = namespace["ddpm"]
    assert type(pipe) is DDPMPipeline and tuple(pipe.unet.config.block_out_channels) == (128, 128, 256, 256, 512, 512)

    theirs = _quiet(diffusers.DDPMPipeline.from_pretrained(celebahq_snapshot))
    torch.manual_seed(0)
    reference = theirs(num_inference_steps=2).images
    assert np.abs(ours - pil_levels(reference)).max() <= 1

    # DDIM with eta=1 on the same parts (the scheduler swapped in both libraries), np output, a generator list.
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = _quiet(diffusers.DDIMPipeline(unet=theirs.unet, scheduler=theirs.scheduler))
    a = pipe(generator=[torch.Generator().manual_seed(5)], num_inference_steps=2, eta=1.0, output_type="np").images
    b = theirs(generator=[torch.Generator().manual_seed(5)], num_inference_steps=2, eta=1.0, output_type="np").images
    assert b.std() > 0.05
    np.testing.assert_allclose(a, b, atol=NP_ATOL, rtol=0)
