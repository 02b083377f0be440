"""Gradient checkpointing: blocks that recompute their residual blocks' activations in the backward pass.

A block that supports it derives from :class:`CheckpointableBlock` and runs each residual block through
:meth:`~CheckpointableBlock.run`; a model that contains such blocks mixes in :class:`GradientCheckpointingMixin`
(``enable_gradient_checkpointing()``, ``disable_gradient_checkpointing()``, ``is_gradient_checkpointing``, diffusers'
names). Checkpointing trades compute for memory and leaves the results unchanged: the forward is the same
computation, repeated once during the backward pass with the same random state (dropout masks included).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

__all__ = ["CheckpointFunction", "CheckpointableBlock", "GradientCheckpointingMixin", "default_checkpoint"]

#: ``checkpoint(function, *args)``: runs ``function(*args)`` without keeping its intermediate activations.
CheckpointFunction = Callable[..., Any]

#: torch's non-reentrant checkpoint (the variant torch recommends; it works with ``torch.compile`` and with inputs
#: that do not require gradients).
default_checkpoint: CheckpointFunction = partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)


class CheckpointableBlock(nn.Module):
    """A UNet block whose residual blocks can be checkpointed (off until the model enables it).

    Attributes:
        gradient_checkpointing: Whether :meth:`run` checkpoints while autograd records.
        checkpoint_function: The checkpoint implementation (:data:`default_checkpoint` unless the model was given
            another one).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False
        self.checkpoint_function: CheckpointFunction = default_checkpoint

    def run(self, module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        """``module(*args)``, checkpointed when enabled and autograd is recording."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            out: torch.Tensor = self.checkpoint_function(module, *args)
            return out
        result: torch.Tensor = module(*args)
        return result


class GradientCheckpointingMixin(nn.Module):
    """``enable_gradient_checkpointing()`` and friends for a model built from :class:`CheckpointableBlock`\\ s."""

    #: Read by diffusers' test suite and training scripts before they enable checkpointing.
    _supports_gradient_checkpointing: bool = True

    def enable_gradient_checkpointing(self, gradient_checkpointing_func: CheckpointFunction | None = None) -> None:
        """Checkpoint every checkpointable block while training: less activation memory, one more forward.

        Args:
            gradient_checkpointing_func: ``f(module, *args)`` to use instead of torch's non-reentrant
                ``torch.utils.checkpoint.checkpoint``.
        """
        self._set_gradient_checkpointing(True, gradient_checkpointing_func or default_checkpoint)

    def disable_gradient_checkpointing(self) -> None:
        """Keep all activations again (the default)."""
        self._set_gradient_checkpointing(False, default_checkpoint)

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether any block checkpoints."""
        return any(isinstance(m, CheckpointableBlock) and m.gradient_checkpointing for m in self.modules())

    def _set_gradient_checkpointing(self, enable: bool, function: CheckpointFunction) -> None:
        for module in self.modules():
            if isinstance(module, CheckpointableBlock):
                module.gradient_checkpointing = enable
                module.checkpoint_function = function
