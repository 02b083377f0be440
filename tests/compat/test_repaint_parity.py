"""RePaintPipeline against diffusers' on the google/ddpm-cifar10-32 and google/ddpm-ema-celebahq-256 layouts (random
weights), where diffusers is right: without jumps, or with one training step per grid step (n = T)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from ddpm import RePaintPipeline, RePaintScheduler  # noqa: E402

from helpers import (  # noqa: E402
    CELEBAHQ_SCHEDULER_CONFIG,
    CELEBAHQ_UNET_CONFIG,
    CIFAR10_SCHEDULER_CONFIG,
    CIFAR10_UNET_CONFIG,
    diffusers_unet,
    write_flat_repo,
)


def _pair(repo, **config):
    ours = RePaintPipeline.from_pretrained(repo)
    if config:
        ours.scheduler = RePaintScheduler.from_config(ours.scheduler.config, **config)
    theirs = diffusers.RePaintPipeline(
        unet=diffusers.UNet2DModel.from_pretrained(repo),
        scheduler=diffusers.RePaintScheduler.from_pretrained(repo, **config),
    )
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def _inputs(size: int):
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(5)) * 2 - 1
    mask = torch.ones(1, 1, size, size)
    mask[..., size // 2 :, :] = 0  # 1 = keep: the bottom half is filled
    return image, mask


def _same(ours, theirs, image, mask, *args):
    a = ours(image, mask, *args, generator=torch.Generator().manual_seed(0), output_type="np").images
    b = theirs(image, mask, *args, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_allclose(a, b, atol=2e-3, rtol=0)
    kept = mask[0, 0].bool().numpy()
    np.testing.assert_allclose(a[0][kept], (image[0].permute(1, 2, 0).numpy()[kept] + 1) / 2, atol=1e-6)


@pytest.mark.slow
def test_cifar10_matches_diffusers(tmp_path):
    unet = diffusers_unet(CIFAR10_UNET_CONFIG, seed=1)
    repo = write_flat_repo(tmp_path, unet, CIFAR10_UNET_CONFIG, CIFAR10_SCHEDULER_CONFIG, weights="bin")
    image, mask = _inputs(32)
    _same(*_pair(repo), image, mask, 2, 1.0, 10, 1)  # n=2, eta=1, no jumps
    _same(*_pair(repo, num_train_timesteps=4), image, mask, 4, 0.0, 1, 2)  # n = T = 4 with jumps


@pytest.mark.slow
def test_celebahq_matches_diffusers(tmp_path):
    unet = diffusers_unet(CELEBAHQ_UNET_CONFIG, seed=2)
    repo = write_flat_repo(tmp_path, unet, CELEBAHQ_UNET_CONFIG, CELEBAHQ_SCHEDULER_CONFIG, weights="bin")
    del unet
    image, mask = _inputs(256)
    _same(*_pair(repo), image, mask, 2, 0.0, 10, 1)  # n=2, batch 1, no jumps: 4 UNet calls in all
