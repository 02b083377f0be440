"""Pipelines on a tiny model: construction, device/dtype, every scheduler in every pipeline, callbacks, errors,
loading variants and save_pretrained round trips with diffusers."""

from __future__ import annotations

import io
import json
import shutil
from types import MethodType
from typing import cast

import numpy as np
import pytest
import torch

from ddpm import (
    CheckpointNotFoundError,
    ConfigError,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    ImagePipelineOutput,
    PNDMPipeline,
    PNDMScheduler,
    UNet2DModel,
)
from ddpm.pipelines import PIPELINES, DiffusionPipeline
from ddpm.schedulers import Scheduler

from helpers import MODEL_INDEX, TINY_UNET_CONFIG, install_in_hf_cache, pil_levels, write_tiny_repo

SCHEDULERS: dict[str, type[Scheduler]] = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "pndm": PNDMScheduler}
STEPS = {"ddpm": 3, "ddim": 3, "pndm": 4}  # PNDM needs at least 4 (its Runge-Kutta warm-up)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    return write_tiny_repo(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def pipe(tiny_repo):
    pipe = DDPMPipeline.from_pretrained(tiny_repo)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


# ---------------------------------------------------------------------------------------------- construction


def test_pipeline_classes_differ_only_in_default_steps_and_scheduler_type():
    assert (DDPMPipeline.default_num_inference_steps, DDIMPipeline.default_num_inference_steps) == (1000, 50)
    assert PNDMPipeline.default_num_inference_steps == 50
    assert (DDPMPipeline.scheduler_type, DDIMPipeline.scheduler_type, PNDMPipeline.scheduler_type) == (
        None,
        "ddim",
        "pndm",
    )
    for cls in PIPELINES.values():
        assert (
            cls.__call__ is DiffusionPipeline.__call__
            and cast(MethodType, cls.from_pretrained).__func__
            is cast(MethodType, DiffusionPipeline.from_pretrained).__func__
        )


def test_constructor_takes_unet_and_scheduler_and_exposes_components(pipe):
    other = DDIMPipeline(**pipe.components)
    assert other.unet is pipe.unet and other.scheduler is pipe.scheduler
    assert set(pipe.components) == {"unet", "scheduler"}


def test_constructor_rejects_things_that_are_not_a_unet_or_a_scheduler(pipe):
    with pytest.raises(TypeError, match="unet"):
        DDPMPipeline(unet=object(), scheduler=pipe.scheduler)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(TypeError, match="set_timesteps"):
        DDPMPipeline(unet=pipe.unet, scheduler=object())  # type: ignore[arg-type]  # wrong on purpose


def test_register_modules_builds_a_subclass_after_a_bare_init_and_checks_its_parts(pipe):
    class OneStep(DiffusionPipeline):
        def __init__(self, unet, scheduler):
            super().__init__()
            assert "components not registered" in repr(self)
            self.register_modules(unet=unet, scheduler=scheduler)

    built = OneStep(**pipe.components)
    assert built.unet is pipe.unet and built.scheduler is pipe.scheduler
    with pytest.raises(TypeError, match="vae"):
        built.register_modules(vae=pipe.unet)
    with pytest.raises(TypeError, match="set_timesteps"):
        built.register_modules(scheduler=object())
    assert built.scheduler is pipe.scheduler  # a refused part leaves the pipeline as it was
    with pytest.raises(TypeError, match="scheduler"):
        DDPMPipeline(unet=pipe.unet)


def test_latent_output_is_the_raw_sample_and_num_timesteps_counts_the_steps(pipe):
    latent = pipe(generator=_gen(), num_inference_steps=3, output_type="latent").images
    pt = pipe(generator=_gen(), num_inference_steps=3, output_type="pt").images
    assert pipe.num_timesteps == 3
    torch.testing.assert_close((latent / 2 + 0.5).clamp(0, 1), pt)
    assert latent.min() < 0  # not post-processed


def test_attention_slicing_checks_its_argument_and_changes_nothing(pipe):
    before = pipe(generator=_gen(), num_inference_steps=2, output_type="np").images
    pipe.enable_attention_slicing(1)
    np.testing.assert_array_equal(pipe(generator=_gen(), num_inference_steps=2, output_type="np").images, before)
    for bad in (0, -1, True, "half", 1.5):
        with pytest.raises(ValueError, match="slice_size"):
            pipe.enable_attention_slicing(bad)
    pipe.disable_attention_slicing()


def test_to_accepts_device_dtype_both_and_keywords(pipe):
    assert pipe.device == torch.device("cpu") and pipe.dtype == torch.float32
    assert pipe.to(torch.float64) is pipe and pipe.dtype == torch.float64
    pipe.to("cpu", torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and pipe.device.type == "cpu"
    pipe.to(device=torch.device("cpu"), dtype=torch.float32)
    assert pipe.dtype == torch.float32
    with pytest.raises(TypeError, match="floating-point"):
        pipe.to(torch.int64)
    with pytest.raises(ValueError, match="not a device"):
        pipe.to("no-such-device")
    with pytest.raises(TypeError, match="device and/or a dtype"):
        pipe.to(1.5)


# ---------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("pipeline_name", sorted(PIPELINES))
@pytest.mark.parametrize("scheduler_name", sorted(SCHEDULERS))
def test_every_scheduler_runs_in_every_pipeline(tiny_repo, pipeline_name, scheduler_name):
    pipe = PIPELINES[pipeline_name].from_pretrained(tiny_repo)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = SCHEDULERS[scheduler_name].from_config(pipe.scheduler.config)
    out = pipe(batch_size=2, generator=_gen(), num_inference_steps=STEPS[scheduler_name], output_type="np")
    size = TINY_UNET_CONFIG["sample_size"]
    assert out.images.shape == (2, size, size, 3) and out.images.dtype == np.float32
    assert np.isfinite(out.images).all() and out.images.min() >= 0 and out.images.max() <= 1
    assert out.images.std() > 0.01  # not a constant image


def test_from_pretrained_builds_the_scheduler_each_pipeline_class_promises(tiny_repo):
    assert type(DDPMPipeline.from_pretrained(tiny_repo).scheduler) is DDPMScheduler
    assert type(DDIMPipeline.from_pretrained(tiny_repo).scheduler) is DDIMScheduler
    assert type(PNDMPipeline.from_pretrained(tiny_repo).scheduler) is PNDMScheduler


def test_scheduler_swap_idiom_keeps_the_noise_schedule(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    assert pipe.scheduler.config.num_train_timesteps == 1000 and pipe.scheduler.config.beta_end == 0.02


def test_output_types_pil_np_pt_and_return_dict_false(pipe):
    pil = pipe(batch_size=2, generator=_gen(), num_inference_steps=2)
    assert isinstance(pil, ImagePipelineOutput) and len(pil.images) == 2 and pil.images[0].mode == "RGB"
    arr = pipe(batch_size=2, generator=_gen(), num_inference_steps=2, output_type="np").images
    pt = pipe(batch_size=2, generator=_gen(), num_inference_steps=2, output_type="pt").images
    assert isinstance(pt, torch.Tensor) and pt.shape == (2, 3, 16, 16) and pt.device == pipe.device
    np.testing.assert_array_equal(pt.permute(0, 2, 3, 1).numpy(), arr)
    assert np.abs(pil_levels(pil.images) - np.round(arr * 255)).max() == 0
    (images,) = pipe(generator=_gen(), num_inference_steps=2, output_type="np", return_dict=False)
    assert isinstance(images, np.ndarray)


def test_default_step_count_comes_from_the_class(tiny_repo, monkeypatch):
    pipe = DDIMPipeline.from_pretrained(tiny_repo)
    pipe.set_progress_bar_config(disable=True)
    monkeypatch.setattr(DDIMPipeline, "default_num_inference_steps", 3)
    pipe(generator=_gen())
    assert len(pipe.scheduler.timesteps) == 3


def test_same_generator_seed_gives_same_images_and_a_generator_list_is_batch_independent(pipe):
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # stochastic steps use the generators too
    a = pipe(batch_size=2, generator=_gen(5), num_inference_steps=3, output_type="np").images
    b = pipe(batch_size=2, generator=_gen(5), num_inference_steps=3, output_type="np").images
    np.testing.assert_array_equal(a, b)
    batch = pipe(batch_size=3, generator=[_gen(s) for s in (7, 8, 9)], num_inference_steps=3, output_type="np").images
    alone = pipe(batch_size=1, generator=[_gen(8)], num_inference_steps=3, output_type="np").images
    np.testing.assert_allclose(batch[1:2], alone, atol=1e-4, rtol=0)  # batched arithmetic rounds differently


def test_global_rng_is_used_without_a_generator(pipe):
    torch.manual_seed(3)
    a = pipe(num_inference_steps=2, output_type="np").images
    torch.manual_seed(3)
    b = pipe(num_inference_steps=2, output_type="np").images
    np.testing.assert_array_equal(a, b)


def test_eta_is_set_for_one_call_and_restored(tiny_repo):
    pipe = DDIMPipeline.from_pretrained(tiny_repo)
    pipe.set_progress_bar_config(disable=True)
    scheduler = pipe.scheduler
    assert isinstance(scheduler, DDIMScheduler) and scheduler.eta == 0.0
    seen = []
    pipe(generator=_gen(), num_inference_steps=2, eta=1.0, callback=lambda *a: seen.append(scheduler.eta))
    assert seen == [1.0, 1.0] and scheduler.eta == 0.0
    deterministic = pipe(generator=_gen(0), num_inference_steps=3, output_type="np").images
    noisy = pipe(generator=_gen(0), num_inference_steps=3, output_type="np", eta=1.0).images
    assert np.abs(deterministic - noisy).max() > 1e-3


def test_eta_with_a_scheduler_without_eta_raises_unless_zero(pipe):
    pipe(generator=_gen(), num_inference_steps=2, eta=0.0)  # accepted and ignored, as diffusers code passes it
    with pytest.raises(ValueError, match="DDIMScheduler"):
        pipe(generator=_gen(), num_inference_steps=2, eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        DDIMPipeline(**pipe.components)(num_inference_steps=2, eta=-1.0)


def test_progress_bar_counts_len_timesteps_and_can_be_disabled(tiny_repo):
    pipe = PNDMPipeline.from_pretrained(tiny_repo)
    stream = io.StringIO()
    pipe.set_progress_bar_config(file=stream, mininterval=0, ascii=True, disable=False)
    pipe(generator=_gen(), num_inference_steps=4)
    n = len(pipe.scheduler.timesteps)
    assert n > 4 and f"{n}/{n}" in stream.getvalue()  # PNDM evaluates the UNet more often than num_inference_steps
    stream = io.StringIO()
    pipe.set_progress_bar_config(file=stream, disable=True)
    pipe(generator=_gen(), num_inference_steps=4)
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------------------------------- callbacks


def test_callback_receives_index_timestep_sample_and_x0_and_can_stop_the_loop(pipe):
    calls = []

    def callback(step, timestep, sample, pred_original_sample):
        calls.append((step, timestep, sample.shape, pred_original_sample.shape))
        return step == 1  # stop after the second step

    stopped = pipe(batch_size=2, generator=_gen(), num_inference_steps=5, output_type="np", callback=callback).images
    timesteps = pipe.scheduler.timesteps.tolist()
    assert [c[0] for c in calls] == [0, 1] and [c[1] for c in calls] == timesteps[:2]
    assert all(isinstance(c[1], int) for c in calls)
    assert calls[0][2] == calls[0][3] == (2, 3, 16, 16)
    full = pipe(batch_size=2, generator=_gen(), num_inference_steps=5, output_type="np").images
    assert np.abs(stopped - full).max() > 1e-3  # the early stop returned the sample after step 1, not the end


def test_callback_returning_none_or_false_continues(pipe):
    steps = []
    pipe(generator=_gen(), num_inference_steps=3, callback=lambda i, *a: steps.append(i))
    assert steps == [0, 1, 2]

    def record_and_continue(i, *args):
        steps.append(i)
        return False

    pipe(generator=_gen(), num_inference_steps=3, callback=record_and_continue)
    assert steps == [0, 1, 2, 0, 1, 2]


def test_callback_on_step_end_gets_requested_tensors_can_replace_latents_and_interrupt(pipe):
    seen = []

    def on_end(p, i, t, kwargs):
        seen.append((i, sorted(kwargs)))
        if i == 1:
            p._interrupt = True
        return {"latents": torch.zeros_like(kwargs["latents"])}

    out = pipe(
        generator=_gen(),
        num_inference_steps=4,
        output_type="np",
        callback_on_step_end=on_end,
        callback_on_step_end_tensor_inputs=["latents", "pred_original_sample"],
    ).images
    assert seen == [(0, ["latents", "pred_original_sample"]), (1, ["latents", "pred_original_sample"])]
    np.testing.assert_array_equal(out, np.full_like(out, 0.5))  # the replaced all-zero sample, post-processed
    assert pipe.interrupt  # stays readable after the call; the next call resets it
    pipe(generator=_gen(), num_inference_steps=1)
    assert not pipe.interrupt
    with pytest.raises(ValueError, match="unknown"):
        pipe(num_inference_steps=1, callback_on_step_end=on_end, callback_on_step_end_tensor_inputs=["noise"])


def test_check_finite_names_the_step_where_nan_appears(pipe):
    def poison(p, i, t, kwargs):
        return {"latents": torch.full_like(kwargs["latents"], float("nan"))} if i == 1 else None

    with pytest.raises(FloatingPointError, match=r"step 2 of 4 \(timestep \d+\)"):
        pipe(generator=_gen(), num_inference_steps=4, callback_on_step_end=poison, check_finite=True)
    out = pipe(generator=_gen(), num_inference_steps=4, callback_on_step_end=poison, output_type="np").images
    assert np.isnan(out).all()  # without the check, NaN flows through silently (as in diffusers)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_below_one_raises(pipe, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=batch_size)


def test_non_integer_batch_size_or_steps_raise_type_error(pipe):
    with pytest.raises(TypeError, match="batch_size"):
        pipe(batch_size=2.0)
    with pytest.raises(TypeError, match="num_inference_steps"):
        pipe(num_inference_steps="10")
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe(num_inference_steps=0)


def test_unknown_output_type_raises_listing_allowed_values(pipe):
    with pytest.raises(ValueError, match="'pil', 'np', 'pt'"):
        pipe(num_inference_steps=1, output_type="numpy")


@pytest.mark.parametrize("n", [1, 3])
def test_generator_list_of_wrong_length_raises(pipe, n):
    with pytest.raises(ValueError, match=f"list of {n} generators for batch_size=2"):
        pipe(batch_size=2, generator=[_gen(i) for i in range(n)], num_inference_steps=1)


def test_generator_list_with_a_non_generator_raises(pipe):
    with pytest.raises(TypeError, match=r"generator\[1\]"):
        pipe(batch_size=2, generator=[_gen(), 3], num_inference_steps=1)


def test_cuda_generator_with_cpu_pipeline_raises(pipe):
    class CudaGenerator(torch.Generator):  # a CPU-only torch cannot make a real one; only .device matters here
        @property
        def device(self):  # type: ignore[override]  # torch's stub calls it writeable; it is read-only
            return torch.device("cuda")

    with pytest.raises(ValueError, match="cuda generator cannot draw noise for a pipeline on cpu"):
        pipe(generator=CudaGenerator(), num_inference_steps=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for a real CUDA generator")
def test_real_cuda_generator_with_cpu_pipeline_raises(pipe):
    with pytest.raises(ValueError, match="cuda generator"):
        pipe(generator=torch.Generator("cuda").manual_seed(0), num_inference_steps=1)


def test_offline_unknown_id_names_the_id_and_the_offline_switch():
    with pytest.raises(CheckpointNotFoundError) as err:
        DDPMPipeline.from_pretrained("nobody/not-cached-anywhere")
    message = str(err.value)
    assert "nobody/not-cached-anywhere" in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(CheckpointNotFoundError, match="local_files_only"):
        DDPMPipeline.from_pretrained("nobody/not-cached-anywhere", local_files_only=True)


def test_missing_local_folder_raises():
    with pytest.raises(CheckpointNotFoundError, match="no such folder"):
        DDPMPipeline.from_pretrained("./definitely/not/here")


# ---------------------------------------------------------------------------------------------- loading variants


def test_from_pretrained_loads_by_hub_id_from_the_offline_cache(tiny_repo, hf_cache):
    install_in_hf_cache(hf_cache, "ddpm-tests/tiny", tiny_repo)
    pipe = DDPMPipeline.from_pretrained("ddpm-tests/tiny", torch_dtype=torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and not pipe.unet.training


def test_missing_model_index_means_unet_plus_scheduler(tmp_path):
    folder = write_tiny_repo(tmp_path / "m", model_index=False)
    pipe = DDPMPipeline.from_pretrained(folder)
    assert type(pipe.scheduler) is DDPMScheduler
    assert type(DiffusionPipeline.from_pretrained(folder)) is DDPMPipeline
    assert type(DDIMPipeline.from_pretrained(folder).scheduler) is DDIMScheduler


def test_model_index_extra_keys_are_ignored_and_the_scheduler_class_is_honoured(tiny_repo, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_repo, folder)
    index = {**MODEL_INDEX, "scheduler": ["diffusers", "DDIMScheduler"], "_name_or_path": "x", "safety": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index))
    assert type(DDPMPipeline.from_pretrained(folder).scheduler) is DDIMScheduler
    assert type(PNDMPipeline.from_pretrained(folder).scheduler) is PNDMScheduler


def test_model_index_with_unsupported_components_raises_config_error(tiny_repo, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_repo, folder)
    (folder / "model_index.json").write_text(json.dumps({**MODEL_INDEX, "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ConfigError, match="UNet2DConditionModel"):
        DDPMPipeline.from_pretrained(folder)
    (folder / "model_index.json").write_text(
        json.dumps({**MODEL_INDEX, "scheduler": ["diffusers", "LMSDiscreteScheduler"]})
    )
    with pytest.raises(ConfigError, match="LMSDiscreteScheduler"):
        DDPMPipeline.from_pretrained(folder)
    assert type(DDIMPipeline.from_pretrained(folder).scheduler) is DDIMScheduler  # converting needs no class match


def test_diffusion_pipeline_from_pretrained_returns_the_class_model_index_names(tiny_repo, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_repo, folder)
    assert type(DiffusionPipeline.from_pretrained(folder)) is DDPMPipeline
    (folder / "model_index.json").write_text(json.dumps({**MODEL_INDEX, "_class_name": "PNDMPipeline"}))
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert type(pipe) is PNDMPipeline and type(pipe.scheduler) is PNDMScheduler


# ---------------------------------------------------------------------------------------------- saving


def test_save_pretrained_writes_the_diffusers_layout_and_reloads_identically(pipe, tmp_path):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    folder = pipe.save_pretrained(tmp_path / "saved")
    assert (folder / "unet" / "config.json").is_file() and (folder / "scheduler" / "scheduler_config.json").is_file()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    again = DDPMPipeline.from_pretrained(folder)
    again.set_progress_bar_config(disable=True)
    assert type(again.scheduler) is DDIMScheduler
    a = pipe(generator=_gen(), num_inference_steps=3, output_type="np").images
    b = again(generator=_gen(), num_inference_steps=3, output_type="np").images
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_save_pretrained_folder_loads_in_diffusers_and_back(pipe, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    folder = pipe.save_pretrained(tmp_path / "ours")
    theirs = diffusers.DDPMPipeline.from_pretrained(folder)
    theirs.set_progress_bar_config(disable=True)
    a = pipe(batch_size=2, generator=_gen(1), num_inference_steps=4, output_type="np").images
    b = theirs(batch_size=2, generator=_gen(1), num_inference_steps=4, output_type="np").images
    np.testing.assert_allclose(a, b, atol=2e-3, rtol=0)

    theirs.save_pretrained(tmp_path / "theirs")
    back = DDPMPipeline.from_pretrained(tmp_path / "theirs")
    back.set_progress_bar_config(disable=True)
    assert isinstance(back.unet, UNet2DModel) and type(back.scheduler) is DDPMScheduler
    c = back(batch_size=2, generator=_gen(1), num_inference_steps=4, output_type="np").images
    np.testing.assert_allclose(a, c, atol=1e-5, rtol=0)
