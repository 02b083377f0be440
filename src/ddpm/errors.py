"""The exceptions ddpm raises for bad files and bad input.

Each subclasses a built-in exception users already catch (``ValueError``, ``FileNotFoundError``), so code written
for diffusers that catches those keeps working, while ``except ddpm.DDPMError`` catches everything of ours.
"""

from __future__ import annotations

__all__ = [
    "CheckpointNotFoundError",
    "ConfigError",
    "DDPMError",
    "ImageError",
    "OverwriteError",
    "ResourceLimitError",
    "SaveError",
    "UnsafeCheckpointError",
    "UnsupportedConfigError",
    "VariantNotFoundError",
    "WeightsError",
]


class DDPMError(Exception):
    """Base class of every exception ddpm raises on purpose."""


class ConfigError(DDPMError, ValueError):
    """A config file or value is malformed, has the wrong type, or is not supported.

    The message names the file (when there is one), the key, the value and what is allowed.
    """


class UnsupportedConfigError(ConfigError, NotImplementedError):
    """A config value is valid for diffusers but not implemented by ddpm (e.g. ``resnet_time_scale_shift="spatial"``).

    It is both a :class:`ConfigError` and a :class:`NotImplementedError`; the message names the key and the value.
    """


class WeightsError(DDPMError, ValueError):
    """A weights file is damaged or does not fit the model (missing, unexpected or mis-shaped tensors)."""


class UnsafeCheckpointError(WeightsError):
    """A pickle (``.bin``) checkpoint holds objects other than plain tensors; it was refused and nothing ran."""


class CheckpointNotFoundError(DDPMError, FileNotFoundError):
    """A model id is neither a local folder nor available (from the cache, or online when allowed)."""


class VariantNotFoundError(CheckpointNotFoundError, ValueError):
    """``from_pretrained(..., variant=...)`` found no weights of that variant; the message names the files present.

    It is a :class:`CheckpointNotFoundError` (an ``OSError``, as diffusers raises for a model) and a ``ValueError``
    (as diffusers raises for a pipeline).
    """


class OverwriteError(DDPMError, FileExistsError):
    """``save_pretrained`` refused to write into a folder that holds another kind of model (or is a file).

    Pass ``overwrite=True`` to replace the files anyway.
    """


class ResourceLimitError(DDPMError, MemoryError):
    """A request would need more memory (or another resource) than the machine has; it was refused before allocating.

    The message gives the estimate, the limit and how to lower the request.
    """


class SaveError(DDPMError, OSError):
    """Saving failed because of the disk or the file system: the disk is full, permission is denied, the file system
    is read-only, or a file stands where a folder is needed.

    The message names the path and what to do; the previous files are unchanged (every save writes temporary files
    first and renames them into place only when all are complete).
    """


class ImageError(DDPMError, ValueError):
    """An input image or mask cannot be used: not a readable image file, too large, or of the wrong size, shape,
    range or number of channels. The message names the image (its file, when there is one) and what is expected."""
