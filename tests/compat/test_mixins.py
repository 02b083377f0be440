"""save_config / load_config / push_to_hub: the same calls on diffusers and ddpm objects, files readable both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import diffusers
import pytest

import ddpm


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler", "PNDMScheduler"])
def test_scheduler_save_config_load_config_both_ways(tmp_path: Path, name: str) -> None:
    ours = getattr(ddpm, name)(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    theirs = getattr(diffusers, name)(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    ours.save_config(tmp_path / "ours")
    theirs.save_config(tmp_path / "theirs")
    # Each library reads the other's file; the dicts agree on every key both write.
    from_theirs = getattr(ddpm, name).load_config(tmp_path / "theirs")
    from_ours = getattr(diffusers, name).load_config(tmp_path / "ours")
    assert getattr(ddpm, name).config_name == getattr(diffusers, name).config_name
    for key in ("beta_schedule", "prediction_type", "num_train_timesteps"):
        assert from_theirs[key] == from_ours[key] == dict(theirs.config)[key]
    rebuilt = getattr(diffusers, name).from_config(from_ours)
    assert rebuilt.config.prediction_type == "v_prediction"
    assert getattr(ddpm, name).from_config(from_theirs).config.beta_schedule == "squaredcos_cap_v2"


def test_load_config_return_forms_and_missing_file(tmp_path: Path) -> None:
    ddpm.DDIMScheduler().save_config(tmp_path)
    config, unused = ddpm.DDIMScheduler.load_config(tmp_path, return_unused_kwargs=True, foo=1)
    assert unused == {"foo": 1} and config["_class_name"] == "DDIMScheduler"
    assert ddpm.DDIMScheduler.load_config(tmp_path / "scheduler_config.json") == config
    (tmp_path / "empty").mkdir()
    with pytest.raises(ddpm.CheckpointNotFoundError, match="scheduler_config.json"):
        ddpm.DDIMScheduler.load_config(tmp_path / "empty")


def test_save_config_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ddpm.OverwriteError, match="is a file"):
        ddpm.DDPMScheduler().save_config(target)


def test_push_to_hub_uploads_what_save_pretrained_writes(tmp_path: Path) -> None:
    seen: dict[str, list[str]] = {}

    def upload_folder(**kwargs: object) -> str:
        seen["files"] = sorted(p.name for p in Path(str(kwargs["folder_path"])).iterdir())
        seen["message"] = [str(kwargs["commit_message"])]
        return "commit"

    with mock.patch("huggingface_hub.HfApi") as api:
        api.return_value.create_repo.return_value.repo_id = "me/sched"
        api.return_value.upload_folder.side_effect = upload_folder
        assert ddpm.DDIMScheduler().push_to_hub("me/sched", private=True) == "commit"
    api.return_value.create_repo.assert_called_once_with("me/sched", private=True, exist_ok=True)
    assert seen == {"files": ["scheduler_config.json"], "message": ["Upload DDIMScheduler"]}


def test_model_register_to_config_and_config_attributes_like_diffusers(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "sample_size": 8,
        "block_out_channels": (32, 32),
        "down_block_types": ("DownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "norm_num_groups": 8,
    }
    for lib in (diffusers, ddpm):
        model = lib.UNet2DModel(**kwargs)
        model.register_to_config(test_attribute=5)
        with pytest.warns(FutureWarning):
            assert model.test_attribute == 5
        with pytest.raises(AttributeError, match="'UNet2DModel' object has no attribute 'does_not_exist'"):
            model.does_not_exist  # noqa: B018
        model.save_config(tmp_path / lib.__name__)
    # the registered key is written to config.json by both
    for lib in (diffusers, ddpm):
        assert ddpm.UNet2DModel.load_config(tmp_path / lib.__name__)["test_attribute"] == 5
    with pytest.raises(ValueError, match="cannot change 'sample_size'"):
        ddpm.UNet2DModel(**kwargs).register_to_config(sample_size=16)
