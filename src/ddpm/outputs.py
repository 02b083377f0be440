"""Output containers returned by models, schedulers and pipelines.

They are small frozen dataclasses with the attribute names diffusers users know (``.sample``, ``.prev_sample``,
``.pred_original_sample``, ``.images``), typed and immutable. Each also answers the ways diffusers' ``BaseOutput``
is used:

* by name: ``out.sample``, ``out["sample"]``, ``"sample" in out``, ``out.keys()``, ``out.values()``, ``out.items()``;
* by position: ``out[0]``, ``out[:1]``, ``len(out)``, ``out.to_tuple()``, and unpacking ``a, b = out``.

As in diffusers, a field that is None is left out of all of these (so ``to_tuple()`` holds only the values that
are set). Unlike diffusers (whose outputs are dicts), iterating yields the values, as a tuple does, not the keys; and
the fields cannot be reassigned. Pass ``return_dict=False`` for a plain tuple.
"""

from __future__ import annotations

import dataclasses
from collections.abc import ItemsView, Iterator, KeysView, ValuesView
from typing import Any

import torch

__all__ = ["BaseOutput", "ImagePipelineOutput", "SchedulerOutput", "UNet2DOutput"]


class BaseOutput:
    """Dict- and tuple-like access for the output dataclasses (see the module docstring)."""

    def _set(self) -> dict[str, Any]:
        """Field name -> value, for the fields that are not None, in declaration order."""
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return {f.name: getattr(self, f.name) for f in fields if getattr(self, f.name) is not None}

    def keys(self) -> KeysView[str]:
        """The names of the fields that are set, in order (``["sample"]``)."""
        return self._set().keys()

    def values(self) -> ValuesView[Any]:
        """The values of the fields that are set, in order."""
        return self._set().values()

    def items(self) -> ItemsView[str, Any]:
        """(name, value) of the fields that are set, in order."""
        return self._set().items()

    def to_tuple(self) -> tuple[Any, ...]:
        """The values of the fields that are set, as a tuple (what ``return_dict=False`` returns)."""
        return tuple(self._set().values())

    def __getitem__(self, key: int | slice | str) -> Any:
        """``out["sample"]`` by name (KeyError if unset or unknown), ``out[0]`` / ``out[:1]`` by position."""
        if isinstance(key, str):
            values = self._set()
            if key not in values:
                raise KeyError(f"{type(self).__name__} has no field {key!r} set; it has {list(values)}")
            return values[key]
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        """``"sample" in out``: whether the field is set (the keys, as for diffusers' dict outputs)."""
        return key in self._set()

    def __iter__(self) -> Iterator[Any]:
        """The values of the fields that are set, so that ``prev, x0 = scheduler.step(...)`` unpacks."""
        return iter(self.to_tuple())

    def __len__(self) -> int:
        """The number of fields that are set."""
        return len(self._set())


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
