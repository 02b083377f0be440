"""Spatial self-attention over the H×W positions of a feature map, with a residual connection.

Parameter names follow diffusers' ``Attention`` module (``group_norm``, ``to_q``, ``to_k``, ``to_v``, ``to_out.0``);
the google/ddpm-* files use the older names ``query``, ``key``, ``value``, ``proj_attn``, which
:mod:`ddpm.models.loading` renames on load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import group_norm

__all__ = ["AttentionBlock"]


class AttentionBlock(nn.Module):
    """``x + to_out(softmax(q kᵀ / √d) v)`` over the flattened positions, divided by ``rescale_output_factor``.

    ``q``, ``k`` and ``v`` are linear maps of ``group_norm(x)`` seen as a sequence of H·W tokens of C features; with
    ``attention_head_dim=None`` there is one head of width C (the google/ddpm-* models).

    Args:
        channels: C, the feature width.
        head_dim: The width of one head, or None for a single head of width C. The number of heads is
            ``channels // head_dim``; their total width ``heads * head_dim`` may be smaller than C.
        groups: GroupNorm groups, or None for no normalisation (diffusers' mid-block attention of a
            ``scale_shift`` model without ``attn_norm_num_groups``).
        eps: GroupNorm epsilon.
        rescale_output_factor: The output divisor (the mid block uses ``mid_block_scale_factor``).
    """

    def __init__(
        self,
        channels: int,
        head_dim: int | None,
        *,
        groups: int | None,
        eps: float,
        rescale_output_factor: float = 1.0,
    ) -> None:
        super().__init__()
        head_dim = channels if head_dim is None else head_dim
        self.heads = channels // head_dim
        self.head_dim = head_dim
        inner = self.heads * head_dim
        self.group_norm = None if groups is None else group_norm(groups, channels, eps)
        self.to_q = nn.Linear(channels, inner)
        self.to_k = nn.Linear(channels, inner)
        self.to_v = nn.Linear(channels, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, channels)])
        self.rescale_output_factor = rescale_output_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, H, W)."""
        b, c, height, width = x.shape
        n, heads, d = height * width, self.heads, self.head_dim
        # (B, C, H, W) -> (B, H, W, C) -> (B, N, C); a view, no copy, when x is channels_last.
        normed = x if self.group_norm is None else self.group_norm(x)
        tokens = normed.permute(0, 2, 3, 1).reshape(b, n, c)
        # One matrix product for q, k and v: (B, N, C) @ (C, 3·inner) -> (B, N, 3·inner).
        weight = torch.cat([self.to_q.weight, self.to_k.weight, self.to_v.weight])
        bias = torch.cat([self.to_q.bias, self.to_k.bias, self.to_v.bias])
        qkv = F.linear(tokens, weight, bias)
        # (B, N, 3·inner) -> (B, N, 3, heads, d) -> (3, B, heads, N, d)
        q, k, v = qkv.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d), softmax scale 1/√d
        out = out.transpose(1, 2).reshape(b, n, heads * d)  # (B, N, inner)
        out = self.to_out[0](out)  # (B, N, C)
        # (B, N, C) -> (B, H, W, C) -> (B, C, H, W): a channels_last view.
        out = out.view(b, height, width, c).permute(0, 3, 1, 2)
        return (out + x) / self.rescale_output_factor
