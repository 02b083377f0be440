"""RePaintScheduler and RePaintPipeline: the walk, the step against diffusers where diffusers is right, undo_step
against the paper, the known region, the mask conventions and the refusals (tiny UNet, 16x16)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

diffusers = pytest.importorskip("diffusers")

from ddpm import DDIMScheduler, ImageError, RePaintPipeline, RePaintScheduler  # noqa: E402
from ddpm.schedulers.repaint import resampling_schedule  # noqa: E402

from helpers import CIFAR10_SCHEDULER_CONFIG, pil_levels, write_tiny_repo  # noqa: E402

SHAPE = (2, 3, 8, 8)


def _fake_eps(x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    return 0.1 * x + float(t) / 1000  # deterministic, depends on x and t


def _walk_both(ours, theirs, n, j, r, eta, with_mask=True):
    """The diffusers loop over both schedulers' walks with the same fake model; yields (ours, theirs) samples."""
    ours.set_timesteps(n, j, r)
    theirs.set_timesteps(n, j, r)
    theirs.eta = ours.eta = eta
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    original = torch.rand(SHAPE, generator=g) * 2 - 1
    mask = (torch.rand(SHAPE[0], 1, *SHAPE[2:], generator=g) > 0.5).float()
    x = y = torch.randn(SHAPE, generator=g)
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    t_last = int(ours.timesteps[0]) + 1
    for t in ours.timesteps.tolist():
        if t < t_last:
            x = ours.step(_fake_eps(x, t), t, x, original, mask, ga).prev_sample
            y = theirs.step(_fake_eps(y, t), t, y, original, mask, gb).prev_sample
        else:
            x = ours.undo_step(x, t_last, ga)
            y = theirs.undo_step(y, t_last, gb)
        t_last = t
        yield x, y
    assert with_mask
    np.testing.assert_array_equal((x * mask).numpy(), (original * mask).numpy())  # the known region, exactly


# ------------------------------------------------------------------------------------------------ the scheduler


@pytest.mark.parametrize("n,j,r", [(1, 10, 10), (2, 1, 2), (3, 1, 3), (7, 2, 3), (25, 5, 3), (250, 10, 10)])
def test_walk_is_diffusers_timesteps(n, j, r):
    ours, theirs = RePaintScheduler(), diffusers.RePaintScheduler()
    ours.set_timesteps(n, j, r)
    theirs.set_timesteps(n, j, r)
    assert ours.timesteps.tolist() == theirs.timesteps.tolist()
    walk = resampling_schedule(n, j, r)
    ups = sum(b > a for a, b in zip(walk, walk[1:]))
    assert ups == j * (r - 1) * len(range(0, n - j, j)) and walk[-1] == 0


@pytest.mark.parametrize(
    "n,j,r,eta,T",
    [(4, 2, 1, 0.0, 1000), (5, 2, 1, 1.0, 1000), (12, 3, 3, 0.0, 12), (12, 2, 2, 1.0, 12), (9, 4, 2, 0.5, 9)],
)
def test_steps_match_diffusers_where_diffusers_is_right(n, j, r, eta, T):
    """No jumps (r = 1), or one training step per grid step (n = T): diffusers' undo_step is right there."""
    ours, theirs = RePaintScheduler(num_train_timesteps=T), diffusers.RePaintScheduler(num_train_timesteps=T)
    for x, y in _walk_both(ours, theirs, n, j, r, eta):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5, rtol=0)


def test_undo_step_is_the_forward_process_between_grid_points_and_diffusers_is_late():
    """x at s_{k-1} -> x at s_k: sqrt(ᾱ_{s_k} / ᾱ_{s_{k-1}}) x + sqrt(1 - ᾱ_{s_k} / ᾱ_{s_{k-1}}) z (Alg. 1 line 10)."""
    ours, theirs = RePaintScheduler(), diffusers.RePaintScheduler()
    ours.set_timesteps(50, 5, 2)  # 20 training steps per grid step
    theirs.set_timesteps(50, 5, 2)
    walk = resampling_schedule(50, 5, 2)
    up = next(i for i in range(1, len(walk)) if walk[i] > walk[i - 1])  # the first jump up
    s = 20 * walk[up - 1]  # undo_step(x, s) at this entry: x at s_{k-1} = s - 20 -> x at s_k = s (t_last)
    s_prev = s - 20
    ab = ours.alphas_cumprod.double()
    ratio = float(ab[s] / ab[s_prev])
    x = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(0))
    ours._step_index = up
    a = ours.undo_step(x, s, torch.Generator().manual_seed(3))
    ours._step_index = up
    b = ours.undo_step(2 * x, s, torch.Generator().manual_seed(3))
    np.testing.assert_allclose((b - a).numpy(), (ratio**0.5 * x).numpy(), atol=1e-5)  # the mean's factor
    noise = a - ratio**0.5 * x
    assert abs(float(noise.var()) / (1 - ratio) - 1) < 0.05  # the variance, from 16384 values (σ ≈ 1.1%)
    # diffusers noises with β_s ... β_{s+19} instead of β_{s-19} ... β_s: 19 training steps late
    c = theirs.undo_step(2 * x, s, torch.Generator().manual_seed(3)) - theirs.undo_step(
        x, s, torch.Generator().manual_seed(3)
    )
    late = float((ab[s + 19] / ab[s - 1]) ** 0.5)
    np.testing.assert_allclose(c.numpy(), (late * x).numpy(), atol=1e-5)
    assert abs(late - ratio**0.5) > 1e-3


def test_step_without_the_known_image_is_the_ddim_step():
    """The one-signature form: step(eps, t, x, generator=g) works and is DDIM's Eq. 12 step with the same η."""
    ours, ddim = RePaintScheduler(), DDIMScheduler(eta=0.5)
    ours.eta = 0.5
    ours.set_timesteps(10, jump_n_sample=1)
    ddim.set_timesteps(10)
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    ga, gb = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t in ours.timesteps:
        x = ours.step(_fake_eps(x, t), t, x, generator=ga).prev_sample
        y = ddim.step(_fake_eps(y, t), t, y, generator=gb).prev_sample
    np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)


def test_scheduler_refuses_misuse():
    scheduler = RePaintScheduler.from_config(CIFAR10_SCHEDULER_CONFIG)
    assert scheduler.config.clip_sample is True and scheduler.eta == 0.0
    with pytest.raises(ValueError, match="larger than num_train_timesteps=1000"):
        scheduler.set_timesteps(1001)
    with pytest.raises(ValueError, match="jump_length must be at least 1"):
        scheduler.set_timesteps(10, 0)
    with pytest.raises(ValueError, match=r"eta must be a number in \[0, 1\]"):
        scheduler.eta = 2.0
    scheduler.set_timesteps(4, 1, 2)  # walk 3 2 1 0 1 0 ... : positions
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="original_image and mask together"):
        scheduler.step(x, 750, x, x)
    with pytest.raises(ValueError, match="is a step down: call step"):
        scheduler.undo_step(x, 750)
    t_values = scheduler.timesteps.tolist()
    up = next(i for i in range(1, len(t_values)) if t_values[i] > t_values[i - 1])
    for t in t_values[:up]:
        x = scheduler.step(_fake_eps(x, t), t, x).prev_sample
    with pytest.raises(ValueError, match="goes back up the schedule"):
        scheduler.step(x, t_values[up], x)
    with pytest.raises(ValueError, match="pass the previous entry of timesteps"):
        scheduler.undo_step(x, t_values[up])
    with pytest.raises(ValueError, match="not on the grid"):
        scheduler.undo_step(x, 3)
    fresh = RePaintScheduler()
    fresh.set_timesteps(4, 1, 2)
    with pytest.raises(ValueError, match="walk starts at its first entry"):
        fresh.step(x, 0, x)


def test_eta_is_an_attribute_and_configs_swap(tmp_path):
    scheduler = RePaintScheduler(eta=0.3, beta_end=0.012)
    scheduler.save_pretrained(tmp_path)
    loaded = RePaintScheduler.from_pretrained(tmp_path)
    assert loaded.config.beta_end == 0.012 and loaded.eta == 0.0
    assert "eta" not in json.loads((tmp_path / "scheduler_config.json").read_text())
    assert DDIMScheduler.from_config(loaded.config).config.beta_end == 0.012
    theirs = diffusers.RePaintScheduler.from_pretrained(tmp_path)
    assert theirs.config.beta_end == 0.012


# ------------------------------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    return write_tiny_repo(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pipes(tiny_repo):
    ours = RePaintPipeline.from_pretrained(tiny_repo)
    ours.set_progress_bar_config(disable=True)
    theirs = diffusers.RePaintPipeline(
        unet=diffusers.UNet2DModel.from_pretrained(tiny_repo),
        scheduler=diffusers.RePaintScheduler.from_pretrained(tiny_repo),
    )
    theirs.set_progress_bar_config(disable=True)
    return ours, theirs


def _inputs(batch: int = 1, size: int = 16):
    g = torch.Generator().manual_seed(7)
    levels = (torch.rand(batch, size, size, 3, generator=g) * 255).round().to(torch.uint8).numpy()
    images = [Image.fromarray(a) for a in levels]
    mask = np.full((size, size), 255, np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 :] = 0  # black: the part to fill
    return images, Image.fromarray(mask), levels


def test_pipeline_matches_diffusers_and_keeps_the_known_region(pipes):
    """PIL in for ddpm; tensors for diffusers, whose PIL path scales a 16x16 mask to a multiple of 32: 0x0."""
    ours, theirs = pipes
    images, mask, levels = _inputs()
    image_t = torch.from_numpy(levels.astype(np.float32) / 255.0 * 2 - 1).permute(0, 3, 1, 2)
    mask_t = torch.from_numpy(np.asarray(mask) >= 128).float()[None, None]
    for kwargs in ({"num_inference_steps": 3, "jump_n_sample": 1}, {"num_inference_steps": 5, "eta": 1.0}):
        a = ours(images[0], mask, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images
        b = theirs(image_t, mask_t, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs).images
        np.testing.assert_allclose(a, b, atol=2e-3, rtol=0)  # no jumps: j=10 > n
    pil = ours(images[0], mask, 4, 0.0, 2, 2, torch.Generator().manual_seed(0)).images[0]
    kept = np.asarray(mask) >= 128
    assert np.abs(pil_levels([pil])[0][kept] - levels[0][kept]).max() <= 1
    assert np.abs(pil_levels([pil])[0][~kept] - levels[0][~kept]).max() > 10  # the hole was filled


def test_pipeline_matches_diffusers_with_jumps_when_every_training_step_is_on_the_grid(tiny_repo, pipes):
    ours, theirs = pipes
    config = {"num_train_timesteps": 5}
    scheduler = RePaintScheduler.from_config(ours.scheduler.config, **config)
    ours8 = RePaintPipeline(unet=ours.unet, scheduler=scheduler)  # type: ignore[arg-type]
    theirs.scheduler = diffusers.RePaintScheduler.from_pretrained(tiny_repo, **config)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.ones(1, 1, 16, 16)
    mask[..., 8:] = 0
    args = (image, mask, 5, 0.5, 2, 2)
    a = ours8(*args, generator=torch.Generator().manual_seed(0), output_type="np").images
    b = theirs(*args, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_allclose(a, b, atol=2e-3, rtol=0)


def test_generator_list_each_image_its_own_and_masks_per_image(pipes):
    """Image i depends only on generator i (diffusers steps every image with the first generator), and a list of
    masks gives each image its own (diffusers' (B, H, W) mask broadcasts against the channels instead)."""
    ours, theirs = pipes
    images, mask, _ = _inputs(batch=2)
    other = Image.fromarray(255 - np.asarray(mask))
    kwargs = {"num_inference_steps": 3, "jump_length": 1, "jump_n_sample": 2, "output_type": "np"}
    gens = [torch.Generator().manual_seed(10 + i) for i in range(2)]
    both = ours(images, [mask, other], generator=gens, **kwargs).images
    for i, m in enumerate((mask, other)):
        alone = ours(images[i], m, generator=torch.Generator().manual_seed(10 + i), **kwargs).images
        np.testing.assert_allclose(both[i], alone[0], atol=1e-4)  # batched vs single UNet rounding
    masks = torch.from_numpy(np.stack([np.asarray(m) >= 128 for m in (mask, other)])).float()  # (2, 16, 16)
    with pytest.raises(RuntimeError):  # diffusers' PIL masks are (B, H, W): against (2, 3, 16, 16) images
        theirs(torch.zeros(2, 3, 16, 16), masks, generator=gens, **kwargs)


def test_mask_means_fill_is_the_inverted_mask(pipes):
    ours, _ = pipes
    images, mask, _ = _inputs()
    inverted = Image.fromarray(255 - np.asarray(mask))
    kwargs = {"num_inference_steps": 2, "jump_n_sample": 1, "output_type": "np"}
    a = ours(images[0], mask, generator=torch.Generator().manual_seed(0), **kwargs).images
    b = ours(images[0], inverted, generator=torch.Generator().manual_seed(0), mask_means="fill", **kwargs).images
    np.testing.assert_array_equal(a, b)


def test_sizes_diffusers_cannot_run_and_refusals(pipes):
    """A 40x40 image: diffusers scales the image to a multiple of 8 (40) and the mask to one of 32 (32) and fails;
    ddpm keeps both as they are. A mask of another size is refused, never resized."""
    ours, theirs = pipes
    images, _, _ = _inputs(size=40)
    mask = np.full((40, 40), 255, np.uint8)
    mask[20:] = 0
    with pytest.raises(RuntimeError):
        theirs(images[0], Image.fromarray(mask), num_inference_steps=2, jump_n_sample=1)
    out = ours(images[0], Image.fromarray(mask), num_inference_steps=2, jump_n_sample=1).images[0]
    assert out.size == (40, 40)
    small = Image.fromarray(mask[:32, :32])
    with pytest.raises(ImageError, match="mask_image is 32x32 .* but the image is 40x40"):
        ours(images[0], small, num_inference_steps=2)
    with pytest.raises(ImageError, match="the mask marks nothing to fill"):
        ours(images[0], Image.fromarray(np.full((40, 40), 255, np.uint8)), num_inference_steps=2)
    with pytest.raises(ImageError, match="multiples of 2"):
        ours(torch.zeros(1, 3, 15, 15), torch.zeros(1, 1, 15, 15), num_inference_steps=2)
    with pytest.raises(ImageError, match="got 2 masks for 1 images"):
        ours(images[0], [Image.fromarray(mask)] * 2, num_inference_steps=2)
    with pytest.raises(ValueError, match="mask_means must be 'keep' or 'fill'"):
        ours(images[0], Image.fromarray(mask), mask_means="white")
    with pytest.raises(ValueError, match="larger than num_train_timesteps"):
        ours(images[0], Image.fromarray(mask), num_inference_steps=1001)


# ------------------------------------------------------------------------------------- reconstruction guidance


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_output_from_x0_inverts_predict_x0(prediction_type):
    from ddpm.schedulers.math import output_from_x0, predict_x0

    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64), torch.randn(2, 3, 4, 4, generator=g).double()
    a, b = 0.6**0.5, 0.4**0.5
    x0 = predict_x0(out, x, a, b, prediction_type)
    torch.testing.assert_close(output_from_x0(x0, x, a, b, prediction_type), out, rtol=0, atol=1e-12)


def test_guided_output_moves_the_fill_down_the_reconstruction_gradient(pipes):
    """Ho et al. 2022, Eq. 7: x̃_0 = x̂_0 - (w sqrt(ᾱ_t) / 2) (1 - m) ⊙ ∇_{x_t} ||m ⊙ (y - x̂_0)||². The gradient
    read back from the guided output is checked against central finite differences of the loss (float64), along
    directions inside the hole; the kept part of x̂_0 does not move."""
    import copy

    from ddpm.schedulers.math import predict_x0

    ours, _ = pipes
    scheduler = RePaintScheduler.from_config(ours.scheduler.config, clip_sample=False)  # the bare gradient step
    pipe = RePaintPipeline(unet=copy.deepcopy(ours.unet).double(), scheduler=scheduler)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    keep = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    keep[..., 8:, :] = 0
    t, w = 600, 10.0
    alpha_bar = float(pipe.scheduler.alphas_cumprod[t])
    a, b = alpha_bar**0.5, (1 - alpha_bar) ** 0.5

    def x0_of(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return predict_x0(pipe.unet(z, t).sample, z, a, b, "epsilon")

    def loss(z: torch.Tensor) -> float:
        return float((keep * (y - x0_of(z))).square().sum())

    guided = predict_x0(pipe._guided_output(x, torch.tensor(t), t, y, keep, w), x, a, b, "epsilon")
    step = guided - x0_of(x)
    torch.testing.assert_close(step * keep, torch.zeros_like(step), rtol=0, atol=1e-12)  # the kept part stays
    gradient = -step * 2 / (w * a)  # (1 - m) ⊙ ∇ loss
    assert float(gradient.abs().max()) > 1e-6  # the hole does move
    for seed in range(3):
        v = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * (1 - keep)
        h = 1e-5
        numeric = (loss(x + h * v) - loss(x - h * v)) / (2 * h)
        assert abs(float((gradient * v).sum()) - numeric) <= 1e-6 * max(1.0, abs(numeric))
    pipe.scheduler = RePaintScheduler.from_config(scheduler.config, clip_sample=True)
    clipped = predict_x0(pipe._guided_output(x, torch.tensor(t), t, y, keep, 1e4), x, a, b, "epsilon")
    assert float(clipped.abs().max()) <= 1 + 1e-9  # clipped as the step clips x̂_0, so ε and x̂_0 agree
    assert float((clipped - x0_of(x)).abs().max()) > 0.1


def test_reconstruction_guidance_keeps_the_known_region_and_zero_is_plain_repaint(pipes):
    ours, _ = pipes
    images, mask, levels = _inputs()
    kwargs = {"num_inference_steps": 4, "jump_length": 2, "jump_n_sample": 2, "eta": 1.0, "output_type": "np"}
    plain = ours(images[0], mask, generator=torch.Generator().manual_seed(0), **kwargs).images
    zero = ours(images[0], mask, generator=torch.Generator().manual_seed(0), reconstruction_guidance=0, **kwargs)
    np.testing.assert_array_equal(plain, zero.images)
    guided = ours(images[0], mask, generator=torch.Generator().manual_seed(0), reconstruction_guidance=10, **kwargs)
    kept = np.asarray(mask) >= 128
    got = np.round(guided.images[0] * 255)
    assert np.isfinite(guided.images).all()
    assert np.abs(got[kept] - levels[0][kept]).max() <= 1
    assert np.abs(guided.images[0][~kept] - plain[0][~kept]).max() > 1e-3  # the guidance changed the fill
    for bad in (-1, float("nan"), float("inf"), True, "10"):
        with pytest.raises(ValueError, match="reconstruction_guidance must be a finite number >= 0"):
            ours(images[0], mask, num_inference_steps=2, reconstruction_guidance=bad)


def test_reconstruction_guidance_on_the_fast_path_with_a_half_unet(tiny_repo):
    """enable_fast_sampling casts the UNet to bf16 while x_t stays float32: the guided call casts at the UNet."""
    pipe = RePaintPipeline.from_pretrained(tiny_repo)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_fast_sampling(torch.bfloat16)
    images, mask, levels = _inputs()
    out = pipe(images[0], mask, 3, 1.0, 1, 1, torch.Generator().manual_seed(0), "np", reconstruction_guidance=10)
    kept = np.asarray(mask) >= 128
    assert np.isfinite(out.images).all()
    assert np.abs(np.round(out.images[0] * 255)[kept] - levels[0][kept]).max() <= 1
