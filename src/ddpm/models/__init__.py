"""The UNet2DModel of DDPM and its building blocks (see :mod:`ddpm.models.unet_2d`)."""

from __future__ import annotations

from .modeling import ModelMixin
from .unet_2d import UNet2DConfig, UNet2DModel

__all__ = ["ModelMixin", "UNet2DConfig", "UNet2DModel"]
