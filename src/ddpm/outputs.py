"""Output containers returned by models, schedulers and pipelines.

They are small frozen dataclasses with the attribute names diffusers users know (``.sample``, ``.prev_sample``,
``.pred_original_sample``, ``.images``). Each also unpacks and indexes like a tuple, so ``out[0]`` works as in
diffusers; pass ``return_dict=False`` for a plain tuple.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

__all__ = ["BaseOutput", "ImagePipelineOutput", "SchedulerOutput", "UNet2DOutput"]


class BaseOutput:
    """Tuple-like access for output dataclasses: ``out[0]``, ``a, b = out`` and ``out.to_tuple()``."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def __getitem__(self, index: int | str) -> Any:
        if isinstance(index, str):
            return getattr(self, index)
        return self.to_tuple()[index]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.to_tuple())

    def __len__(self) -> int:
        return len(self.to_tuple())


@dataclasses.dataclass(frozen=True)
class UNet2DOutput(BaseOutput):
    """Output of :meth:`ddpm.UNet2DModel.forward`.

    Attributes:
        sample: The model prediction, shape (B, out_channels, H, W).
    """

    sample: torch.Tensor


@dataclasses.dataclass(frozen=True)
class SchedulerOutput(BaseOutput):
    """Output of every scheduler's ``step()``.

    Attributes:
        prev_sample: x_{t-1}, the sample for the next step, shape (B, C, H, W), in the input sample's dtype.
        pred_original_sample: The model's estimate of x_0 at this step, same shape and dtype.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


@dataclasses.dataclass(frozen=True)
class ImagePipelineOutput(BaseOutput):
    """Output of a pipeline call.

    Attributes:
        images: A list of PIL images (``output_type="pil"``), an NHWC float32 numpy array in [0, 1] (``"np"``),
            or an NCHW tensor in [0, 1] (``"pt"``).
    """

    images: Any
