"""UNet2DModel's config surface against diffusers: the same script on both libraries, results compared (issue 12).

For each config family (diffusers' default and LDM test configs, class conditioning in its three forms, the learned
time embedding, scale_shift with resnet resamplers, NCSN++ Skip blocks with the Fourier embedding): the same seed
builds the same weights, a diffusers state dict loads strictly and gives the same output (<= 1e-4 fp32), and
gradients with checkpointing equal the plain path's and diffusers'.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import diffusers
import pytest
import torch

import ddpm

from helpers import perturb_

ATOL = 1e-4  # the project's fp32 parity budget for the UNet

NCSNPP = {
    # The layout of the google/ncsnpp-* repos (Skip blocks, Fourier embedding, norm_num_groups null), tiny.
    "block_out_channels": [32, 32, 64],
    "layers_per_block": 1,
    "time_embedding_type": "fourier",
    "norm_eps": 1e-6,
    "mid_block_scale_factor": math.sqrt(2.0),
    "norm_num_groups": None,
    "attention_head_dim": None,
    "flip_sin_to_cos": True,
    "freq_shift": 1,
    "down_block_types": ["SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"],
    "up_block_types": ["SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"],
}
SMALL = {
    "block_out_channels": [16, 32],
    "norm_num_groups": 8,
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}
CONFIGS: dict[str, dict[str, Any]] = {
    # diffusers' own test configs (tests/models/unets/test_models_unet_2d.py); all run at 8 px.
    "default": {**SMALL, "block_out_channels": [4, 8], "norm_num_groups": 2, "attention_head_dim": 3},
    "ldm": {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 64],
        "attention_head_dim": 32,
        "down_block_types": ["DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"],
    },
    "class-table": {**SMALL, "num_class_embeds": 5},
    "class-timestep-learned": {
        **SMALL,
        "class_embed_type": "timestep",
        "time_embedding_type": "learned",
        "num_train_timesteps": 50,
        "add_attention": False,
    },
    "class-identity-scale-shift-resnet-resamplers": {
        **SMALL,
        "class_embed_type": "identity",
        "time_embedding_dim": 40,
        "down_block_types": ["AttnDownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D"],
        "resnet_time_scale_shift": "scale_shift",
        "downsample_type": "resnet",
        "upsample_type": "resnet",
    },
    "ncsnpp-class": {**NCSNPP, "class_embed_type": "timestep"},
}
BATCH = 2
SIZE = 8


def _inputs(config: dict[str, Any]) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    sample = torch.randn(BATCH, config.get("in_channels", 3), SIZE, SIZE, generator=g)
    # Noise levels σ for the Fourier embedding, timestep indices otherwise.
    fourier = config.get("time_embedding_type") == "fourier"
    inputs: dict[str, Any] = {"sample": sample, "timestep": torch.tensor([0.3, 4.0] if fourier else [3, 40])}
    if config.get("num_class_embeds"):
        inputs["class_labels"] = torch.tensor([1, 4])
    elif config.get("class_embed_type") == "timestep":
        inputs["class_labels"] = torch.tensor([2.0, 7.0]) if fourier else torch.tensor([2, 7])
    elif config.get("class_embed_type") == "identity":
        inputs["class_labels"] = torch.randn(BATCH, config["time_embedding_dim"], generator=g)
    return inputs


def _build(library: Any, config: dict[str, Any], seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return library.UNet2DModel(**config)


def _grads(model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad()
    torch.manual_seed(3)  # the same dropout masks on both sides
    out = model(**inputs).sample
    loss = (out - torch.linspace(-1, 1, out.numel()).view_as(out)).square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_seed_same_weights_and_diffusers_weights_give_the_same_output(name: str) -> None:
    config = CONFIGS[name]
    theirs, ours = _build(diffusers, config).eval(), _build(ddpm, config).eval()
    # torch.manual_seed(0); UNet2DModel(**config) draws diffusers' initial weights, under the same names.
    expected_state, state = theirs.state_dict(), ours.state_dict()
    assert sorted(state) == sorted(expected_state)
    assert [k for k in expected_state if not torch.equal(expected_state[k], state[k])] == []

    # A diffusers state dict (perturbed so that no weight hides behind its initial 1 or 0) loads strictly.
    with torch.no_grad():
        perturb_(theirs, seed=5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    inputs = _inputs(config)
    one_t = {**inputs, "timestep": inputs["timestep"][:1]}  # one timestep for the batch
    with torch.no_grad():
        expected, got = theirs(**inputs).sample, ours(**inputs).sample
        expected_one_t, got_one_t = theirs(**one_t, return_dict=False)[0], ours(**one_t, return_dict=False)[0]
    assert (got.shape, got.dtype) == (expected.shape, torch.float32)
    assert (got - expected).abs().max() <= ATOL
    assert (got_one_t - expected_one_t).abs().max() <= ATOL


@pytest.mark.parametrize(
    "name",
    ["class-identity-scale-shift-resnet-resamplers", pytest.param("ncsnpp-class", marks=pytest.mark.slow)],
)
def test_checkpointed_gradients_equal_the_plain_path_and_diffusers(name: str) -> None:
    config = CONFIGS[name]
    with torch.no_grad():
        theirs = perturb_(_build(diffusers, config), seed=2)
    ours = _build(ddpm, config)
    ours.load_state_dict(theirs.state_dict())
    inputs = _inputs(config)

    loss_theirs, grads_theirs = _grads(theirs, inputs)
    loss_plain, grads_plain = _grads(ours, inputs)
    assert not ours.is_gradient_checkpointing
    ours.enable_gradient_checkpointing()
    assert ours.is_gradient_checkpointing
    loss_ckpt, grads_ckpt = _grads(ours, inputs)
    ours.disable_gradient_checkpointing()
    assert not ours.is_gradient_checkpointing

    assert sorted(grads_plain) == sorted(grads_ckpt) == sorted(grads_theirs)
    assert torch.allclose(loss_plain, loss_ckpt, atol=1e-6) and torch.allclose(loss_plain, loss_theirs, atol=1e-5)
    for key, grad in grads_plain.items():
        assert torch.allclose(grad, grads_ckpt[key], atol=1e-6), key
        assert torch.allclose(grad, grads_theirs[key], atol=5e-5), key


@pytest.mark.parametrize("name", ["default", "ncsnpp-class"])
def test_the_same_blocks_checkpoint_as_in_diffusers(name: str) -> None:
    flagged: list[set[str]] = []
    for library in (diffusers, ddpm):
        model = _build(library, CONFIGS[name])
        assert library.UNet2DModel._supports_gradient_checkpointing is True
        model.enable_gradient_checkpointing()
        flagged.append({type(m).__name__ for m in model.modules() if getattr(m, "gradient_checkpointing", False)})
    assert flagged[0] == flagged[1]


@pytest.mark.parametrize("name", ["class-table", "default"])
def test_class_labels_missing_or_unexpected_raise_value_error_in_both(name: str) -> None:
    config = CONFIGS[name]
    inputs = _inputs(config)
    if name == "default":
        inputs["class_labels"] = torch.tensor([0, 1])
    else:
        del inputs["class_labels"]
    for library in (diffusers, ddpm):
        with pytest.raises(ValueError, match="class"), torch.no_grad():
            _build(library, config)(**inputs)


@pytest.mark.parametrize("name", ["ncsnpp-class"])
def test_saved_folders_load_both_ways(name: str, tmp_path: Path) -> None:
    config = CONFIGS[name]
    with torch.no_grad():
        theirs: Any = perturb_(_build(diffusers, config), seed=4).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    ours = ddpm.UNet2DModel.from_pretrained(tmp_path / "theirs").eval()
    ours.save_pretrained(tmp_path / "ours")
    back = diffusers.UNet2DModel.from_pretrained(tmp_path / "ours").eval()
    inputs = _inputs(config)
    with torch.no_grad():
        expected = theirs(**inputs).sample
        assert (ours(**inputs).sample - expected).abs().max() <= ATOL
        assert (back(**inputs).sample - expected).abs().max() == 0
