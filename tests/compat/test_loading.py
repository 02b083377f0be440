"""from_pretrained / save_pretrained call forms and outputs: the same calls on diffusers and ddpm, files read both ways.

Each test runs one diffusers call form on both libraries and compares: the files one library writes load in the
other, and the loaded UNets give the same outputs as the reference (fp32 CPU, <= 1e-4). Hub ids resolve from the
offline test cache (HF_HUB_OFFLINE=1, HF_HUB_CACHE in a temporary folder; tests/conftest.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from unittest import mock

import diffusers
import pytest
import torch

import ddpm
from ddpm.errors import VariantNotFoundError
from ddpm.models.loading import weights_writers

from helpers import TINY_UNET_CONFIG, diffusers_unet, install_in_hf_cache

ATOL = 1e-4
#: Every block type of the google/ddpm-* UNets, at 8x8 with 16/32 channels: 0.7 MB of float32 weights.
CONFIG = {**TINY_UNET_CONFIG, "block_out_channels": [16, 32], "norm_num_groups": 8, "sample_size": 8}
#: Shards of at most 250 kB: three or more.
SHARD = "250KB"


@pytest.fixture(scope="module")
def reference() -> Any:
    """The oracle: a small diffusers UNet with perturbed random weights."""
    return diffusers_unet(CONFIG, seed=3)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # (B, C, H, W)


def _max_diff(model: Any, reference: Any, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x.to(model.dtype), 7).sample.float() - reference(x, 7).sample).abs().max().item()


def _shape_of_names(folder: Path) -> list[str]:
    """The kinds of file names in the folder: shard numbers blanked (``-00001-of-00003`` -> ``-#-of-#``).

    (How many shards there are depends on the order of the tensors; ``test_shards_group_the_tensors_as_diffusers_does``
    checks the grouping itself.)
    """
    return sorted({re.sub(r"-\d{5}-of-\d{5}", "-#-of-#", p.name) for p in folder.iterdir()})


SAVE_FORMS = [  # the default form is in the tests below
    {"variant": "fp16"},
    {"safe_serialization": False, "variant": "fp16"},
    {"max_shard_size": SHARD, "variant": "fp16"},
    {"max_shard_size": SHARD, "safe_serialization": False},
]


@pytest.mark.parametrize("save", SAVE_FORMS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_model_save_forms_write_the_same_files_and_load_both_ways(
    save: dict[str, Any], reference: Any, x: torch.Tensor, tmp_path: Path
) -> None:
    load = {"variant": save["variant"]} if "variant" in save else {}
    # diffusers reads a sharded .bin checkpoint only when told not to look for safetensors.
    their_load = {**load, "use_safetensors": save.get("safe_serialization", True)}
    reference.save_pretrained(tmp_path / "theirs", **save)
    ours = ddpm.UNet2DModel.from_pretrained(tmp_path / "theirs", **load)
    assert _max_diff(ours, reference, x) <= ATOL

    ours.save_pretrained(tmp_path / "ours", **save)
    assert _shape_of_names(tmp_path / "ours") == _shape_of_names(tmp_path / "theirs")
    theirs = diffusers.UNet2DModel.from_pretrained(tmp_path / "ours", **their_load)
    assert _max_diff(theirs, reference, x) <= ATOL
    if "max_shard_size" in save:
        index = next((tmp_path / "ours").glob("*.index*.json"))
        data = json.loads(index.read_text())
        assert set(data) == {"metadata", "weight_map"} and set(data["weight_map"]) == set(ours.state_dict())
        assert data["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in ours.state_dict().values())


@pytest.mark.parametrize(("safe", "variant"), [(True, None), (False, "fp16")])
def test_shards_group_the_tensors_as_diffusers_does(reference: Any, tmp_path: Path, safe: bool, variant: str) -> None:
    reference.save_pretrained(tmp_path, max_shard_size=SHARD, safe_serialization=safe, variant=variant)
    index_name = (
        f"diffusion_pytorch_model.{'safetensors' if safe else 'bin'}.index{'.' + variant if variant else ''}.json"
    )
    theirs = json.loads((tmp_path / index_name).read_text())
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    files = weights_writers(state, safe_serialization=safe, variant=variant, max_shard_size=SHARD)
    assert set(files) == {*theirs["weight_map"].values(), index_name}
    written = tmp_path / "ours"
    written.mkdir()
    files[index_name](written / index_name)
    assert (written / index_name).read_text() == (tmp_path / index_name).read_text()  # byte for byte


def test_a_save_replaces_the_weights_of_its_variant_only(reference: Any, tmp_path: Path, x: torch.Tensor) -> None:
    ours = ddpm.UNet2DModel.from_pretrained(_saved_by_diffusers(reference, tmp_path))
    folder = tmp_path / "ours"
    ours.save_pretrained(folder, max_shard_size=SHARD)
    ours.save_pretrained(folder, variant="fp16")
    ours.save_pretrained(folder, safe_serialization=False)  # replaces the plain shards and their index
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.safetensors",
    ]
    for lib in (ddpm, diffusers):
        assert _max_diff(lib.UNet2DModel.from_pretrained(folder), reference, x) <= ATOL


def _diffusers_pipeline(unet: Any) -> Any:
    return diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler())


def _saved_by_diffusers(reference: Any, tmp_path: Path, **save: Any) -> Path:
    folder = tmp_path / "theirs"
    reference.save_pretrained(folder, **save)
    return folder


@pytest.mark.parametrize(
    "kwargs",
    [
        {"torch_dtype": torch.float16, "low_cpu_mem_usage": False},
        {"dtype": torch.float16, "low_cpu_mem_usage": True, "device_map": "cpu"},
        {"torch_dtype": torch.bfloat16, "dtype": torch.bfloat16},
    ],
    ids=["torch_dtype", "dtype", "both-equal"],
)
def test_dtype_spellings_give_diffusers_parameters(kwargs: dict[str, Any], reference: Any, tmp_path: Path) -> None:
    folder = _saved_by_diffusers(reference, tmp_path)
    theirs = diffusers.UNet2DModel.from_pretrained(folder, **kwargs)
    ours = ddpm.UNet2DModel.from_pretrained(folder, **kwargs)
    assert ours.dtype == theirs.dtype == next(v for k, v in kwargs.items() if k.endswith("dtype"))
    assert ours.device == theirs.device == torch.device("cpu")
    their_state = theirs.state_dict()
    assert all(torch.equal(v, their_state[k]) for k, v in ours.state_dict().items())


def test_dtype_and_torch_dtype_that_differ_are_refused(reference: Any, tmp_path: Path) -> None:
    folder = _saved_by_diffusers(reference, tmp_path)
    # diffusers silently lets dtype win; ddpm refuses the contradiction.
    assert diffusers.UNet2DModel.from_pretrained(folder, torch_dtype=torch.float16, dtype=torch.bfloat16).dtype == (
        torch.bfloat16
    )
    with pytest.raises(ValueError, match="disagree"):
        ddpm.UNet2DModel.from_pretrained(folder, torch_dtype=torch.float16, dtype=torch.bfloat16)


def test_device_map_forms(reference: Any, tmp_path: Path, x: torch.Tensor) -> None:
    folder = _saved_by_diffusers(reference, tmp_path)
    for device_map in (torch.device("cpu"), {"": "cpu"}):
        for lib in (ddpm, diffusers):
            model = lib.UNet2DModel.from_pretrained(folder, device_map=device_map)
            assert model.device == torch.device("cpu") and _max_diff(model, reference, x) <= ATOL


def test_device_map_auto_is_the_one_device(reference: Any, tmp_path: Path) -> None:
    model = ddpm.UNet2DModel.from_pretrained(_saved_by_diffusers(reference, tmp_path), device_map="auto")
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert all(p.device == model.device for p in model.parameters())


def test_variant_errors_name_the_files_present(reference: Any, tmp_path: Path) -> None:
    folder = _saved_by_diffusers(reference, tmp_path, variant="fp16")
    for lib in (ddpm, diffusers):  # the plain weights are not there: both raise an OSError
        with pytest.raises(OSError):
            lib.UNet2DModel.from_pretrained(folder)
    with pytest.raises(OSError, match=r"diffusion_pytorch_model\.fp16\.safetensors \(variant 'fp16': pass"):
        ddpm.UNet2DModel.from_pretrained(folder)
    with pytest.raises(VariantNotFoundError, match="the folder holds diffusion_pytorch_model.fp16.safetensors"):
        ddpm.UNet2DModel.from_pretrained(folder, variant="ema")


def test_hub_repo_forms_from_the_offline_cache(reference: Any, hf_cache: str, tmp_path: Path, x: torch.Tensor) -> None:
    """A pipeline-layout Hub repo whose UNet is sharded in an fp16 variant, read by id from the cache."""
    repo = tmp_path / "repo"
    _diffusers_pipeline(reference).save_pretrained(repo, variant="fp16", max_shard_size=SHARD)
    assert len(list((repo / "unet").glob("*.fp16-*-of-*.safetensors"))) >= 3
    install_in_hf_cache(hf_cache, "ddpm-tests/sharded-fp16", repo)
    hub = {"subfolder": "unet", "variant": "fp16", "cache_dir": hf_cache, "local_files_only": True}
    for lib in (ddpm, diffusers):
        model = lib.UNet2DModel.from_pretrained("ddpm-tests/sharded-fp16", revision="main", token=False, **hub)
        assert _max_diff(model, reference, x) <= ATOL
        pipe = lib.DDIMPipeline.from_pretrained("ddpm-tests/sharded-fp16", variant="fp16", dtype=torch.float16)
        assert pipe.unet.dtype == torch.float16


def test_pipeline_forms_load_both_ways(reference: Any, tmp_path: Path, x: torch.Tensor) -> None:
    save: dict[str, Any] = {"variant": "fp16", "max_shard_size": SHARD}
    load: dict[str, Any] = {"variant": "fp16"}
    _diffusers_pipeline(reference).save_pretrained(tmp_path / "theirs", **save)
    dtypes = {"unet": torch.float16, "default": torch.float32}
    ours = ddpm.DDPMPipeline.from_pretrained(
        tmp_path / "theirs", torch_dtype=dtypes, device_map="cpu", low_cpu_mem_usage=True, **load
    )
    assert ours.unet.dtype == torch.float16
    ours.unet.float()
    assert _max_diff(ours.unet, reference.half().float(), x) <= ATOL  # fp16 round trip on both sides
    ours.save_pretrained(tmp_path / "ours", **save)
    assert _shape_of_names(tmp_path / "ours" / "unet") == _shape_of_names(tmp_path / "theirs" / "unet")
    theirs = diffusers.DDPMPipeline.from_pretrained(tmp_path / "ours", dtype=dtypes, **load)
    assert theirs.unet.dtype == torch.float16
    assert _max_diff(theirs.unet.float(), reference.half().float(), x) <= ATOL


def test_pipeline_variant_that_is_absent_raises_value_error_as_in_diffusers(reference: Any, tmp_path: Path) -> None:
    _diffusers_pipeline(reference).save_pretrained(tmp_path)
    for lib in (ddpm, diffusers):
        with pytest.raises(ValueError):
            lib.DDPMPipeline.from_pretrained(tmp_path, variant="fp16")


def test_outputs_answer_like_diffusers_base_output(reference: Any, x: torch.Tensor, tmp_path: Path) -> None:
    ours = ddpm.UNet2DModel.from_pretrained(_saved_by_diffusers(reference, tmp_path))
    with torch.no_grad():
        pair = [m(x, 7) for m in (ours, reference)]
    for out in pair:
        assert list(out.keys()) == ["sample"] and len(out) == 1 and "sample" in out
        assert out["sample"] is out.sample is out[0] is out.to_tuple()[0] is next(iter(out.values()))
        assert [k for k, _ in out.items()] == ["sample"]
    assert torch.allclose(pair[0]["sample"], pair[1]["sample"], atol=ATOL)
    steps = []
    for lib in (ddpm, diffusers):
        scheduler = lib.DDPMScheduler()
        scheduler.set_timesteps(10)
        steps.append(scheduler.step(x, scheduler.timesteps[0], x, generator=torch.Generator().manual_seed(0)))
    assert list(steps[0].keys()) == list(steps[1].keys()) == ["prev_sample", "pred_original_sample"]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(steps[0].values(), steps[1].values()))
    with pytest.raises(KeyError):
        pair[0]["prev_sample"]


@pytest.mark.parametrize("what", ["model", "pipeline"])
def test_save_pretrained_push_to_hub_uploads_the_saved_folder(what: str, reference: Any, tmp_path: Path) -> None:
    ours = ddpm.UNet2DModel.from_pretrained(_saved_by_diffusers(reference, tmp_path))
    obj: Any = ours if what == "model" else ddpm.DDPMPipeline(unet=ours, scheduler=ddpm.DDPMScheduler())
    seen: dict[str, Any] = {}

    def upload_folder(**kwargs: Any) -> str:
        seen.update(kwargs, files=sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()))
        return "commit"

    with mock.patch("huggingface_hub.HfApi") as api:
        api.return_value.create_repo.return_value.repo_id = "me/tiny"
        api.return_value.upload_folder.side_effect = upload_folder
        obj.save_pretrained(tmp_path / "out", push_to_hub=True, repo_id="me/tiny", private=True, variant="fp16")
    api.return_value.create_repo.assert_called_once_with("me/tiny", private=True, exist_ok=True)
    assert seen["repo_id"] == "me/tiny" and seen["commit_message"] == f"Upload {type(obj).__name__}"
    assert Path(seen["folder_path"]) == tmp_path / "out"
    expected = ["config.json", "diffusion_pytorch_model.fp16.safetensors"]
    assert seen["files"] == (expected if what == "model" else ["model_index.json", "scheduler", "unet"])
