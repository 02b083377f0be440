"""DDIMInversionPipeline: invert then reconstruct gives the image back (more steps, closer), slerp, interpolation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ddpm import DDIMInversionPipeline, DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from ddpm.outputs import UNet2DOutput
from ddpm.pipelines.inversion import slerp

from helpers import CIFAR10_SCHEDULER_CONFIG, TINY_UNET_CONFIG


class GaussianDenoiser(UNet2DModel):
    """The exact ε-predictor of data x_0 ~ N(0, s² I): ε(x_t, t) = sqrt(1 - ᾱ_t) x_t / (ᾱ_t s² + 1 - ᾱ_t).

    A smooth model whose ODE the DDIM steps only approximate, at the cost of a multiplication (a tiny UNet's
    config, its weights unused)."""

    s2 = 0.25

    def forward(self, sample: torch.Tensor, timestep: Any, *args: Any, **kwargs: Any) -> UNet2DOutput:
        alpha_bar = float(DDPMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG).alphas_cumprod[int(timestep)])
        eps = (1 - alpha_bar) ** 0.5 * sample / (alpha_bar * self.s2 + 1 - alpha_bar)
        return UNet2DOutput(sample=eps)


@pytest.fixture(scope="module")
def pipe() -> DDIMInversionPipeline:
    torch.manual_seed(0)
    unet = GaussianDenoiser.from_config({**TINY_UNET_CONFIG, "sample_size": 8}).eval()
    pipeline = DDIMInversionPipeline(unet=unet, scheduler=DDPMScheduler.from_config(CIFAR10_SCHEDULER_CONFIG))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _image(seed: int = 0, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)  # smooth images in [-1, 1]: a blurred random field
    x = torch.nn.functional.avg_pool2d(torch.rand(batch, 3, 12, 12, generator=g), 5, 1) * 2 - 1
    return x.clamp(-1, 1)


def test_round_trip_gives_the_image_back_and_the_error_shrinks_with_the_step_count(
    pipe: DDIMInversionPipeline,
) -> None:
    x0 = _image()
    errors = {}
    for steps in (2, 8, 32):
        noise = pipe.invert(x0, steps)
        assert noise.shape == x0.shape
        back = pipe.reconstruct(noise, steps, output_type="pt").images * 2 - 1
        errors[steps] = float((back - x0).abs().max())
    assert errors[32] < 0.05, errors  # exact up to the discretisation of the ODE (first order: ~1/n)
    assert errors[32] < errors[8] < errors[2], errors  # and the discretisation error falls with the step count


def test_the_chain_is_unclamped_and_deterministic_whatever_the_checkpoint_config(pipe: DDIMInversionPipeline) -> None:
    assert pipe.scheduler.config.clip_sample  # the google/ddpm config clamps x̂_0 when sampling ...
    ddim, inverse = pipe.ode_schedulers()
    assert not ddim.config.clip_sample and not ddim.config.thresholding and ddim.eta == 0
    assert not inverse.config.clip_sample  # ... the ODE does not (diffusers#5703, #6634)
    x0 = _image(1, 1)
    assert torch.equal(pipe.invert(x0, 3), pipe.invert(x0, 3))
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = pipe(noise=noise, num_inference_steps=3, output_type="pt").images
    reference = DDIMPipeline(unet=pipe.unet, scheduler=DDIMScheduler.from_config(ddim.config))
    reference.set_progress_bar_config(disable=True)
    seeded = reference(generator=torch.Generator().manual_seed(3), num_inference_steps=3, output_type="pt").images
    torch.testing.assert_close(ours, seeded)  # noise=x_T is DDIM from x_T; the same seed draws the same x_T


def test_slerp_ends_at_its_inputs_and_keeps_the_norm_of_equal_norm_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    b = b * (a.flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).reshape(2, 1, 1, 1)  # equal norms, per sample
    torch.testing.assert_close(slerp(0.0, a, b), a)
    torch.testing.assert_close(slerp(1.0, a, b), b)
    for alpha in (0.25, 0.5, 0.9):
        mid = slerp(alpha, a, b)
        torch.testing.assert_close(mid.flatten(1).norm(dim=1), a.flatten(1).norm(dim=1))
    lerp = (a + b) / 2
    assert (lerp.flatten(1).norm(dim=1) < a.flatten(1).norm(dim=1) * 0.9).all()  # what slerp avoids
    torch.testing.assert_close(slerp(0.3, a, a), a)  # parallel vectors: no division by sin 0


def test_interpolate_decodes_the_slerp_of_two_seeds_or_two_inverted_images(pipe: DDIMInversionPipeline) -> None:
    frames = pipe.interpolate(1, 2, num_frames=4, num_inference_steps=2, output_type="pt").images
    assert frames.shape == (4, 3, 8, 8)
    shape = (1, 3, 8, 8)
    n1 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    n2 = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    path = torch.cat([slerp(a, n1, n2) for a in torch.linspace(0, 1, 4).tolist()])
    torch.testing.assert_close(frames, pipe(noise=path, num_inference_steps=2, output_type="pt").images)
    x0 = _image(2, 1)
    mixed = pipe.interpolate(x0, 2, num_frames=3, num_inference_steps=2, output_type="pt").images
    expected_start = pipe.reconstruct(pipe.invert(x0, 2), 2, output_type="pt").images
    torch.testing.assert_close(mixed[:1], expected_start)
    torch.testing.assert_close(mixed[2:], frames[3:])


def test_it_loads_like_any_pipeline_and_builds_from_another_pipelines_parts(pipe: DDIMInversionPipeline) -> None:
    other = DDPMPipeline(**pipe.components)
    built = DDIMInversionPipeline(**other.components)
    assert built.unet is pipe.unet
    bundled = DDIMInversionPipeline.from_pretrained("ddpm-mnist")
    assert isinstance(bundled.scheduler, DDIMScheduler)


def test_bad_calls_are_refused_before_any_work(pipe: DDIMInversionPipeline) -> None:
    with pytest.raises(ValueError, match="num_frames must be from 2 to 1000"):
        pipe.interpolate(1, 2, num_frames=1)
    with pytest.raises(ValueError, match="eta=0.5"):
        pipe(noise=torch.zeros(1, 3, 8, 8), eta=0.5)
    with pytest.raises(ValueError, match=r"needs \(B, 3, 8, 8\)"):
        pipe(noise=torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="one image per end point"):
        pipe.interpolate(_image(0, 2), 3, num_frames=2)
