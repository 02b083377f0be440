"""The ``ddpm`` command-line tool: sample (files, grid, batch-size independence, resume, torchrun sharding) and info."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.commands.sample import MANIFEST_NAME

from helpers import CIFAR10_SCHEDULER_CONFIG, CIFAR10_UNET_CONFIG, MODEL_INDEX, install_in_hf_cache, write_tiny_repo

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    return write_tiny_repo(tmp_path_factory.mktemp("tiny"))


def _levels(folder: Path, n: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{i:06d}.png"), dtype=np.int64) for i in range(n)])


def _sample(repo, out, *extra: str) -> int:
    return main(
        ["sample", str(repo), "--scheduler", "ddpm", "--steps", "3", "--out", str(out), "--no-progress", *extra]
    )


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def test_sample_writes_one_png_per_image_a_grid_and_says_where(tiny_repo, tmp_path, capsys):
    out, grid = tmp_path / "out", tmp_path / "grid.png"
    assert _sample(tiny_repo, out, "--num-images", "5", "--batch-size", "2", "--grid", str(grid)) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(5)] + [MANIFEST_NAME]
    with Image.open(out / "000000.png") as img:
        assert img.size == (16, 16) and img.mode == "RGB"
    with Image.open(grid) as g:
        assert g.size == (3 * 16, 2 * 16)  # 5 images: 2 rows of 3
        first = np.asarray(g)[:16, :16]
    np.testing.assert_array_equal(first, _levels(out, 1)[0])
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed and str(grid.resolve()) in printed and "5 new" in printed
    assert json.loads((out / MANIFEST_NAME).read_text())["steps"] == 3


def test_sample_images_do_not_depend_on_batch_size(tiny_repo, tmp_path):
    assert _sample(tiny_repo, tmp_path / "b1", "--num-images", "4", "--batch-size", "1") == 0
    assert _sample(tiny_repo, tmp_path / "b3", "--num-images", "4", "--batch-size", "3") == 0
    a, b = _levels(tmp_path / "b1", 4), _levels(tmp_path / "b3", 4)
    # Image i depends on seed+i only; batched arithmetic may round a rare pixel to the neighbouring level.
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99
    assert np.abs(a[0] - a[1]).max() > 10  # different seeds give different images


def test_sample_resumes_by_skipping_existing_images_and_only_makes_missing_ones(tiny_repo, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sample(tiny_repo, out, "--num-images", "4", "--batch-size", "4") == 0
    before = _levels(out, 4)
    (out / "000002.png").unlink()
    marker = (out / "000000.png").stat().st_mtime_ns
    capsys.readouterr()
    assert _sample(tiny_repo, out, "--num-images", "6", "--batch-size", "4") == 0
    assert "3 new, 3 already there" in capsys.readouterr().out
    assert (out / "000000.png").stat().st_mtime_ns == marker  # untouched
    after = _levels(out, 6)
    assert np.abs(after[:4] - before).max() <= 1  # the regenerated image 2 is the same image
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left behind


def test_sample_refuses_to_resume_with_other_settings(tiny_repo, tmp_path, capsys):
    out = tmp_path / "out"
    assert _sample(tiny_repo, out) == 0
    assert _sample(tiny_repo, out, "--seed", "1") == 1
    err = capsys.readouterr().err
    assert "seed: 0 -> 1" in err and "another --out" in err


def test_sample_eta_with_a_non_ddim_scheduler_is_an_error(tiny_repo, tmp_path, capsys):
    assert _sample(tiny_repo, tmp_path / "o", "--eta", "0.5") == 1
    assert "--eta" in capsys.readouterr().err
    assert (
        main(
            [
                "sample",
                str(tiny_repo),
                "--scheduler",
                "ddim",
                "--steps",
                "2",
                "--eta",
                "1",
                "--no-progress",
                "--out",
                str(tmp_path / "ddim"),
            ]
        )
        == 0
    )


def test_sample_without_model_and_no_bundled_model_explains(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ddpm.hub.BUNDLED_MODELS", {})
    assert main(["sample", "--out", str(tmp_path)]) == 1
    assert "MODEL is required" in capsys.readouterr().err


def test_sample_offline_unknown_id_fails_with_the_offline_message(tmp_path, capsys):
    assert main(["sample", "nobody/nothing", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "nobody/nothing" in err and "HF_HUB_OFFLINE" in err


def test_bad_option_values_are_usage_errors(tiny_repo):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(tiny_repo), "--num-images", "0"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["sample", str(tiny_repo), "--scheduler", "lms"])


def test_info_works_offline_on_a_cached_id(hf_cache, tmp_path, capsys):
    # Only the small files are cached (as after an earlier `ddpm info`): no weights.
    source = tmp_path / "source"
    source.mkdir()
    for name, data in (
        ("config.json", CIFAR10_UNET_CONFIG),
        ("scheduler_config.json", CIFAR10_SCHEDULER_CONFIG),
        ("model_index.json", MODEL_INDEX),
    ):
        (source / name).write_text(json.dumps(data))
    install_in_hf_cache(hf_cache, "ddpm-tests/cifar-configs", source)
    assert main(["info", "ddpm-tests/cifar-configs"]) == 0
    text = capsys.readouterr().out
    assert "35,746,307 parameters" in text  # google/ddpm-cifar10-32's UNet (143 MB of float32 weights)
    assert "DDPMPipeline" in text and "DDPMScheduler" in text and "weights not downloaded" in text
    assert 'variance_type: "fixed_large"' in text and "model_index.json" in text


def test_info_json_reports_parameters_and_files_of_a_folder(tiny_repo, capsys):
    from ddpm import UNet2DModel

    assert main(["info", str(tiny_repo), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    unet = UNet2DModel.from_pretrained(tiny_repo)
    assert info["unet"]["parameters"] == sum(p.numel() for p in unet.parameters())
    assert info["weights_cached"] is True
    names = sorted(Path(f["path"]).name for f in info["files"])
    assert names == ["config.json", "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"]
    assert info["scheduler"]["class"] == "DDPMScheduler" and info["scheduler"]["config"]["prediction_type"] == "epsilon"


def test_python_dash_m_ddpm_runs_the_tool():
    result = subprocess.run(
        [sys.executable, "-m", "ddpm", "--help"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert result.returncode == 0 and "sample" in result.stdout and "info" in result.stdout


def test_torchrun_two_processes_write_the_same_files_as_one(tiny_repo, tmp_path):
    args = [
        str(tiny_repo),
        "--scheduler",
        "ddim",
        "--steps",
        "3",
        "--eta",
        "1",
        "--num-images",
        "5",
        "--batch-size",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    one = tmp_path / "one"
    assert main(["sample", *args, "--out", str(one)]) == 0
    two = tmp_path / "two"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "ddpm",
        "sample",
        *args,
        "--out",
        str(two),
        "--grid",
        str(tmp_path / "grid.png"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in two.glob("*.png")) == [f"{i:06d}.png" for i in range(5)]
    assert result.stdout.count("ddpm sample: 5 images in") == 1  # only rank 0 reports
    a, b = _levels(one, 5), _levels(two, 5)
    assert np.abs(a - b).max() <= 1 and (a == b).mean() > 0.99
    assert (tmp_path / "grid.png").is_file()
