"""An exponential moving average (EMA) of a model's weights, with warm-up.

With a fixed decay of 0.999, the average starts as the random initial weights and needs thousands of steps to
forget them, so early EMA samples are pure noise while the raw model already draws shapes (a common source of
"training is broken" reports). The decay therefore grows with the number of updates ``n``:

    decay(n) = clamp(1 - (1 + n / inv_gamma) ** (-power), min_decay, max_decay)

which is 0 at the first update (the average is a copy of the model), about 0.9 after 20 updates and reaches
``max_decay`` later (with ``power=3/4``: 0.99 near 460 updates, 0.999 near 10,000). Each update is

    shadow <- decay · shadow + (1 - decay) · weights.

The shadow weights are kept in float32 whatever the model's dtype, and separately from the model: training never
runs on them, and saving the EMA model builds a copy (see :meth:`EMA.copy_to`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["EMA", "ema_decay"]


def ema_decay(num_updates: int, *, inv_gamma: float, power: float, min_decay: float, max_decay: float) -> float:
    """The EMA decay for the update that follows ``num_updates`` earlier ones (formula in the module docstring)."""
    decay = 1.0 - (1.0 + num_updates / inv_gamma) ** (-power)
    return min(max(decay, min_decay), max_decay)


class EMA:
    """The moving average of ``model``'s parameters.

    Args:
        model: The model being trained; its parameters are copied as the starting average.
        inv_gamma: Warm-up time scale, in updates.
        power: Warm-up exponent (3/4 suits runs of tens of thousands of steps, 2/3 longer ones).
        min_decay: Lower bound of the decay.
        max_decay: Upper bound of the decay (0.999 for short runs, 0.9999 for long ones).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        inv_gamma: float = 1.0,
        power: float = 0.75,
        min_decay: float = 0.0,
        max_decay: float = 0.9999,
    ) -> None:
        if not 0.0 <= min_decay <= max_decay < 1.0:
            raise ValueError(f"need 0 <= min_decay <= max_decay < 1, got min_decay={min_decay}, max_decay={max_decay}")
        if inv_gamma <= 0 or power <= 0:
            raise ValueError(f"inv_gamma and power must be positive, got inv_gamma={inv_gamma}, power={power}")
        self.inv_gamma, self.power, self.min_decay, self.max_decay = inv_gamma, power, min_decay, max_decay
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow = [p.detach().to(torch.float32, copy=True) for p in model.parameters()]
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        return ema_decay(
            self.num_updates,
            inv_gamma=self.inv_gamma,
            power=self.power,
            min_decay=self.min_decay,
            max_decay=self.max_decay,
        )

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Move the average towards ``model``'s current parameters; return the decay used."""
        decay = self.current_decay()
        params = [p.detach().to(torch.float32) for p in model.parameters()]
        if len(params) != len(self.shadow):
            raise ValueError(f"the model has {len(params)} parameters, the EMA tracks {len(self.shadow)}")
        torch._foreach_lerp_(self.shadow, params, 1.0 - decay)
        self.num_updates += 1
        return decay

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Write the averaged weights into ``model`` (in its dtype) and return it. Use on a copy, not the trainee."""
        for p, s in zip(model.parameters(), self.shadow, strict=True):
            p.copy_(s)
        return model

    def state_dict(self) -> dict[str, Any]:
        """Tensors and numbers only, so the checkpoint loads with ``torch.load(weights_only=True)``."""
        return {
            "shadow": {name: s for name, s in zip(self.names, self.shadow, strict=True)},
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; raises ``ValueError`` when the parameter names differ."""
        shadow = state["shadow"]
        if set(shadow) != set(self.names):  # matched by name: another implementation may order parameters differently
            missing = sorted(set(self.names) - set(shadow))
            unexpected = sorted(set(shadow) - set(self.names))
            raise ValueError(f"EMA state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for s, name in zip(self.shadow, self.names, strict=True):
            s.copy_(shadow[name])
        self.num_updates = int(state["num_updates"])

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = [s.to(device) for s in self.shadow]
        return self
