"""``ddpm train`` and ``ddpm evaluate`` from the command line."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ddpm.cli import main

TINY_MODEL_FLAGS = [
    "--resolution",
    "8",
    "--channels",
    "8,16",
    "--norm-groups",
    "4",
    "--precision",
    "fp32",
    "--batch-size",
    "4",
    "--no-progress",
    "--sample-every",
    "0",
    "--num-samples",
    "4",
    "--sample-steps",
    "2",
    "--log-every",
    "1",
]


def _image_folder(folder, n=6):
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        pixels = torch.randint(0, 256, (12, 10, 3), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return folder


def test_train_writes_a_pipeline_and_resume_continues_it(tmp_path, capsys):
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "2", *TINY_MODEL_FLAGS]) == 0
    unet_config = json.loads((out / "unet" / "config.json").read_text())
    assert unet_config["block_out_channels"] == [8, 16] and unet_config["in_channels"] == 3
    assert unet_config["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--no-progress"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert "step 4" in capsys.readouterr().err


def test_train_refuses_bad_input_with_a_message(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(out), *TINY_MODEL_FLAGS]) == 1
    assert "no such folder" in capsys.readouterr().err
    data = _image_folder(tmp_path / "images")
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--out",
                str(out),
                "--channels",
                "8,12",
                "--resolution",
                "8",
                "--norm-groups",
                "8",
            ]
        )
        == 1
    )
    assert "--norm-groups 8 must divide" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "1", *TINY_MODEL_FLAGS]) == 0
    assert main(["train", "--data", str(data), "--out", str(out), *TINY_MODEL_FLAGS]) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume", "--channels", "8,32"]) == 1
    assert "--resume keeps the saved model; drop --channels" in capsys.readouterr().err


def test_evaluate_prints_generated_and_reference_rows(tmp_path, capsys):
    from ddpm.training.data import mnist_digits

    images, _ = mnist_digits("train")
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(0, 4000, 100):  # 40 digits, every class
        Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:04d}.png")
    assert main(["evaluate", str(folder), "--json", str(tmp_path / "scores.json"), "--draws", "2"]) == 0
    table = capsys.readouterr().out
    assert "| generated | 40 |" in table and "| real (train split, mean of 2) | 40 |" in table
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["generated"]["n"] == 40 and sum(scores["generated"]["class_counts"]) == 40


def test_train_model_defaults_come_from_model_spec(capsys):
    from ddpm.training import ModelSpec

    spec = ModelSpec()
    config = spec.unet_config(32, 1)
    assert config["block_out_channels"] == [32, 64, 128] and config["layers_per_block"] == 1
    assert config["down_block_types"] == ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]  # attention: lowest level
    assert config["norm_num_groups"] == 8 and config["attention_head_dim"] is None
    scheduler = spec.noise_scheduler().config
    assert (scheduler.num_train_timesteps, scheduler.beta_schedule, scheduler.prediction_type) == (
        1000,
        "linear",
        "epsilon",
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 32,64,128)" in text and "(default: 32)" in text and "(default: linear," in text
