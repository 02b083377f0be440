"""The trainer: exact resume, EMA kept apart from the raw weights, the pipeline folder, schedules and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from ddpm.training import EMA, TrainingConfig, TrainingError, ema_decay, learning_rate_at
from ddpm.training.trainer import CHECKPOINT_NAME

from helpers import tiny_trainer


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = tiny_trainer(tmp_path / "a")
    straight.train()
    first = tiny_trainer(tmp_path / "b")
    first.train(until_step=3)
    assert first.step == 3
    resumed = tiny_trainer(tmp_path / "b", seed=99)  # different init: everything must come from the checkpoint
    resumed.train(resume=True)
    assert resumed.step == straight.step == 6
    for a, b in zip(_params(straight.unet), _params(resumed.unet), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(straight.ema.shadow, resumed.ema.shadow, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.ema.num_updates == 6


def test_checkpoint_keeps_raw_and_ema_weights_apart_and_loads_with_weights_only(tmp_path):
    trainer = tiny_trainer(tmp_path, max_steps=4)
    trainer.train()
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    raw, ema = state["model"], state["ema"]["shadow"]
    assert state["step"] == 4 and state["ema"]["num_updates"] == 4
    name = next(iter(ema))
    torch.testing.assert_close(raw[name], trainer.unet.state_dict()[name])
    assert not torch.equal(raw[name], ema[name]), "EMA weights must differ from the raw ones after a few steps"
    # Training continues on the raw weights: saving the pipeline (EMA) must not have touched the trainee.
    torch.testing.assert_close(dict(trainer.unet.named_parameters())[name].detach(), raw[name])


def test_pipeline_folder_holds_ema_weights_and_loads_in_ddpm_and_diffusers(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from ddpm import DDPMPipeline

    trainer = tiny_trainer(tmp_path, max_steps=4)
    trainer.train()
    assert json.loads((tmp_path / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    ours = DDPMPipeline.from_pretrained(tmp_path)
    theirs = diffusers.DDPMPipeline.from_pretrained(tmp_path)
    for shadow, p in zip(trainer.ema.shadow, ours.unet.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), shadow)
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3, 70])
    with torch.no_grad():
        torch.testing.assert_close(ours.unet(x, t).sample, theirs.unet(x, t).sample, atol=1e-5, rtol=1e-4)
    assert theirs.scheduler.config.num_train_timesteps == ours.scheduler.config.num_train_timesteps == 100
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_0000004.png", "step_0000004_raw.png"]


def test_loss_decreases_on_a_tiny_problem(tmp_path):
    # One fixed image: the denoiser can learn it, so the loss must fall well below its starting value.
    trainer = tiny_trainer(tmp_path, n_images=1, max_steps=60, batch_size=8, learning_rate=3e-3, warmup_steps=5)
    trainer.dataset.images[:] = trainer.dataset.images[0]
    trainer.train()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 60
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    # adam_eps=1 makes Adam's update proportional to the gradient, so float-rounding differences in the summed
    # gradient stay float-rounding-sized instead of being amplified by 1/sqrt(v) where gradients are near zero.
    full = tiny_trainer(tmp_path / "full", max_steps=3, batch_size=4, adam_eps=1.0)
    full.train()
    accumulated = tiny_trainer(tmp_path / "acc", max_steps=3, batch_size=4, grad_accumulation=2, adam_eps=1.0)
    accumulated.train()
    for a, b in zip(_params(full.unet), _params(accumulated.unet), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_other_prediction_types_train_with_finite_loss(tmp_path, prediction_type):
    from ddpm.schedulers import DDPMScheduler

    trainer = tiny_trainer(tmp_path, max_steps=2)
    trainer.noise_scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result["loss"]))


def test_bf16_autocast_trains_on_cpu(tmp_path):
    result = tiny_trainer(tmp_path, max_steps=2, precision="bf16").train()
    assert torch.isfinite(torch.tensor(result["loss"]))
    weights = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["model"]
    assert all(w.dtype == torch.float32 for w in weights.values())


def test_resume_with_a_different_batch_size_is_refused(tmp_path):
    tiny_trainer(tmp_path, max_steps=2).train()
    with pytest.raises(TrainingError, match="batch_size: 4 -> 8"):
        tiny_trainer(tmp_path, max_steps=2, batch_size=8).train(resume=True)


def test_resume_without_a_checkpoint_says_how_to_start(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint.*without --resume"):
        tiny_trainer(tmp_path).train(resume=True)


def test_bad_setups_give_clear_errors(tmp_path):
    with pytest.raises(TrainingError, match="batch_size 5 does not divide into 1 process.*2 accumulation"):
        tiny_trainer(tmp_path, batch_size=5, grad_accumulation=2)
    with pytest.raises(TrainingError, match="fp16.*CUDA"):
        tiny_trainer(tmp_path, precision="fp16")
    from ddpm.errors import ConfigError

    with pytest.raises(ConfigError, match="'precision' has value 'fp8'"):
        TrainingConfig(precision="fp8")  # type: ignore[arg-type]  # an invalid precision, on purpose
    with pytest.raises(ConfigError, match="ema_max_decay"):
        TrainingConfig(ema_max_decay=1.0)


def test_data_that_does_not_fit_the_model_is_refused(tmp_path):
    from ddpm.training import TensorImageDataset, Trainer

    trainer = tiny_trainer(tmp_path)
    rgb = TensorImageDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TrainingError, match=r"uint8 torch.Size|\(3, 8, 8\).*in_channels=1"):
        Trainer(trainer.unet, trainer.noise_scheduler, rgb, trainer.config, tmp_path, device="cpu")


def test_learning_rate_warms_up_linearly_then_decays_by_cosine():
    cfg = TrainingConfig(max_steps=110, warmup_steps=10, learning_rate=1e-3, min_lr_ratio=0.1)
    assert learning_rate_at(0, cfg) == pytest.approx(1e-4)
    assert learning_rate_at(9, cfg) == pytest.approx(1e-3)
    assert learning_rate_at(60, cfg) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway: cos(pi/2) = 0
    assert learning_rate_at(110, cfg) == pytest.approx(1e-4)


def test_ema_decay_warms_up_and_update_is_the_moving_average():
    assert ema_decay(0, inv_gamma=1.0, power=0.75, min_decay=0.0, max_decay=0.999) == 0.0
    assert ema_decay(15, inv_gamma=1.0, power=0.75, min_decay=0.0, max_decay=0.999) == pytest.approx(1 - 16**-0.75)
    assert ema_decay(10**9, inv_gamma=1.0, power=0.75, min_decay=0.0, max_decay=0.999) == 0.999
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, max_decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    assert ema.update(model) == 0.0  # first update copies
    torch.testing.assert_close(ema.shadow[0], torch.ones(1, 2))
    with torch.no_grad():
        model.weight.fill_(3.0)
    decay = ema.update(model)
    assert decay == pytest.approx(1 - 2**-0.75)  # below the 0.5 ceiling
    torch.testing.assert_close(ema.shadow[0], torch.full((1, 2), decay * 1.0 + (1 - decay) * 3.0))
    for _ in range(20):
        ema.update(model)
    assert ema.current_decay() == 0.5
