"""diffusers' documentation examples that use the DDPM-family classes, run against ddpm (and diffusers, compared).

Each test runs the call forms of one example of diffusers' docs (docs/source/en, the page named in the test's
docstring) with the import changed, on offline Hub-cache copies of the repos they name (google/ddpm-cifar10-32,
google/ddpm-cat-256, anton-l/ddpm-butterflies-128) holding micro random-weight models in the repos' layouts. Image
sizes, model widths and step counts are cut down to keep the module fast; ``"cuda"`` becomes the CPU. Where diffusers
runs the same code cheaply, the results are compared.

Call forms that another part of the work adds to ``from_pretrained`` (``use_safetensors=``, ``device_map=``,
``dtype=``, a component passed by name) are skipped, with the reason, while this tree's ``from_pretrained`` lacks them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import ddpm

diffusers = pytest.importorskip("diffusers")

from helpers import (  # noqa: E402
    CIFAR10_SCHEDULER_CONFIG,
    TINY_UNET_CONFIG,
    diffusers_unet,
    install_in_hf_cache,
    write_flat_repo,
)

LIBS = {"ddpm": ddpm, "diffusers": diffusers}
MICRO_CONFIG: dict[str, Any] = {
    **TINY_UNET_CONFIG,
    "block_out_channels": [8, 16],
    "norm_num_groups": 4,
    "sample_size": 8,
}
#: The same model as constructor arguments (a config file's "_class_name" and version are not parameters).
MICRO_KWARGS: dict[str, Any] = {k: v for k, v in MICRO_CONFIG.items() if not k.startswith("_")}
ATOL = 1e-4
CIFAR, CAT, BUTTERFLIES = "google/ddpm-cifar10-32", "google/ddpm-cat-256", "anton-l/ddpm-butterflies-128"


@pytest.fixture(scope="module", autouse=True)
def hub_repos(hf_cache: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The three repos the examples load, in their real layouts: two flat google ones, one diffusers pipeline."""
    for seed, repo_id in enumerate((CIFAR, CAT)):
        source = tmp_path_factory.mktemp(repo_id.replace("/", "-"))
        write_flat_repo(
            source, diffusers_unet(MICRO_CONFIG, seed), MICRO_CONFIG, CIFAR10_SCHEDULER_CONFIG, weights="both"
        )
        install_in_hf_cache(hf_cache, repo_id, source)
    pipe = diffusers.DDPMPipeline(unet=diffusers_unet(MICRO_CONFIG, 2), scheduler=diffusers.DDPMScheduler())
    source = tmp_path_factory.mktemp("butterflies")
    pipe.save_pretrained(source)
    install_in_hf_cache(hf_cache, BUTTERFLIES, source)


def _kwargs(fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """``kwargs``, after checking that ``fn`` takes each of them (by name, or through ``**kwargs`` as diffusers')."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        missing = sorted(k for k in kwargs if k not in params)
        assert not missing, f"{fn.__qualname__}() does not take {missing}"
    return kwargs


def _quiet(pipe: Any) -> Any:
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("lib", ["ddpm", "diffusers"])
def test_outputs_page_ddim_pipeline_output_access(lib: str) -> None:
    """api/outputs.md: ``DDIMPipeline.from_pretrained(cifar10)``, ``outputs.images``, ``["images"]``, ``[:1]``."""
    pipeline = _quiet(LIBS[lib].DDIMPipeline.from_pretrained(CIFAR))
    outputs = pipeline(num_inference_steps=2)
    assert outputs.images is outputs["images"] and len(outputs.images) == 1
    assert outputs.images[0].size == (8, 8)
    head = outputs[:1]
    assert len(head) == 1 and head[0] is outputs.images


@pytest.fixture(scope="module")
def butterflies() -> dict[str, Any]:
    """``DiffusionPipeline.from_pretrained("anton-l/ddpm-butterflies-128")`` of each library, loaded once."""
    return {name: _quiet(lib.DiffusionPipeline.from_pretrained(BUTTERFLIES)) for name, lib in LIBS.items()}


@pytest.mark.parametrize(
    "options",
    [
        {"rescale_betas_zero_snr": True},
        {"timestep_spacing": "trailing"},
        {},
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"},
    ],
    ids=["zero-snr", "trailing", "plain", "both"],
)
def test_ddim_scheduler_page_swap_the_scheduler_from_config(butterflies, options: dict[str, Any]) -> None:
    """api/schedulers/ddim.md, using-diffusers/schedulers.md, ip_adapter.md:
    ``pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **options)``, then sample.

    4 steps: 1000 is a multiple of it. For other counts with ``"trailing"`` spacing the images differ by design:
    diffusers steps DDIM to ``t - 1000 // steps`` rather than to the next timestep of its own schedule, ddpm to the
    next timestep (a documented deviation)."""
    images = {}
    for name, lib in LIBS.items():
        pipe = butterflies[name]
        original = pipe.scheduler
        pipe.scheduler = lib.DDIMScheduler.from_config(pipe.scheduler.config, **options)
        assert {k: pipe.scheduler.config[k] for k in options} == options
        images[name] = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np").images
        pipe.scheduler = original
    np.testing.assert_allclose(images["ddpm"], images["diffusers"], atol=ATOL)


def test_contribution_page_one_step_pipeline_subclass() -> None:
    """conceptual/contribution.md: a ``DiffusionPipeline`` subclass that calls ``register_modules``, built from
    parts and with ``from_pretrained(cifar10, use_safetensors=True)``."""
    outputs = {}
    for name, lib in LIBS.items():

        class UnetSchedulerOneForwardPipeline(lib.DiffusionPipeline):  # type: ignore[name-defined]
            def __init__(self, unet: Any, scheduler: Any) -> None:
                super().__init__()
                self.register_modules(unet=unet, scheduler=scheduler)

            def __call__(self) -> torch.Tensor:
                config = self.unet.config
                image = torch.randn((1, config.in_channels, config.sample_size, config.sample_size))
                timestep = 1
                model_output = self.unet(image, timestep).sample
                return self.scheduler.step(model_output, timestep, image).prev_sample

        # the page builds UNet2DModel() with its defaults (no sample_size, 224-896 channels); a micro one here
        pipeline = UnetSchedulerOneForwardPipeline(unet=lib.UNet2DModel(**MICRO_KWARGS), scheduler=lib.DDPMScheduler())
        with torch.no_grad():  # the page steps a DDPMScheduler at t=1 without set_timesteps()
            assert pipeline().shape == (1, 3, 8, 8)
        pipeline = UnetSchedulerOneForwardPipeline.from_pretrained(
            CIFAR, **_kwargs(UnetSchedulerOneForwardPipeline.from_pretrained, use_safetensors=True)
        )
        torch.manual_seed(0)
        with torch.no_grad():
            outputs[name] = pipeline()
    # The page steps at t = 1, where diffusers' float32 cumulative product of ᾱ and ddpm's float64 one (rounded
    # once) differ most relative to 1 - ᾱ (docs/schedulers.md, "Differences"); the DDPM posterior coefficients
    # there amplify that to ~3e-4 on unit-scale samples. Elsewhere the tolerance is ATOL.
    torch.testing.assert_close(outputs["ddpm"], outputs["diffusers"], atol=1e-3, rtol=0)


def test_training_pages_scheduler_constructors() -> None:
    """training/kandinsky.md and training/unconditional_training.md: ``DDPMScheduler(beta_schedule=...,
    prediction_type=...)`` and the script's check that ``prediction_type`` is a parameter of ``__init__``."""
    for kwargs in (
        {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample"},
        {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "v_prediction"},
        {"num_train_timesteps": 1000},
    ):
        ours, theirs = ddpm.DDPMScheduler(**kwargs), diffusers.DDPMScheduler(**kwargs)
        assert all(ours.config[k] == v for k, v in kwargs.items())
        torch.testing.assert_close(ours.betas.double(), theirs.betas.double(), atol=1e-7, rtol=0)


def test_unconditional_training_script_finds_prediction_type_in_the_signature() -> None:
    """training/unconditional_training.md: the script passes ``prediction_type`` only when
    ``"prediction_type" in set(inspect.signature(DDPMScheduler.__init__).parameters.keys())``."""
    accepts_prediction_type = "prediction_type" in set(inspect.signature(ddpm.DDPMScheduler.__init__).parameters.keys())
    assert accepts_prediction_type


@pytest.mark.parametrize("lib", ["ddpm", "diffusers"])
def test_unconditional_pages_diffusion_pipeline_from_a_diffusers_repo(lib: str, tmp_path: Path) -> None:
    """using-diffusers/unconditional_image_generation.md, training/unconditional_training.md:
    ``DiffusionPipeline.from_pretrained("anton-l/ddpm-butterflies-128").to(device)``, ``pipeline().images[0]``,
    ``image.save``, ``pipeline(num_inference_steps=...)`` (the pages' 1000 and 100 steps cut to 3)."""
    generator = _quiet(LIBS[lib].DiffusionPipeline.from_pretrained(BUTTERFLIES).to("cpu"))
    assert type(generator).__name__ == "DDPMPipeline"
    image = generator(num_inference_steps=3).images[0]
    image.save(tmp_path / "generated_image.png")
    assert Image.open(tmp_path / "generated_image.png").size == (8, 8)


def test_basic_training_tutorial() -> None:
    """tutorials/basic_training.md: the UNet constructor, ``add_noise`` with ``torch.LongTensor([50])`` and its PIL
    view, one training step with ``return_dict=False``, ``evaluate()`` (pipeline from parts, CPU generator,
    ``make_image_grid`` from ``utils``) and ``save_pretrained``; ddpm's numbers against diffusers'."""
    blocks = {"down_block_types": ("DownBlock2D", "AttnDownBlock2D"), "up_block_types": ("AttnUpBlock2D", "UpBlock2D")}
    config = dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(8, 16),
                  norm_num_groups=4, **blocks)  # fmt: skip  # the page's 6 levels of 128-512 channels, shrunk
    models = {}
    for name, lib in LIBS.items():
        torch.manual_seed(0)
        models[name] = lib.UNet2DModel(**config)
    models["ddpm"].load_state_dict(models["diffusers"].state_dict())
    sample_image = torch.rand(1, 3, 8, 8) * 2 - 1
    noise = torch.randn(sample_image.shape)
    results: dict[str, dict[str, Any]] = {}
    for name, lib in LIBS.items():
        noise_scheduler = lib.DDPMScheduler(num_train_timesteps=1000)
        noisy_image = noise_scheduler.add_noise(sample_image, noise, torch.LongTensor([50]))
        view = Image.fromarray(((noisy_image.permute(0, 2, 3, 1) + 1.0) * 127.5).type(torch.uint8).numpy()[0])
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (4,), generator=torch.Generator(
            ).manual_seed(1), dtype=torch.int64)  # fmt: skip
        clean_images = sample_image.repeat(4, 1, 1, 1)
        noisy_images = noise_scheduler.add_noise(clean_images, noise.repeat(4, 1, 1, 1), timesteps)
        noise_pred = models[name](noisy_images, timesteps, return_dict=False)[0]
        loss = F.mse_loss(noise_pred, noise.repeat(4, 1, 1, 1))
        loss.backward()
        pipeline = _quiet(lib.DDPMPipeline(unet=models[name], scheduler=noise_scheduler))
        images = pipeline(batch_size=4, generator=torch.Generator(device="cpu").manual_seed(0), num_inference_steps=3)
        grid = lib.utils.make_image_grid(images.images, rows=2, cols=2)
        results[name] = {"view": np.asarray(view), "loss": loss.item(), "grid": np.asarray(grid, dtype=np.int64)}
    assert np.array_equal(results["ddpm"]["view"], results["diffusers"]["view"])
    assert results["ddpm"]["loss"] == pytest.approx(results["diffusers"]["loss"], abs=1e-5)
    assert np.abs(results["ddpm"]["grid"] - results["diffusers"]["grid"]).max() <= 1  # one 8-bit level


def test_basic_training_tutorial_saves_a_pipeline_diffusers_loads(tmp_path: Path) -> None:
    """tutorials/basic_training.md: ``DDPMPipeline(unet=..., scheduler=noise_scheduler).save_pretrained(dir)``."""
    pipeline = ddpm.DDPMPipeline(
        unet=ddpm.UNet2DModel(**MICRO_KWARGS), scheduler=ddpm.DDPMScheduler(num_train_timesteps=1000)
    )
    pipeline.save_pretrained(tmp_path)
    loaded = diffusers.DDPMPipeline.from_pretrained(tmp_path)
    assert type(loaded.unet).__name__ == "UNet2DModel" and loaded.scheduler.config.num_train_timesteps == 1000


def test_push_to_hub_page_scheduler(tmp_path: Path, hf_cache: str) -> None:
    """using-diffusers/push_to_hub.md: ``DDIMScheduler(beta_start=..., ...).push_to_hub(name)`` (HfApi mocked),
    then ``DDIMScheduler.from_pretrained("<namespace>/<name>")``."""
    kwargs: dict[str, Any] = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False)  # fmt: skip
    scheduler = ddpm.DDIMScheduler(**kwargs)
    uploaded: dict[str, Any] = {}

    def upload_folder(**call: Any) -> str:
        folder = Path(str(call["folder_path"]))
        uploaded.update(json.loads((folder / "scheduler_config.json").read_text()))
        install_in_hf_cache(hf_cache, "your-namespace/my-controlnet-scheduler", folder)
        return "commit"

    with mock.patch("huggingface_hub.HfApi") as api:
        api.return_value.create_repo.return_value.repo_id = "your-namespace/my-controlnet-scheduler"
        api.return_value.upload_folder.side_effect = upload_folder
        scheduler.push_to_hub("my-controlnet-scheduler")
    assert all(uploaded[k] == v for k, v in kwargs.items())
    for lib in LIBS.values():
        loaded = lib.DDIMScheduler.from_pretrained("your-namespace/my-controlnet-scheduler")
        assert all(loaded.config[k] == v for k, v in kwargs.items())


@pytest.mark.parametrize("form", ["manual_seed", "cpu_generator", "device_map"])
def test_reusing_seeds_page(form: str) -> None:
    """using-diffusers/reusing_seeds.md: ``DDIMPipeline.from_pretrained(cifar10[, device_map=...])``, a generator
    from ``torch.manual_seed(0)`` or ``torch.Generator(device="cpu")``, 2 steps to ``"np"``: the same sum in both."""
    sums = {}
    for name, lib in LIBS.items():
        extra = _kwargs(lib.DDIMPipeline.from_pretrained, device_map="cpu") if form == "device_map" else {}
        ddim = _quiet(lib.DDIMPipeline.from_pretrained(CIFAR, **extra))
        generator = torch.Generator(device="cpu").manual_seed(0) if form == "cpu_generator" else torch.manual_seed(0)
        image = ddim(num_inference_steps=2, output_type="np", generator=generator).images
        sums[name] = np.abs(image).sum()
    assert sums["ddpm"] == pytest.approx(sums["diffusers"], rel=1e-5)


def test_write_own_pipeline_page_pipeline_call() -> None:
    """using-diffusers/write_own_pipeline.md: ``DDPMPipeline.from_pretrained(cat-256, use_safetensors=True)
    .to(device)`` and ``ddpm(num_inference_steps=25).images[0]``."""
    extra = _kwargs(ddpm.DDPMPipeline.from_pretrained, use_safetensors=True)
    pipe = _quiet(ddpm.DDPMPipeline.from_pretrained(CAT, **extra).to("cpu"))
    assert pipe(num_inference_steps=25).images[0].size == (8, 8)


def test_write_own_pipeline_page_denoising_loop() -> None:
    """using-diffusers/write_own_pipeline.md: scheduler and model ``from_pretrained``, ``set_timesteps(50)``, the
    timesteps it lists, ``model.config.sample_size``, the loop with ``model(input, t).sample`` and
    ``scheduler.step(...).prev_sample``, and the PIL conversion; ddpm's image against diffusers'."""
    images = {}
    for name, lib in LIBS.items():
        scheduler = lib.DDPMScheduler.from_pretrained(CAT)
        model = lib.UNet2DModel.from_pretrained(CAT, **_kwargs(lib.UNet2DModel.from_pretrained, use_safetensors=True))
        model = model.to("cpu")
        scheduler.set_timesteps(50)
        assert scheduler.timesteps.tolist() == list(range(980, -1, -20))
        sample_size = model.config.sample_size
        torch.manual_seed(0)
        noise = torch.randn((1, 3, sample_size, sample_size), device="cpu")
        input = noise
        for t in scheduler.timesteps[:5]:  # the page runs all 50; 5 keep the test fast
            with torch.no_grad():
                noisy_residual = model(input, t).sample
            previous_noisy_sample = scheduler.step(noisy_residual, t, input).prev_sample
            input = previous_noisy_sample
        image = (input / 2 + 0.5).clamp(0, 1).squeeze()
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        images[name] = np.asarray(Image.fromarray(pixels), dtype=np.int64)
    assert np.abs(images["ddpm"] - images["diffusers"]).max() <= 1


def test_training_scripts_scheduler_from_a_pipeline_subfolder() -> None:
    """training/dreambooth.md, text2image.md, text_inversion.md: ``DDPMScheduler.from_pretrained(repo,
    subfolder="scheduler")``; animatediff.md, ip_adapter.md: ``DDIMScheduler.from_pretrained(repo,
    subfolder="scheduler", clip_sample=False, timestep_spacing="linspace", beta_schedule="linear", steps_offset=1)``."""
    for lib in LIBS.values():
        assert lib.DDPMScheduler.from_pretrained(BUTTERFLIES, subfolder="scheduler").config.num_train_timesteps == 1000
    overrides = dict(clip_sample=False, timestep_spacing="linspace", beta_schedule="linear", steps_offset=1)
    schedulers = {
        name: lib.DDIMScheduler.from_pretrained(BUTTERFLIES, subfolder="scheduler", **overrides)
        for name, lib in LIBS.items()
    }
    for scheduler in schedulers.values():
        assert all(scheduler.config[k] == v for k, v in overrides.items())
        scheduler.set_timesteps(10)
    assert schedulers["ddpm"].timesteps.tolist() == schedulers["diffusers"].timesteps.tolist()


def test_stable_unclip_page_ddpm_scheduler_from_another_schedulers_config() -> None:
    """api/pipelines/stable_unclip.md: ``DDPMScheduler.from_config(prior_scheduler.config)`` where the config is
    an ``UnCLIPScheduler``'s (made by diffusers here)."""
    prior_config = diffusers.UnCLIPScheduler().config
    ours, theirs = ddpm.DDPMScheduler.from_config(prior_config), diffusers.DDPMScheduler.from_config(prior_config)
    torch.testing.assert_close(ours.betas.double(), theirs.betas.double(), atol=1e-7, rtol=0)
    assert ours.config.variance_type == theirs.config.variance_type


def test_kandinsky_page_component_passed_to_from_pretrained() -> None:
    """api/pipelines/kandinsky.md: ``DiffusionPipeline.from_pretrained(repo, scheduler=scheduler, dtype=...,
    use_safetensors=True)`` with a scheduler loaded first."""
    scheduler = ddpm.DDPMScheduler.from_pretrained(BUTTERFLIES, subfolder="scheduler")
    extra = _kwargs(
        ddpm.DiffusionPipeline.from_pretrained, scheduler=scheduler, dtype=torch.float16, use_safetensors=True
    )
    pipe = ddpm.DiffusionPipeline.from_pretrained(BUTTERFLIES, **extra).to("cpu")
    assert pipe.scheduler is scheduler and pipe.dtype == torch.float16
