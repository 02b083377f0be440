"""``UNet2DConfig`` and ``UNet2DModel``: the noise-prediction network of Ho et al. (2020), diffusers-compatible.

The config keys, their defaults and the state-dict names are diffusers' (0.42.1), so a diffusers ``config.json`` and
its weights load unchanged and ours load in diffusers. Differences from diffusers, all deliberate:

* a float timestep is used as given; diffusers truncates Python floats to integers (``999.7`` → ``999``);
* bad input (spatial size, channel count, dtype, non-finite timesteps) raises a ``ValueError`` that says what to do;
* speed measures that do not change the results beyond float rounding (all in :mod:`ddpm.models.optimizations`):
  convolution weights in the device's preferred layout (:func:`preferred_memory_format`: channels_last on the CPU,
  the standard one on CUDA, where PyTorch's GroupNorm has no channels_last kernel; the output is returned in the
  standard layout), and eager-inference fast paths for the residual blocks and the upsamplers. fp32 results agree
  with diffusers to ~1e-5 (up to ~6e-5 at 256×256, from the different summation order of the channels_last
  GroupNorm and convolution kernels).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import MAX_TRAIN_TIMESTEPS, ConfigBase, check, show_value
from ..errors import ConfigError, UnsupportedConfigError
from ..outputs import UNet2DOutput
from .activations import ACTIVATION_NAMES, Activation
from .checkpointing import GradientCheckpointingMixin
from .embeddings import GaussianFourierProjection, TimestepEmbedding, timestep_embedding
from .modeling import ModelMixin
from .optimizations import DeviceLayoutMixin, is_compiling, preferred_memory_format, relayout_convolutions
from .resnet import TIME_EMBEDDING_NORMS, group_norm
from .unet_blocks import (
    DOWN_BLOCK_TYPES,
    MID_BLOCK_TYPES,
    SKIP_BLOCK_TYPES,
    UP_BLOCK_TYPES,
    BlockSettings,
    UNetMidBlock2D,
    block_class,
    is_skip_block,
    ncsnpp_groups,
)

__all__ = ["UNet2DConfig", "UNet2DModel", "preferred_memory_format"]

# Upper bounds of the size keys: far above any real model, low enough that a hand-edited or hostile config.json
# fails with a ConfigError instead of hanging or overflowing while the network is built.
MAX_WIDTH = 65536  # channels, groups
MAX_LEVELS = 16  # resolution levels (a 2**15 spatial divisor)
MAX_LAYERS_PER_BLOCK = 64
#: The largest ``sample_size`` (height or width): real models go up to 1024 (NCSN++ FFHQ); 4096 leaves room while a
#: hostile 65536 (whose activations would need tens of GB) is refused as a config error.
MAX_SAMPLE_SIZE = 4096
MAX_CLASSES = 1 << 24

#: The implemented values of the config's choice keys.
TIME_EMBEDDING_TYPES: tuple[str, ...] = ("positional", "fourier", "learned")
RESAMPLE_TYPES: tuple[str, ...] = ("conv", "resnet")
CLASS_EMBED_TYPES: tuple[str | None, ...] = (None, "timestep", "identity")
#: The frequency scale of the Fourier time embedding (diffusers' UNet2DModel).
FOURIER_SCALE = 16.0


def _choices(values: tuple[str | None, ...]) -> str:
    return ", ".join("null" if v is None else repr(v) for v in values)


def _block_name(name: str) -> str:
    cls = block_class(name)
    return name if cls is None else cls.__name__


@dataclasses.dataclass(frozen=True)
class UNet2DConfig(ConfigBase):
    """Configuration of :class:`UNet2DModel`, with diffusers' key names and diffusers' defaults.

    A key missing from a ``config.json`` takes the default below, exactly as in diffusers. Several of these defaults
    differ from the values in the google/ddpm-* configs (which set them explicitly): ``flip_sin_to_cos``
    (True here, False there), ``freq_shift`` (0 / 1), ``downsample_padding`` (1 / 0), ``norm_eps`` (1e-5 / 1e-6)
    and ``attention_head_dim`` (8 / null).

    Attributes:
        sample_size: Image size the model was trained at (int, or [height, width]); informational.
        in_channels: Channels of the input image.
        out_channels: Channels of the prediction.
        center_input_sample: Map the input from [0, 1] to [-1, 1] (``2x - 1``) first.
        time_embedding_type: ``"positional"`` (sinusoidal features of t), ``"fourier"`` (random Fourier features of
            log σ, NCSN++; the output is divided by σ) or ``"learned"`` (a table of ``num_train_timesteps`` rows).
        time_embedding_dim: Width of the time embedding; None means ``4 * block_out_channels[0]``.
        freq_shift: The shift ``s`` in the sinusoid frequencies ``exp(-ln(10000) k / (half - s))``.
        flip_sin_to_cos: Put the cosine features before the sine features (positional embedding only).
        down_block_types: One of ``DownBlock2D``, ``AttnDownBlock2D``, ``SkipDownBlock2D``,
            ``AttnSkipDownBlock2D`` per resolution level.
        mid_block_type: ``UNetMidBlock2D`` or null (no mid block).
        up_block_types: One of ``UpBlock2D``, ``AttnUpBlock2D``, ``SkipUpBlock2D``, ``AttnSkipUpBlock2D`` per level,
            from the lowest resolution up.
        block_out_channels: Channels per level.
        layers_per_block: Residual blocks per down block (up blocks have one more).
        mid_block_scale_factor: Output divisor of the mid block's residual and attention layers.
        downsample_padding: 0 pads right/bottom before a 3×3 stride-2 conv; 1 pads all sides inside it.
        downsample_type: Downsampler of ``AttnDownBlock2D``: ``"conv"`` or ``"resnet"`` (a residual block with 2×2
            average pooling).
        upsample_type: Upsampler of ``AttnUpBlock2D``: ``"conv"`` or ``"resnet"`` (a residual block with
            nearest-neighbour upsampling).
        dropout: Dropout probability inside the residual blocks (training only).
        act_fn: Activation of the residual blocks: silu (= swish), mish, gelu or relu.
        attention_head_dim: Width of one attention head; null means one head spanning all channels.
        norm_num_groups: GroupNorm groups of the non-Skip blocks, the mid block and the output norm. null (only with
            Skip blocks throughout) means ``min(channels // 4, 32)`` there.
        attn_norm_num_groups: GroupNorm groups of the mid-block attention; null means ``norm_num_groups`` (and no
            GroupNorm there with ``resnet_time_scale_shift="scale_shift"``, as in diffusers).
        norm_eps: GroupNorm epsilon.
        resnet_time_scale_shift: ``"default"`` (add the time embedding) or ``"scale_shift"`` (modulate the normalised
            features by ``1 + scale`` and ``shift``); diffusers' ``"spatial"`` is not implemented.
        add_attention: Whether the mid block has its attention layer.
        class_embed_type: Class conditioning, added to the time embedding: null (a table of ``num_class_embeds``
            rows when that is set, else none), ``"timestep"`` (labels embedded like timesteps, through their own
            MLP) or ``"identity"`` (the labels are embeddings of width ``time_embedding_dim`` already).
        num_class_embeds: Number of classes of the table (with ``class_embed_type`` null).
        num_train_timesteps: Rows of the ``"learned"`` time embedding (needed there; otherwise unused).
    """

    _class_name: ClassVar[str] = "UNet2DModel"
    config_name: ClassVar[str] = "config.json"

    sample_size: int | tuple[int, ...] | None = None
    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False
    time_embedding_type: str = "positional"
    time_embedding_dim: int | None = None
    freq_shift: int = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    mid_block_type: str | None = "UNetMidBlock2D"
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    downsample_type: str = "conv"
    upsample_type: str = "conv"
    dropout: float = 0.0
    act_fn: str = "silu"
    attention_head_dim: int | None = 8
    norm_num_groups: int | None = 32
    attn_norm_num_groups: int | None = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True
    class_embed_type: str | None = None
    num_class_embeds: int | None = None
    num_train_timesteps: int | None = None

    # ------------------------------------------------------------------ derived values
    @property
    def num_downsamplers(self) -> int:
        """How many times the resolution halves (every down block but the last has a downsampler)."""
        return len(self.block_out_channels) - 1

    @property
    def temb_channels(self) -> int:
        """Width of the time embedding."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Reject values ddpm does not implement and combinations that cannot build a network."""
        self._check_implemented()
        self._check_shapes()
        self._check_ncsnpp_group_norms()

    def _check_ncsnpp_group_norms(self) -> None:
        """The Skip blocks (and ``norm_num_groups=null``) derive their GroupNorm group counts from the channel counts
        (:func:`~ddpm.models.unet_blocks.ncsnpp_groups`); rather than repeat that derivation here, such a network
        is built once on the meta device (no memory, no random draws) and a group count that does not divide its
        channels is reported as a config error."""
        names = [_block_name(n) for n in (*self.down_block_types, *self.up_block_types)]
        if self.norm_num_groups is not None and not any(n in SKIP_BLOCK_TYPES for n in names):
            return
        try:
            with torch.device("meta"):
                UNet2DModel(self)
        except ConfigError as error:
            where = f"{self._source()}: " if self._source() else ""
            raise ConfigError(
                f"{where}config key 'block_out_channels' has value {show_value(list(self.block_out_channels))}, "
                f"which the NCSN++ (Skip) blocks cannot normalise: {error}"
            ) from None

    def _unsupported(self, key: str, supported: str) -> UnsupportedConfigError:
        value = getattr(self, key)
        where = f"{self._source()}: " if self._source() else ""
        return UnsupportedConfigError(
            f"{where}config key {key!r} has value {show_value(value)}, which diffusers knows but ddpm does not "
            "implement; "
            f"supported: {supported}"
        )

    def _check_implemented(self) -> None:
        if self.resnet_time_scale_shift == "spatial":
            raise self._unsupported("resnet_time_scale_shift", _choices(TIME_EMBEDDING_NORMS))
        for key, allowed in (
            ("resnet_time_scale_shift", TIME_EMBEDDING_NORMS),
            ("time_embedding_type", TIME_EMBEDDING_TYPES),
            ("downsample_type", RESAMPLE_TYPES),
            ("upsample_type", RESAMPLE_TYPES),
            ("class_embed_type", CLASS_EMBED_TYPES),
            ("act_fn", ACTIVATION_NAMES),
        ):
            check(getattr(self, key) in allowed, self, key, f"expected one of {_choices(allowed)}")
        check(
            self.mid_block_type is None or self.mid_block_type in MID_BLOCK_TYPES,
            self,
            "mid_block_type",
            f"expected null or one of {', '.join(map(repr, MID_BLOCK_TYPES))}",
        )
        for key, allowed in (("down_block_types", DOWN_BLOCK_TYPES), ("up_block_types", UP_BLOCK_TYPES)):
            for name in getattr(self, key):
                cls = block_class(name)
                if cls is None or cls.__name__ not in allowed:
                    source = self._source()
                    raise ConfigError(
                        f"{source + ': ' if source else ''}config key {key!r} contains "
                        f"{show_value(name)}, a block type ddpm does not implement; allowed: {', '.join(allowed)}"
                    )
        if self.time_embedding_type == "learned":
            check(
                self.num_train_timesteps is not None,
                self,
                "num_train_timesteps",
                "the 'learned' time embedding needs it (its number of rows)",
            )
        if self.norm_num_groups is None:
            names = [_block_name(n) for n in (*self.down_block_types, *self.up_block_types)]
            check(
                all(n in SKIP_BLOCK_TYPES for n in names),
                self,
                "norm_num_groups",
                f"null is only allowed when every down and up block is one of {', '.join(SKIP_BLOCK_TYPES)} (they "
                "choose their own group counts); give an integer",
            )

    def _check_shapes(self) -> None:
        n = len(self.block_out_channels)
        check(1 <= n <= MAX_LEVELS, self, "block_out_channels", f"expected 1 to {MAX_LEVELS} levels")
        check(
            all(0 < c <= MAX_WIDTH for c in self.block_out_channels),
            self,
            "block_out_channels",
            f"expected positive integers up to {MAX_WIDTH}",
        )
        for key in ("down_block_types", "up_block_types"):
            check(
                len(getattr(self, key)) == n,
                self,
                key,
                f"expected one entry per level, i.e. {n} like block_out_channels={list(self.block_out_channels)}",
            )
        for key, most in (
            ("in_channels", MAX_WIDTH), ("out_channels", MAX_WIDTH), ("layers_per_block", MAX_LAYERS_PER_BLOCK),
        ):  # fmt: skip
            check(0 < getattr(self, key) <= most, self, key, f"expected a positive integer up to {most}")
        for key, most in (
            ("time_embedding_dim", 4 * MAX_WIDTH), ("attention_head_dim", MAX_WIDTH),
            ("attn_norm_num_groups", MAX_WIDTH), ("num_train_timesteps", MAX_TRAIN_TIMESTEPS),
            ("norm_num_groups", MAX_WIDTH), ("num_class_embeds", MAX_CLASSES),
        ):  # fmt: skip
            value = getattr(self, key)
            check(value is None or 0 < value <= most, self, key, f"expected null or a positive integer up to {most}")
        check(
            abs(self.freq_shift) <= MAX_WIDTH, self, "freq_shift", f"expected an integer in [-{MAX_WIDTH}, {MAX_WIDTH}]"
        )
        check(self.norm_eps > 0, self, "norm_eps", "expected a positive number")
        check(self.mid_block_scale_factor != 0, self, "mid_block_scale_factor", "expected a non-zero number")
        check(0.0 <= self.dropout < 1.0, self, "dropout", "expected a probability in [0, 1)")
        check(self.downsample_padding in (0, 1), self, "downsample_padding", "expected 0 or 1")
        if self.sample_size is not None:
            sizes = self.sample_size if isinstance(self.sample_size, tuple) else (self.sample_size,)
            check(
                len(sizes) in (1, 2) and all(0 < s <= MAX_SAMPLE_SIZE for s in sizes),
                self,
                "sample_size",
                f"expected null, a positive integer or [height, width], each at most {MAX_SAMPLE_SIZE}",
            )
        half = self.block_out_channels[0] // 2
        check(
            self.time_embedding_type != "positional" or half - self.freq_shift != 0,
            self,
            "freq_shift",
            f"must differ from block_out_channels[0] // 2 = {half} (it divides by their difference)",
        )
        groups = self.norm_num_groups
        check(
            groups is None or all(c % groups == 0 for c in self.block_out_channels),
            self,
            "norm_num_groups",
            f"GroupNorm needs every entry of block_out_channels={list(self.block_out_channels)} to be divisible by it",
        )
        if self.mid_block_type is not None and self.add_attention and self.attn_norm_num_groups is not None:
            check(
                self.block_out_channels[-1] % self.attn_norm_num_groups == 0,
                self,
                "attn_norm_num_groups",
                f"GroupNorm needs block_out_channels[-1]={self.block_out_channels[-1]} to be divisible by it",
            )
        if self.attention_head_dim is not None:
            attn_channels = [c for c, t in zip(self.block_out_channels, self.down_block_types) if "Attn" in t]
            attn_channels += [c for c, t in zip(reversed(self.block_out_channels), self.up_block_types) if "Attn" in t]
            if self.mid_block_type is not None and self.add_attention:
                attn_channels.append(self.block_out_channels[-1])
            check(
                all(self.attention_head_dim <= c for c in attn_channels),
                self,
                "attention_head_dim",
                f"at most the channel count of every attention layer ({min(attn_channels, default=0)}), "
                "or null for one head",
            )


class UNet2DModel(DeviceLayoutMixin, GradientCheckpointingMixin, ModelMixin):
    """The DDPM UNet: predicts the noise (or another target) for a noisy image batch at given timesteps.

    Build it with fresh weights from a config (``UNet2DModel(config)``, ``UNet2DModel(**keys)``,
    ``UNet2DModel.from_config(dict)``) or with trained weights via :meth:`from_pretrained`. Modules are created in
    diffusers' order, so ``torch.manual_seed(s); UNet2DModel(**keys)`` gives diffusers' initial weights.

    Args:
        config: A :class:`UNet2DConfig` or a mapping of its keys (unknown keys are ignored).
        **kwargs: Config keys, given directly (they override ``config``); an unknown key is a ``TypeError``.

    Example:
        >>> unet = UNet2DModel.from_pretrained("google/ddpm-ema-celebahq-256")  # doctest: +SKIP
        >>> eps = unet(noisy_images, 999).sample  # doctest: +SKIP
    """

    config_class: ClassVar[type[ConfigBase]] = UNet2DConfig
    config: UNet2DConfig

    def __init__(self, config: UNet2DConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = UNet2DConfig(**kwargs)
        elif isinstance(config, UNet2DConfig):
            config = dataclasses.replace(config, **kwargs) if kwargs else config  # unknown keys: TypeError
        else:
            config = UNet2DConfig.from_dict(config, **kwargs)
        self.config = config
        channels = config.block_out_channels
        settings = BlockSettings(
            temb_channels=config.temb_channels,
            groups=config.norm_num_groups,
            eps=config.norm_eps,
            act_fn=config.act_fn,
            dropout=config.dropout,
            attention_head_dim=config.attention_head_dim,
            downsample_padding=config.downsample_padding,
            time_embedding_norm=config.resnet_time_scale_shift,
            downsample_type=config.downsample_type,
            upsample_type=config.upsample_type,
            image_channels=(config.in_channels, config.out_channels),
        )

        self.conv_in = nn.Conv2d(config.in_channels, channels[0], kernel_size=3, padding=1)
        # Timestep features: sinusoidal (no parameters), Fourier (fixed random frequencies) or a learned table.
        self.time_proj: nn.Module | None = None
        features = channels[0]
        if config.time_embedding_type == "fourier":
            self.time_proj = GaussianFourierProjection(channels[0], scale=FOURIER_SCALE)
            features = 2 * channels[0]
        elif config.time_embedding_type == "learned":
            assert config.num_train_timesteps is not None  # the config has checked it
            self.time_proj = nn.Embedding(config.num_train_timesteps, channels[0])
        self.time_embedding = TimestepEmbedding(features, config.temb_channels)
        # Class conditioning: an embedding of width temb_channels added to the time embedding.
        self.class_embedding: nn.Module | None = None
        if config.class_embed_type is None and config.num_class_embeds is not None:
            self.class_embedding = nn.Embedding(config.num_class_embeds, config.temb_channels)
        elif config.class_embed_type == "timestep":
            self.class_embedding = TimestepEmbedding(features, config.temb_channels)
        elif config.class_embed_type == "identity":
            self.class_embedding = nn.Identity()

        last = len(channels) - 1
        self.down_blocks = nn.ModuleList()
        for i, name in enumerate(config.down_block_types):
            block = block_class(name)
            assert block is not None  # the config has checked the names
            self.down_blocks.append(
                block(channels[max(i - 1, 0)], channels[i], config.layers_per_block, i < last, settings)
            )

        self.mid_block = (
            UNetMidBlock2D(
                channels[-1],
                settings,
                output_scale_factor=config.mid_block_scale_factor,
                add_attention=config.add_attention,
                attn_groups=config.attn_norm_num_groups,
            )
            if config.mid_block_type is not None
            else None
        )

        reversed_channels = list(reversed(channels))
        self.up_blocks = nn.ModuleList()
        for i, name in enumerate(config.up_block_types):
            block = block_class(name)
            assert block is not None
            self.up_blocks.append(
                block(
                    reversed_channels[min(i + 1, last)],  # skip channels from the level below
                    reversed_channels[max(i - 1, 0)],  # channels coming from the previous up block
                    reversed_channels[i],
                    config.layers_per_block + 1,
                    i < last,
                    settings,
                )
            )

        groups_out = ncsnpp_groups(channels[0]) if config.norm_num_groups is None else config.norm_num_groups
        self.conv_norm_out = group_norm(groups_out, channels[0], config.norm_eps)
        self.conv_act = Activation("silu")
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, kernel_size=3, padding=1)
        relayout_convolutions(self)  # the device's preferred layout; DeviceLayoutMixin keeps it across .to()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple[torch.Tensor]:
        """Predict the model target for ``sample`` at ``timestep``.

        Args:
            sample: Noisy images, shape (B, in_channels, H, W); H and W divisible by ``2 ** num_downsamplers``.
                Its dtype must match the model's unless autocast is on.
            timestep: A Python int or float, a 0-d tensor, or a 1-d tensor of length 1 or B. Fractional values are
                used as given (diffusers truncates Python floats). One value serves the whole batch. With the
                ``"fourier"`` embedding it is the noise level σ > 0; with ``"learned"`` it is truncated to an index.
            class_labels: Required by a class-conditional model, refused by others: B (or 1) integer labels in
                ``[0, num_class_embeds)`` for the class table; labels embedded like timesteps for ``"timestep"``;
                embeddings of shape (B or 1, time_embedding_dim) for ``"identity"``.
            return_dict: Return a :class:`~ddpm.outputs.UNet2DOutput` (default) or a 1-tuple.

        Returns:
            ``UNet2DOutput(sample)`` with the prediction, shape (B, out_channels, H, W), contiguous.

        Raises:
            ValueError: The sample's shape, channel count, dtype or device is wrong, a timestep is not finite or
                does not broadcast to the batch, or ``class_labels`` is missing, unexpected or malformed.
            TypeError: ``sample`` is not a tensor or ``timestep`` is not a number or tensor.
        """
        self._check_sample(sample)
        t = self._timesteps(timestep, sample)
        cfg = self.config

        if cfg.center_input_sample:
            sample = 2 * sample - 1.0

        # Timestep features in float32, then the MLP in the model's dtype. temb: (Bt, E) with Bt = 1 or B.
        dtype = self.time_embedding.linear_1.weight.dtype
        temb = self.time_embedding(self._time_features(t).to(dtype))
        class_emb = self._class_embedding(class_labels, sample)
        if class_emb is not None:
            temb = temb + class_emb.to(dtype)  # (B or 1, E)

        image = sample  # the image path of the NCSN++ (Skip) down blocks
        h = self.conv_in(sample)
        skips = [h]
        for down in self.down_blocks:
            if is_skip_block(down):
                h, block_skips, image = down(h, temb, image)
            else:
                h, block_skips = down(h, temb)
            skips.extend(block_skips)
        if self.mid_block is not None:
            h = self.mid_block(h, temb)
        out_image: torch.Tensor | None = None  # the image path of the Skip up blocks
        for up in self.up_blocks:
            if is_skip_block(up):
                h, out_image = up(h, skips, temb, out_image)
            else:
                h = up(h, skips, temb)

        h = self.conv_act(self.conv_norm_out(h))
        out = self.conv_out(h)  # (B, out_channels, H, W)
        if out_image is not None:
            out = out + out_image
        if cfg.time_embedding_type == "fourier":
            out = out / t.to(out.dtype).reshape(-1, 1, 1, 1)  # NCSN++ predicts the score times σ
        out = out.contiguous()  # standard layout for the caller
        return UNet2DOutput(sample=out) if return_dict else (out,)

    def _time_features(self, t: torch.Tensor) -> torch.Tensor:
        """Timestep (or label) features, shape (Bt,) -> (Bt, F); float32 except for the learned table."""
        cfg = self.config
        if self.time_proj is None:
            return timestep_embedding(
                t, cfg.block_out_channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos, freq_shift=cfg.freq_shift
            )
        if isinstance(self.time_proj, nn.Embedding):
            return self.time_proj(t.long())  # (Bt, C), integer timesteps index the table
        features: torch.Tensor = self.time_proj(t)  # Fourier features of log σ
        return features

    def _class_embedding(self, class_labels: torch.Tensor | None, sample: torch.Tensor) -> torch.Tensor | None:
        """The class embedding to add to temb, shape (B or 1, E), or None for an unconditional model."""
        cfg = self.config
        if self.class_embedding is None:
            if class_labels is not None:
                raise ValueError(
                    "class_labels were given, but this model is not class-conditional (its config has "
                    "class_embed_type=None and num_class_embeds=None); drop class_labels or build the model with "
                    "num_class_embeds=N"
                )
            return None
        kind = cfg.class_embed_type or "table"
        if class_labels is None:
            raise ValueError(
                f"class_labels are required: this model is class-conditional (class_embed_type={cfg.class_embed_type!r}"
                f", num_class_embeds={cfg.num_class_embeds}); pass a tensor of {sample.shape[0]} labels"
            )
        if not torch.is_tensor(class_labels):
            raise TypeError(f"class_labels must be a torch.Tensor, got {type(class_labels).__name__}")
        batch = sample.shape[0]
        expected_ndim = 2 if kind == "identity" else 1
        if class_labels.ndim != expected_ndim or class_labels.shape[0] not in (1, batch):
            form = "(B, time_embedding_dim) embeddings" if kind == "identity" else "B labels, shape (B,)"
            raise ValueError(
                f"class_labels of shape {tuple(class_labels.shape)} do not fit a batch of {batch}: pass {form}"
            )
        if kind == "table" and (class_labels.is_floating_point() or class_labels.is_complex()):
            raise ValueError(
                f"class_labels have dtype {class_labels.dtype}; the class table needs integer labels, e.g. "
                "class_labels.long()"
            )
        class_labels = class_labels.to(sample.device)
        if kind == "timestep":
            class_labels = self._time_features(class_labels).to(self.time_embedding.linear_1.weight.dtype)
        emb: torch.Tensor = self.class_embedding(class_labels)
        return emb

    def _check_sample(self, sample: torch.Tensor) -> None:
        if not torch.is_tensor(sample):
            raise TypeError(f"sample must be a torch.Tensor of shape (B, C, H, W), got {type(sample).__name__}")
        if sample.ndim != 4:
            raise ValueError(f"sample must have shape (B, C, H, W); got shape {tuple(sample.shape)}")
        cfg = self.config
        if sample.shape[1] != cfg.in_channels:
            raise ValueError(
                f"sample has {sample.shape[1]} channels (shape {tuple(sample.shape)}), but the model takes "
                f"in_channels={cfg.in_channels}"
            )
        divisor = 2**cfg.num_downsamplers
        height, width = sample.shape[-2:]
        if height % divisor or width % divisor:
            raise ValueError(
                f"sample spatial size {height}x{width} is not divisible by {divisor} (2**{cfg.num_downsamplers}, one "
                f"halving per downsampler); resize or pad it to a multiple of {divisor}"
            )
        weight = self.conv_in.weight
        if sample.device != weight.device:
            raise ValueError(
                f"sample is on {sample.device} but the model is on {weight.device}; move one of them, e.g. "
                f"sample.to({str(weight.device)!r}) or model.to({str(sample.device)!r})"
            )
        if not sample.is_floating_point():
            raise ValueError(
                f"sample has dtype {sample.dtype}; pass floating-point images, e.g. sample.to({weight.dtype})"
            )
        if sample.dtype != weight.dtype and not _autocast_enabled(sample.device.type):
            raise ValueError(
                f"sample has dtype {sample.dtype} but the model's parameters are {weight.dtype}; pass "
                f"sample.to({weight.dtype}) or convert the model with .to({sample.dtype})"
            )

    @staticmethod
    def _timesteps(timestep: torch.Tensor | float | int, sample: torch.Tensor) -> torch.Tensor:
        """The timesteps as a 1-d tensor on the sample's device: shape (1,) for one shared value, else (B,)."""
        batch = sample.shape[0]
        if torch.is_tensor(timestep):
            t = timestep.reshape(1) if timestep.ndim == 0 else timestep
            if t.ndim != 1 or t.shape[0] not in (1, batch):
                raise ValueError(
                    f"timestep tensor of shape {tuple(timestep.shape)} does not fit a batch of {batch}; pass a "
                    f"0-d tensor, or a 1-d tensor of length 1 or {batch}"
                )
            if t.dtype == torch.bool or t.is_complex():
                raise ValueError(f"timestep tensor has dtype {t.dtype}; pass integer or floating-point timesteps")
            # Integer timesteps (what schedulers give) are always finite: no device sync is needed to check them.
            # Float ones are read on the host, except under torch.compile, where reading them would split the graph:
            # there the check is an assertion inside the graph (a RuntimeError when it fails).
            if t.is_floating_point():
                if is_compiling():
                    torch._assert_async(torch.isfinite(t).all(), "timestep holds non-finite values")
                elif not bool(torch.isfinite(t).all()):
                    raise ValueError(f"timestep holds non-finite values: {t.tolist()}")
            return t.to(sample.device)
        if isinstance(timestep, bool) or not isinstance(timestep, numbers.Real):
            raise TypeError(f"timestep must be a number or a tensor, got {type(timestep).__name__}: {timestep!r}")
        value = float(timestep)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"timestep must be finite, got {timestep!r}")
        # float32, as the embedding uses anyway (exact for integers below 2**24).
        return torch.tensor([value], dtype=torch.float32, device=sample.device)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
