"""torch.compile sees the UNet as one graph with no break, in inference and in training.

The eager inference fast paths (ddpm.models.optimizations) write in place, view through ``as_strided`` and cache
folded weights; under dynamo the blocks must trace their plain forward instead, so that inductor gets the whole
network to fuse.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo

from ddpm import UNet2DModel

from helpers import TINY_UNET_CONFIG

# Every block type (DownBlock2D, AttnDownBlock2D, UNetMidBlock2D with attention, AttnUpBlock2D, UpBlock2D), a 1×1
# shortcut, a downsampler, an upsampler, and dropout for training mode.
CONFIG = {**TINY_UNET_CONFIG, "dropout": 0.1}

MODES: dict[str, tuple[bool, Callable[[], contextlib.AbstractContextManager[Any]]]] = {
    "eval-no_grad": (False, torch.no_grad),
    "eval-inference_mode": (False, torch.inference_mode),
    "train-grad": (True, contextlib.nullcontext),
}


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    return UNet2DModel.from_config(CONFIG)


# Each mode with scheduler-style timesteps, and the other timestep forms in inference.
CASES = [pytest.param(mode, torch.tensor([3, 900]), id=f"{mode}-1d-int") for mode in MODES] + [
    pytest.param("eval-no_grad", timestep, id=f"eval-no_grad-{name}")
    for name, timestep in [("0d-int", torch.tensor(500)), ("1d-float", torch.tensor([7.5, 250.0])), ("int", 10)]
]


@pytest.mark.parametrize(("mode", "timestep"), CASES)
def test_unet_is_one_graph_without_breaks(unet: UNet2DModel, mode: str, timestep: Any) -> None:
    training, context = MODES[mode]
    unet.train(training)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    with context():
        explanation = torch._dynamo.explain(unet)(x, timestep)
    reasons = [str(b.reason) for b in explanation.break_reasons]
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), reasons


def test_checkpointed_training_is_one_graph_without_breaks() -> None:
    unet = UNet2DModel.from_config(CONFIG).train()
    unet.enable_gradient_checkpointing()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(unet)(x, torch.tensor([3, 900]))
    reasons = [str(b.reason) for b in explanation.break_reasons]
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), reasons
