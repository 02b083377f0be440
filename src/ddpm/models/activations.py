"""The elementwise activations a UNet config may name (``act_fn``), as a module."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

__all__ = ["Activation"]

#: Every ``act_fn`` value diffusers' UNet2DModel accepts, and its function ("swish" is SiLU under its other name).
_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "mish": F.mish,
    "relu": F.relu,
    "gelu": F.gelu,
}

#: The accepted names, in the order error messages list them.
ACTIVATION_NAMES: tuple[str, ...] = tuple(_FUNCTIONS)


class Activation(nn.Module):
    """An elementwise activation chosen by name.

    Args:
        name: One of ``silu``, ``swish`` (the same function), ``mish``, ``relu``, ``gelu``.

    Raises:
        ConfigError: An unknown name.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in _FUNCTIONS:
            allowed = ", ".join(map(repr, ACTIVATION_NAMES))
            raise ConfigError(f"config key 'act_fn' has value {name!r}; expected one of {allowed}")
        self.name = name
        self.function = _FUNCTIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation elementwise; any shape."""
        return self.function(x)

    def extra_repr(self) -> str:
        return self.name
