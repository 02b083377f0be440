"""Per-step callbacks of a pipeline call: one mechanism, ``callback_on_step_end``.

After every step the loop calls each step-end callback in turn as ``fn(pipe, step_index, timestep, tensors)``; one
may return ``{"latents": new_sample}`` to replace the sample, or set ``pipe._interrupt = True`` to stop after this
step. The legacy ``callback(step_index, timestep, sample, pred_original_sample)`` and the ``check_finite`` option
run as such callbacks too, before the user's ``callback_on_step_end``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import DiffusionPipeline

__all__ = ["CALLBACK_TENSOR_INPUTS", "StepCallback", "StepEndCallback"]

#: ``callback(step_index, timestep, sample, pred_original_sample)``; return ``True`` to stop sampling early.
StepCallback = Callable[[int, int, torch.Tensor, "torch.Tensor | None"], "bool | None"]

#: ``callback_on_step_end(pipe, step_index, timestep, tensors)``; may return ``{"latents": replacement}``.
StepEndCallback = Callable[..., "Mapping[str, Any] | None"]

#: Tensors a ``callback_on_step_end`` may ask for; ``"latents"`` is diffusers' name for the current sample.
CALLBACK_TENSOR_INPUTS: tuple[str, ...] = ("latents", "pred_original_sample", "model_output")


@dataclass(frozen=True)
class StepEnd:
    """The step-end callbacks of one call, each with the names of the tensors it receives."""

    callbacks: tuple[tuple[StepEndCallback, Sequence[str]], ...] = ()

    @classmethod
    def for_call(
        cls,
        callback: StepCallback | None,
        callback_on_step_end: StepEndCallback | None,
        tensor_inputs: Sequence[str],
        check_finite: bool,
    ) -> StepEnd:
        """Gather a call's options into the callbacks to run, in order: the NaN check, ``callback``, the user's.

        Raises:
            TypeError: ``tensor_inputs`` is a string, not a list of names.
            ValueError: ``tensor_inputs`` names a tensor not in ``CALLBACK_TENSOR_INPUTS``.
        """
        if isinstance(tensor_inputs, str):
            raise TypeError(f"callback_on_step_end_tensor_inputs must be a list of names, e.g. {[tensor_inputs]!r}")
        unknown = [n for n in tensor_inputs if n not in CALLBACK_TENSOR_INPUTS]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs: unknown {unknown}; choose from {list(CALLBACK_TENSOR_INPUTS)}"
            )
        callbacks: list[tuple[StepEndCallback, Sequence[str]]] = []
        if check_finite:
            callbacks.append((_check_finite, ("model_output", "latents")))
        if callback is not None:
            callbacks.append((_Legacy(callback), ("latents", "pred_original_sample")))
        if callback_on_step_end is not None:
            callbacks.append((callback_on_step_end, tuple(tensor_inputs)))
        return cls(tuple(callbacks))

    def __call__(
        self,
        pipe: DiffusionPipeline,
        i: int,
        t: torch.Tensor,
        sample: torch.Tensor,
        pred_original_sample: torch.Tensor | None,
        model_output: torch.Tensor,
    ) -> torch.Tensor:
        """Run the callbacks after step ``i`` on the new sample x_{t-1}; returns the sample to continue from."""
        tensors = {"latents": sample, "pred_original_sample": pred_original_sample, "model_output": model_output}
        for callback, names in self.callbacks:
            returned = callback(pipe, i, t, {name: tensors[name] for name in names})
            if returned:
                sample = tensors["latents"] = returned.get("latents", sample)
        return sample


class _Legacy:
    """The legacy ``callback`` as a step-end callback: its ``True`` interrupts the pipeline."""

    def __init__(self, callback: StepCallback) -> None:
        self.callback = callback
        self.timesteps: list[int] = []

    def __call__(self, pipe: DiffusionPipeline, i: int, t: torch.Tensor, tensors: dict[str, Any]) -> None:
        if not self.timesteps:  # Python ints, read from the device once per call rather than once per step
            self.timesteps = pipe.scheduler.timesteps.tolist()
        if self.callback(i, self.timesteps[i], tensors["latents"], tensors["pred_original_sample"]) is True:
            pipe._interrupt = True


def _check_finite(pipe: DiffusionPipeline, i: int, t: torch.Tensor, tensors: dict[str, torch.Tensor]) -> None:
    """Raise ``FloatingPointError`` when the UNet output or the new sample has NaN or infinite values."""
    hint = " (half precision overflows easily: try dtype float32 or bfloat16)" if pipe.dtype == torch.float16 else ""
    for name, tensor in (("the UNet output", tensors["model_output"]), ("the sample", tensors["latents"])):
        if not torch.isfinite(tensor).all():
            raise FloatingPointError(
                f"{name} has NaN or infinite values at step {i} of {len(pipe.scheduler.timesteps)} "
                f"(timestep {int(t)}){hint}"
            )
