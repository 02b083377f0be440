"""The UNet's down, mid and up blocks, and :data:`BLOCK_TYPES`, the only place block names map to classes.

A down block runs ``layers_per_block`` residual blocks (each followed by attention in ``AttnDownBlock2D``) and then,
except at the lowest resolution, a downsampler; every intermediate output is kept as a skip connection. An up block
runs ``layers_per_block + 1`` residual blocks, each fed the concatenation ``[h, skip]`` of the running features and
the most recent unused skip, then (except at the top) an upsampler.

The ``Skip`` blocks are NCSN++'s (Song et al. 2021, Appendix H): residual blocks that resample with the FIR filter
(BigGAN-style) and an extra image-resolution path. On the way down the input image is FIR-downsampled level by
level and added to the features through a 1×1 conv ("input skip"); on the way up every level's features are mapped
to image channels by ``conv3x3(act(norm(h)))`` and summed into an image that is FIR-upsampled level by level and
added to the network's output ("output skip"). Their GroupNorms use ``min(channels // 4, 32)`` groups and their
residual and attention outputs are divided by √2, as in NCSN++.

Every block creates its submodules in diffusers' order, so that the same seed gives diffusers' initial weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .attention import AttentionBlock
from .checkpointing import CheckpointableBlock
from .resnet import Downsample2D, ResnetBlock2D, Upsample2D, fir_downsample2d, fir_upsample2d, group_norm

__all__ = [
    "BLOCK_TYPES",
    "DOWN_BLOCK_TYPES",
    "MID_BLOCK_TYPES",
    "SKIP_BLOCK_TYPES",
    "UP_BLOCK_TYPES",
    "AttnDownBlock2D",
    "AttnSkipDownBlock2D",
    "AttnSkipUpBlock2D",
    "AttnUpBlock2D",
    "BlockSettings",
    "DownBlock2D",
    "SkipDownBlock2D",
    "SkipUpBlock2D",
    "UNetMidBlock2D",
    "UpBlock2D",
    "block_class",
    "is_skip_block",
    "ncsnpp_groups",
]

#: The output divisor of NCSN++'s residual and attention layers (``skip_rescale``).
SKIP_SCALE = math.sqrt(2.0)


def ncsnpp_groups(channels: int) -> int:
    """NCSN++'s GroupNorm group count for ``channels`` channels: ``min(channels // 4, 32)``."""
    return min(channels // 4, 32)


@dataclass(frozen=True)
class BlockSettings:
    """The settings every block of one UNet shares (taken from its config).

    Attributes:
        temb_channels: Width of the time embedding.
        groups: GroupNorm groups (``norm_num_groups``); None only for NCSN++ models, whose blocks choose their own.
        eps: GroupNorm epsilon (``norm_eps``).
        act_fn: Activation name.
        dropout: Dropout probability in the residual blocks.
        attention_head_dim: Width of one attention head, or None for one head per block.
        downsample_padding: 0 (pad right/bottom) or 1 (pad all sides).
        time_embedding_norm: ``resnet_time_scale_shift``.
        downsample_type: ``"conv"`` or ``"resnet"`` (the downsampler of ``AttnDownBlock2D``).
        upsample_type: ``"conv"`` or ``"resnet"`` (the upsampler of ``AttnUpBlock2D``).
        image_channels: Channels of the image path of the Skip blocks: (input image, output image).
    """

    temb_channels: int
    groups: int | None
    eps: float
    act_fn: str
    dropout: float
    attention_head_dim: int | None
    downsample_padding: int
    time_embedding_norm: str = "default"
    downsample_type: str = "conv"
    upsample_type: str = "conv"
    image_channels: tuple[int, int] = (3, 3)

    @property
    def resnet_groups(self) -> int:
        """The group count of the non-NCSN++ blocks (the config guarantees one)."""
        assert self.groups is not None, "norm_num_groups is null: only Skip blocks may be used"
        return self.groups

    def resnet(
        self,
        in_channels: int,
        out_channels: int,
        *,
        output_scale_factor: float = 1.0,
        groups: int | None = None,
        groups_out: int | None = None,
        resample: str | None = None,
        use_in_shortcut: bool | None = None,
    ) -> ResnetBlock2D:
        """A residual block with these settings (``groups`` overrides the group count of ``norm1``)."""
        return ResnetBlock2D(
            in_channels,
            out_channels,
            self.temb_channels,
            groups=self.resnet_groups if groups is None else groups,
            groups_out=groups_out,
            eps=self.eps,
            act_fn=self.act_fn,
            dropout=self.dropout,
            output_scale_factor=output_scale_factor,
            time_embedding_norm=self.time_embedding_norm,
            resample=resample,
            use_in_shortcut=use_in_shortcut,
        )

    def attention(self, channels: int, groups: int | None = None, rescale_output_factor: float = 1.0) -> AttentionBlock:
        """An attention block with these settings (``groups`` overrides the GroupNorm group count)."""
        return AttentionBlock(
            channels,
            self.attention_head_dim,
            groups=self.resnet_groups if groups is None else groups,
            eps=self.eps,
            rescale_output_factor=rescale_output_factor,
        )


def _resnet_and_attention_layers(
    settings: BlockSettings,
    resnet_channels: list[tuple[int, int]],
    has_attention: bool,
    out_channels: int,
) -> tuple[nn.ModuleList, nn.ModuleList | None]:
    """Residual blocks (in, out) each followed by an attention layer, created in that interleaved order."""
    resnets, attentions = nn.ModuleList(), nn.ModuleList()
    for c_in, c_out in resnet_channels:
        resnets.append(settings.resnet(c_in, c_out))
        if has_attention:
            attentions.append(settings.attention(out_channels))
    return resnets, attentions if has_attention else None


class _DownBlock(CheckpointableBlock):
    has_attention: ClassVar[bool]

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool, settings: BlockSettings
    ) -> None:
        super().__init__()
        channels = [(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)]
        self.resnets, attentions = _resnet_and_attention_layers(settings, channels, self.has_attention, out_channels)
        if attentions is not None:
            self.attentions = attentions
        # diffusers' DownBlock2D always downsamples with a conv; only AttnDownBlock2D follows downsample_type.
        self.resnet_downsampler = add_downsample and self.has_attention and settings.downsample_type == "resnet"
        downsampler: nn.Module | None = None
        if self.resnet_downsampler:
            downsampler = settings.resnet(out_channels, out_channels, resample="down")
        elif add_downsample:
            downsampler = Downsample2D(out_channels, settings.downsample_padding)
        self.downsamplers = nn.ModuleList([downsampler]) if downsampler is not None else None

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Map h (B, C_in, H, W) to (B, C_out, H', W') and the skips this block leaves for the up path."""
        skips: list[torch.Tensor] = []
        for i, resnet in enumerate(self.resnets):
            h = self.run(resnet, h, temb)
            if self.has_attention:
                h = self.attentions[i](h)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h, temb) if self.resnet_downsampler else self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class DownBlock2D(_DownBlock):
    """Residual blocks, then an optional downsampler."""

    has_attention = False


class AttnDownBlock2D(_DownBlock):
    """Residual blocks each followed by self-attention, then an optional downsampler."""

    has_attention = True


class UNetMidBlock2D(CheckpointableBlock):
    """``resnet → attention → resnet`` at the lowest resolution (attention can be switched off).

    Args:
        channels: Input and output channels.
        settings: The shared block settings.
        output_scale_factor: ``mid_block_scale_factor``, the divisor of both resnets' and the attention's output.
        add_attention: Whether the attention layer exists.
        attn_groups: GroupNorm groups of the attention (``attn_norm_num_groups``). None means the resnets' groups
            with ``resnet_time_scale_shift="default"``, and no GroupNorm in the attention otherwise (diffusers').
    """

    def __init__(
        self,
        channels: int,
        settings: BlockSettings,
        *,
        output_scale_factor: float = 1.0,
        add_attention: bool = True,
        attn_groups: int | None = None,
    ) -> None:
        super().__init__()
        groups = ncsnpp_groups(channels) if settings.groups is None else settings.groups
        if attn_groups is None and settings.time_embedding_norm == "default":
            attn_groups = groups
        first = settings.resnet(channels, channels, output_scale_factor=output_scale_factor, groups=groups)
        self.add_attention = add_attention
        self.attentions = nn.ModuleList()
        if add_attention:
            self.attentions.append(
                AttentionBlock(
                    channels,
                    settings.attention_head_dim,
                    groups=attn_groups,
                    eps=settings.eps,
                    rescale_output_factor=output_scale_factor,
                )
            )
        second = settings.resnet(channels, channels, output_scale_factor=output_scale_factor, groups=groups)
        self.resnets = nn.ModuleList([first, second])

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Map (B, C, H, W) to (B, C, H, W)."""
        h = self.run(self.resnets[0], h, temb)
        if self.add_attention:
            h = self.attentions[0](h)
        return self.run(self.resnets[1], h, temb)


class _UpBlock(CheckpointableBlock):
    has_attention: ClassVar[bool]

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        add_upsample: bool,
        settings: BlockSettings,
    ) -> None:
        super().__init__()
        inputs = _up_resnet_inputs(in_channels, prev_output_channels, out_channels, num_layers)
        channels = [(features + skip, out_channels) for features, skip in inputs]
        self.resnets, attentions = _resnet_and_attention_layers(settings, channels, self.has_attention, out_channels)
        if attentions is not None:
            self.attentions = attentions
        # diffusers' UpBlock2D always upsamples with a conv; only AttnUpBlock2D follows upsample_type.
        self.resnet_upsampler = add_upsample and self.has_attention and settings.upsample_type == "resnet"
        upsampler: nn.Module | None = None
        if self.resnet_upsampler:
            upsampler = settings.resnet(out_channels, out_channels, resample="up")
        elif add_upsample:
            upsampler = Upsample2D(out_channels)
        self.upsamplers = nn.ModuleList([upsampler]) if upsampler is not None else None

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        """Map h (B, C_prev, H, W) to (B, C_out, H', W'), consuming (popping) one skip per residual block."""
        for i, resnet in enumerate(self.resnets):
            h = self.run(resnet, torch.cat([h, skips.pop()], dim=1), temb)  # input (B, C_h + C_skip, H, W)
            if self.has_attention:
                h = self.attentions[i](h)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, temb) if self.resnet_upsampler else self.upsamplers[0](h)
        return h


def _up_resnet_inputs(
    in_channels: int, prev_output_channels: int, out_channels: int, num_layers: int
) -> list[tuple[int, int]]:
    """(features, skip) input channels of an up block's residual blocks, which see their concatenation.

    The last resnet consumes the skip from the level below (in_channels wide), the others skips of this level; the
    first continues from the previous up block.
    """
    return [
        (prev_output_channels if i == 0 else out_channels, in_channels if i == num_layers - 1 else out_channels)
        for i in range(num_layers)
    ]


class UpBlock2D(_UpBlock):
    """Residual blocks over ``[h, skip]``, then an optional upsampler."""

    has_attention = False


class AttnUpBlock2D(_UpBlock):
    """Residual blocks over ``[h, skip]`` each followed by self-attention, then an optional upsampler."""

    has_attention = True


class _SkipDownBlock(nn.Module):
    """NCSN++ down block: residual blocks (and attention), then a FIR-downsampling residual block plus input skip."""

    has_attention: ClassVar[bool]

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool, settings: BlockSettings
    ) -> None:
        super().__init__()
        self.resnets, self.attentions = nn.ModuleList(), nn.ModuleList()
        for i in range(num_layers):
            c_in = in_channels if i == 0 else out_channels
            self.resnets.append(
                settings.resnet(
                    c_in,
                    out_channels,
                    output_scale_factor=SKIP_SCALE,
                    groups=ncsnpp_groups(c_in),
                    groups_out=ncsnpp_groups(out_channels),
                )
            )
            if self.has_attention:
                self.attentions.append(settings.attention(out_channels, groups=32, rescale_output_factor=SKIP_SCALE))
        self.resnet_down: ResnetBlock2D | None = None
        self.skip_conv: nn.Conv2d | None = None
        if add_downsample:
            self.resnet_down = settings.resnet(
                out_channels,
                out_channels,
                output_scale_factor=SKIP_SCALE,
                groups=ncsnpp_groups(out_channels),
                resample="fir_down",
                use_in_shortcut=True,
            )
            self.skip_conv = nn.Conv2d(settings.image_channels[0], out_channels, kernel_size=1)

    def forward(
        self, h: torch.Tensor, temb: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Map h (B, C_in, H, W) and the image path (B, in_channels, H, W) to (B, C_out, H', W'), the skips for the
        up path and the image path at the new resolution."""
        skips: list[torch.Tensor] = []
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.has_attention:
                h = self.attentions[i](h)
            skips.append(h)
        if self.resnet_down is not None and self.skip_conv is not None:
            h = self.resnet_down(h, temb)  # (B, C_out, H/2, W/2)
            image = fir_downsample2d(image)  # (B, in_channels, H/2, W/2)
            h = self.skip_conv(image) + h
            skips.append(h)
        return h, skips, image


class SkipDownBlock2D(_SkipDownBlock):
    """NCSN++ residual blocks, then a FIR-downsampling residual block plus the input skip."""

    has_attention = False


class AttnSkipDownBlock2D(_SkipDownBlock):
    """NCSN++ residual blocks each followed by attention, then a FIR-downsampling residual block plus input skip."""

    has_attention = True


class _SkipUpBlock(nn.Module):
    """NCSN++ up block: residual blocks over ``[h, skip]`` (then one attention), the output skip, FIR upsampling."""

    has_attention: ClassVar[bool]

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        add_upsample: bool,
        settings: BlockSettings,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList()
        for features, skip in _up_resnet_inputs(in_channels, prev_output_channels, out_channels, num_layers):
            self.resnets.append(
                settings.resnet(
                    features + skip,
                    out_channels,
                    output_scale_factor=SKIP_SCALE,
                    groups=self._input_groups(features, skip),
                    groups_out=ncsnpp_groups(out_channels),
                )
            )
        self.attentions = nn.ModuleList()
        if self.has_attention:
            self.attentions.append(settings.attention(out_channels, groups=32, rescale_output_factor=SKIP_SCALE))
        self.resnet_up: ResnetBlock2D | None = None
        self.skip_conv: nn.Conv2d | None = None
        self.skip_norm: nn.GroupNorm | None = None
        if add_upsample:
            groups = ncsnpp_groups(out_channels)
            self.resnet_up = settings.resnet(
                out_channels,
                out_channels,
                output_scale_factor=SKIP_SCALE,
                groups=groups,
                groups_out=groups,
                resample="fir_up",
                use_in_shortcut=True,
            )
            self.skip_conv = nn.Conv2d(out_channels, settings.image_channels[1], kernel_size=3, padding=1)
            self.skip_norm = group_norm(groups, out_channels, settings.eps)
            self.act = nn.SiLU()

    def _input_groups(self, features: int, skip: int) -> int:
        """GroupNorm groups of a residual block's input, the concatenation of features and skip."""
        return ncsnpp_groups(features + skip)

    def forward(
        self, h: torch.Tensor, skips: list[torch.Tensor], temb: torch.Tensor, image: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Map h (B, C_prev, H, W) to (B, C_out, H', W'), consuming one skip per residual block, and the output image
        path (None before the first Skip block, else (B, out_channels, H/2, W/2)) to (B, out_channels, H, W)."""
        for resnet in self.resnets:
            h = resnet(torch.cat([h, skips.pop()], dim=1), temb)  # input (B, C_h + C_skip, H, W)
        if self.has_attention:
            h = self.attentions[0](h)
        if image is not None:
            image = fir_upsample2d(image)  # (B, out_channels, H, W)
        if self.resnet_up is not None and self.skip_conv is not None and self.skip_norm is not None:
            level = self.skip_conv(self.act(self.skip_norm(h)))  # this level's image, (B, out_channels, H, W)
            image = level if image is None else image + level
            h = self.resnet_up(h, temb)  # (B, C_out, 2H, 2W)
        return h, image


class SkipUpBlock2D(_SkipUpBlock):
    """NCSN++ residual blocks over ``[h, skip]``, the output skip, and a FIR-upsampling residual block."""

    has_attention = False


class AttnSkipUpBlock2D(_SkipUpBlock):
    """NCSN++ residual blocks over ``[h, skip]``, one attention, the output skip, a FIR-upsampling residual block.

    Its residual blocks' input GroupNorm has ``min(features + skip // 4, 32)`` groups: diffusers' expression (a
    misplaced parenthesis; 32 whenever ``features + skip // 4 >= 32``, as NCSN++'s own ``min((features + skip) // 4,
    32)`` also is at the widths of the google/ncsnpp-* models). ddpm keeps it so that diffusers' weights give
    diffusers' outputs at every width.
    """

    has_attention = True

    def _input_groups(self, features: int, skip: int) -> int:
        return min(features + skip // 4, 32)


#: Every block name a config may use, mapped to its class.
BLOCK_TYPES: dict[str, type[nn.Module]] = {
    "DownBlock2D": DownBlock2D,
    "AttnDownBlock2D": AttnDownBlock2D,
    "SkipDownBlock2D": SkipDownBlock2D,
    "AttnSkipDownBlock2D": AttnSkipDownBlock2D,
    "UNetMidBlock2D": UNetMidBlock2D,
    "UpBlock2D": UpBlock2D,
    "AttnUpBlock2D": AttnUpBlock2D,
    "SkipUpBlock2D": SkipUpBlock2D,
    "AttnSkipUpBlock2D": AttnSkipUpBlock2D,
}
DOWN_BLOCK_TYPES: tuple[str, ...] = tuple(
    k for k, v in BLOCK_TYPES.items() if issubclass(v, (_DownBlock, _SkipDownBlock))
)
UP_BLOCK_TYPES: tuple[str, ...] = tuple(k for k, v in BLOCK_TYPES.items() if issubclass(v, (_UpBlock, _SkipUpBlock)))
MID_BLOCK_TYPES: tuple[str, ...] = tuple(k for k, v in BLOCK_TYPES.items() if v is UNetMidBlock2D)
#: The NCSN++ blocks: they carry the image path and choose their own GroupNorm groups.
SKIP_BLOCK_TYPES: tuple[str, ...] = tuple(
    k for k, v in BLOCK_TYPES.items() if issubclass(v, (_SkipDownBlock, _SkipUpBlock))
)
#: Block types whose residual blocks can be gradient-checkpointed (diffusers' set).
CHECKPOINTABLE_BLOCK_TYPES: tuple[str, ...] = tuple(
    k for k, v in BLOCK_TYPES.items() if issubclass(v, CheckpointableBlock)
)

#: diffusers also accepts these names with a legacy ``UNetRes`` prefix (e.g. ``UNetResDownBlock2D``).
_LEGACY_PREFIX = "UNetRes"


def block_class(name: str) -> type[nn.Module] | None:
    """The class for a block name (legacy ``UNetRes`` prefix allowed), or None if ddpm has no such block."""
    return BLOCK_TYPES.get(name.removeprefix(_LEGACY_PREFIX))


def is_skip_block(module: nn.Module) -> bool:
    """Whether ``module`` is an NCSN++ block (it takes and returns the image path)."""
    return isinstance(module, (_SkipDownBlock, _SkipUpBlock))
