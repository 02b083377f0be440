"""``ddpm sample --scheduler NAME`` for the ten sampler names, on the bundled model; ``ddpm info``'s sampler list."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.commands._sampling import DEFAULT_SCHEDULER, default_steps
from ddpm.commands.sample import MANIFEST_NAME
from ddpm.schedulers import SCHEDULERS
from ddpm.schedulers.presets import SAMPLER_PRESETS

#: Tiny step counts: PNDM's Runge-Kutta warm-up needs 4 steps (13 calls); Heun makes 3 calls of 2 steps.
STEPS = {"pndm": 4}


@pytest.mark.parametrize("name", list(SAMPLER_PRESETS))
def test_each_sampler_name_makes_an_image_on_the_bundled_model(name, tmp_path, capsys, monkeypatch):
    """With the preset's class and keys, built from the model's config, on the model's own DDPMPipeline."""
    import ddpm.commands.sample as sample_command

    loaded: list = []
    load = sample_command.load_pipeline

    def recording_load(*args):
        loaded.append(load(*args))
        return loaded[-1]

    monkeypatch.setattr(sample_command, "load_pipeline", recording_load)
    out = tmp_path / name
    steps = STEPS.get(name, 2)
    argv = ["sample", "--scheduler", name, "--steps", str(steps), "--seed", "3", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    with Image.open(out / "000000.png") as img:
        assert img.size == (32, 32)
        levels = np.asarray(img, dtype=np.int64)
    assert levels.std() > 10  # an image with content, not a flat field
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert (manifest["scheduler"], manifest["steps"], manifest["seed"]) == (name, steps, 3)
    assert manifest["eta"] == (0.0 if name == "ddim" else None)  # the η of the samplers that have one
    assert "1 image in" in capsys.readouterr().out
    (pipe,) = loaded
    preset = SAMPLER_PRESETS[name]
    assert type(pipe).__name__ == "DDPMPipeline" and type(pipe.scheduler) is SCHEDULERS[preset.scheduler]
    assert {k: pipe.scheduler.config[k] for k in preset.overrides} == dict(preset.overrides)
    model_config = (
        SCHEDULERS["ddpm"].from_pretrained("ddpm-mnist", subfolder="scheduler").config
    )  # the model's noise schedule is kept
    assert all(pipe.scheduler.config[k] == model_config[k] for k in ("beta_schedule", "beta_end", "prediction_type"))


def test_an_unknown_scheduler_is_a_usage_error_that_lists_the_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--scheduler", "lms"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'lms'" in err and all(f"'{name}'" in err for name in SAMPLER_PRESETS)


@pytest.mark.parametrize("name", [n for n in SAMPLER_PRESETS if n != "ddim"])
def test_eta_with_a_sampler_without_eta_is_refused_before_any_work(name, tmp_path, capsys):
    assert main(["sample", "--scheduler", name, "--eta", "0.5", "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"--eta 0.5 applies only to --scheduler ddim (got --scheduler {name}, which has no eta); drop --eta" in err
    assert not (tmp_path / "o").exists()


def test_info_lists_every_sampler_with_class_default_steps_and_a_line(capsys):
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("samplers (ddpm sample --scheduler NAME; --steps N overrides the default steps):")
    listed = lines[start + 1 : start + 1 + len(SAMPLER_PRESETS)]
    for line, preset in zip(listed, SAMPLER_PRESETS.values()):
        name, rest = line.split(maxsplit=1)
        assert name == preset.name and rest.startswith(SCHEDULERS[preset.scheduler].__name__)
        assert f", {preset.default_steps} steps  {preset.description}" in rest
    assert main(["info", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)["schedulers"]
    assert [s["name"] for s in listing] == list(SAMPLER_PRESETS)
    assert listing[3]["overrides"] == {"algorithm_type": "dpmsolver++", "solver_order": 2}


def test_the_default_sampler_is_a_preset_with_its_steps_in_the_help():
    import argparse

    from ddpm.commands.sample import add_parser

    args = add_parser(argparse.ArgumentParser().add_subparsers()).parse_args([])
    assert args.scheduler == DEFAULT_SCHEDULER and args.steps is None
    help_text = " ".join(add_parser(argparse.ArgumentParser().add_subparsers()).format_help().split())
    assert f"(default: {DEFAULT_SCHEDULER}, {default_steps(DEFAULT_SCHEDULER)} steps;" in help_text
