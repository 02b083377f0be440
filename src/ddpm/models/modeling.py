"""``ModelMixin``: config-driven construction, ``from_pretrained`` and ``save_pretrained`` for ddpm models.

A model folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or, in older repos,
``diffusion_pytorch_model.bin``), the same layout diffusers reads and writes, so folders move between the two
libraries in both directions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn

from ..config import ConfigBase
from ..hub import HubOptions, require
from ..io import Writer, atomic_write_files, check_save_folder, finish_interrupted_save, remove_stale_temporaries
from ..memory import check_fits
from ..mixins import ConfigMixin, PushToHubMixin, config_attribute, upload_folder
from ..runtime import resolve_dtype  # re-exported: ``from ddpm.models.modeling import resolve_dtype`` keeps working
from .loading import (
    DEFAULT_MAX_SHARD_SIZE,
    find_weights,
    load_into,
    load_weights,
    rename_legacy_keys,
    resolve_device_map,
    resolve_load_dtype,
    stale_weights,
    weights_writers,
)

__all__ = [
    "PUSH_KWARGS",
    "ModelMixin",
    "WeightsOptions",
    "check_parameters_fit",
    "check_push_kwargs",
    "finish_interrupted_saves",
    "push_folder",
    "resolve_dtype",
]

M = TypeVar("M", bound="ModelMixin")

#: The keywords ``save_pretrained(..., push_to_hub=True, **kwargs)`` passes on to the upload.
PUSH_KWARGS = frozenset({"repo_id", "commit_message", "private", "token", "create_pr", "revision"})


@dataclass(frozen=True)
class WeightsOptions:
    """How ``from_pretrained`` reads and places a model's weights, checked (see :meth:`ModelMixin.from_pretrained`).

    Attributes:
        dtype: The floating-point dtype of the parameters (None: float32).
        device: The device the parameters are created on (None: the CPU).
        use_safetensors: None (prefer safetensors), True (only safetensors), False (only ``.bin``).
        variant: The weights variant (``"fp16"``), or None for the plain weights.
    """

    dtype: torch.dtype | None = None
    device: torch.device | None = None
    use_safetensors: bool | None = None
    variant: str | None = None


def check_push_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords of ``save_pretrained`` that are neither its own nor the upload's (:data:`PUSH_KWARGS`).

    Raises:
        TypeError: An unknown keyword, named.
    """
    unknown = sorted(set(kwargs) - PUSH_KWARGS)
    if unknown:
        raise TypeError(
            f"save_pretrained() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"with push_to_hub=True it also takes {', '.join(sorted(PUSH_KWARGS))}"
        )


def push_folder(folder: Path, class_name: str, **kwargs: Any) -> Any:
    """Upload a folder ``save_pretrained`` just wrote (``save_pretrained(..., push_to_hub=True)``).

    Args:
        folder: The saved folder.
        class_name: For the default commit message, ``"Upload <class_name>"``.
        **kwargs: :data:`PUSH_KWARGS`; ``repo_id`` defaults to the folder's name, as in diffusers.

    Returns:
        huggingface_hub's ``CommitInfo``.
    """
    repo_id = kwargs.pop("repo_id", None) or folder.resolve().name
    kwargs["commit_message"] = kwargs.get("commit_message") or f"Upload {class_name}"
    return upload_folder(folder, repo_id, **kwargs)


def parameter_bytes(model: nn.Module, dtype: torch.dtype) -> int:
    """The bytes ``model``'s parameters and buffers (built on the ``meta`` device) take in ``dtype``."""
    return sum(t.numel() for t in (*model.parameters(), *model.buffers())) * dtype.itemsize


def check_parameters_fit(model: nn.Module, dtype: torch.dtype, device: torch.device | None) -> None:
    """Refuse to allocate ``model``'s parameters and buffers (built on the ``meta`` device) in ``dtype`` on ``device``
    when they exceed the memory there (:func:`ddpm.memory.check_fits`).

    Raises:
        ResourceLimitError: The estimate, the limit and how to lower it.
    """
    count = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    check_fits(
        parameter_bytes(model, dtype),
        what=f"building a {type(model).__name__} with {count:,} parameters in {str(dtype).replace('torch.', '')}",
        lower="use a smaller config (fewer or narrower block_out_channels, fewer layers_per_block)",
        device=device,
    )


def finish_interrupted_saves(repo_id_or_path: str | os.PathLike[str], subfolder: str | None) -> None:
    """Before loading a local folder, complete a save of it that was killed between its renames (the folder, its
    ``subfolder``, or the pipeline folder around it): see :func:`ddpm.io.finish_interrupted_save`."""
    folder = Path(repo_id_or_path)
    if not folder.is_dir():
        return
    for candidate in (folder.parent, folder, *([folder / subfolder] if subfolder else [])):
        finish_interrupted_save(candidate)


class ModelMixin(nn.Module, ConfigMixin, PushToHubMixin):
    """Base of ddpm models: a ``config`` attribute plus the diffusers-style loading and saving methods.

    Subclasses set :attr:`config_class` and take their config as the first constructor argument.
    """

    config_class: ClassVar[type[ConfigBase]]
    config: ConfigBase

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls: type[M], config: Any, **overrides: Any) -> M:
        """Build a model with fresh (randomly initialised) weights from a config.

        Args:
            config: A config object of this model, a dict of diffusers JSON keys, or a diffusers ``FrozenDict``.
                Unknown and private keys are ignored.
            **overrides: Keys that replace those in ``config``.

        Returns:
            The model, in training mode like any new ``nn.Module``.

        Raises:
            ConfigError: A value is malformed or not implemented; the message names the key and the value.
            ResourceLimitError: The parameters would not fit in memory (counted on the ``meta`` device first).
        """
        config = cls.config_class.from_dict(config, **overrides)
        if torch.get_default_device().type != "meta":  # on meta nothing is allocated
            with torch.device("meta"):
                probe = cls(config)
            check_parameters_fit(probe, torch.get_default_dtype(), torch.get_default_device())
        return cls(config)

    @property
    def device(self) -> torch.device:
        """The device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the (floating-point) parameters."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls: type[M],
        repo_id_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        torch_dtype: torch.dtype | str | None = None,
        *,
        dtype: torch.dtype | str | None = None,
        use_safetensors: bool | None = None,
        variant: str | None = None,
        device_map: str | int | torch.device | Mapping[str, str | int | torch.device] | None = None,
        low_cpu_mem_usage: bool | None = None,
    ) -> M:
        """Load a model from a local folder or a Hugging Face Hub repo.

        The config and the weights are read from ``subfolder`` when it holds a config, otherwise from the repo root
        (the google/ddpm-* repos keep everything at the root). Weights come from
        ``diffusion_pytorch_model.safetensors`` when present, else from ``diffusion_pytorch_model.bin`` (read with
        ``torch.load(weights_only=True)`` after a scan that refuses pickled code), or from a sharded checkpoint
        (``diffusion_pytorch_model.safetensors.index.json`` and the shards it lists, each checked against it).
        Legacy attention names are renamed. Loading is strict: every missing, unexpected or mis-shaped tensor is
        reported. The model is returned in eval mode.

        The model is built without memory (on the ``meta`` device) and each parameter is created once, from the file,
        in the wanted dtype on the wanted device: there is never a randomly initialised copy.

        Args:
            repo_id_or_path: A Hub id (``"google/ddpm-ema-celebahq-256"``) or a local folder.
            subfolder: The component folder to try first, e.g. ``"unet"`` in a pipeline repo.
            revision: A Hub branch, tag or commit.
            cache_dir: The Hugging Face cache to use instead of ``HF_HUB_CACHE``.
            local_files_only: Never download; use the cache only (``HF_HUB_OFFLINE=1`` does the same).
            token: A Hub token for private or gated repos.
            torch_dtype: The dtype of the parameters (default float32), e.g. ``torch.float16``.
            dtype: The same option under diffusers' newer name; passing both with different values is an error.
            use_safetensors: True requires safetensors files (no fallback), False reads the ``.bin`` files,
                None (default) prefers safetensors.
            variant: Load ``diffusion_pytorch_model.<variant>.safetensors`` (e.g. ``"fp16"``) instead of the plain
                weights; absent variant files are an error that lists the weights files present.
            device_map: Where the parameters are created: a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``0``,
                ``torch.device``), ``"auto"`` (the first GPU, else the CPU; ``"balanced"`` and ``"sequential"`` mean
                the same), or a dict whose values name one device. Default: the CPU. A model is never split across
                devices; a dict naming several is refused.
            low_cpu_mem_usage: Accepted for diffusers compatibility and ignored: loading never makes a second,
                randomly initialised copy of the model (see above).

        Raises:
            CheckpointNotFoundError: The folder/repo, its config or its weights cannot be found (a missing variant
                raises :class:`~ddpm.errors.VariantNotFoundError`).
            ConfigError: The config is malformed or uses a value ddpm does not implement.
            WeightsError: The weights are damaged, do not fit the config (all differences listed), or a shard does
                not match its index.
            UnsafeCheckpointError: A ``.bin`` file carries pickled objects other than tensors.
            ResourceLimitError: The parameters, or the tensors the weights files declare, would not fit in memory
                (refused before reading a tensor).
            SaveError: The folder holds a save that was interrupted and cannot be completed (see
                :func:`ddpm.io.finish_interrupted_save`).
            ValueError: A dtype, variant or device_map is malformed, or ``torch_dtype`` and ``dtype`` disagree.
            NotImplementedError: ``device_map`` spreads the model over several devices.
        """
        del low_cpu_mem_usage  # ddpm's one way of loading is the low-memory one
        options = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        load = WeightsOptions(
            dtype=resolve_load_dtype(torch_dtype, dtype),
            device=resolve_device_map(device_map),
            use_safetensors=use_safetensors,
            variant=variant,
        )
        return cls._from_pretrained(repo_id_or_path, subfolder, options, load)

    @classmethod
    def _from_pretrained(
        cls: type[M],
        repo_id_or_path: str | os.PathLike[str],
        subfolder: str | None,
        options: HubOptions,
        load: WeightsOptions = WeightsOptions(),
    ) -> M:
        """:meth:`from_pretrained` with its options gathered and checked; pipelines load their UNet through it."""
        finish_interrupted_saves(repo_id_or_path, subfolder)
        config_file = require(repo_id_or_path, cls.config_class.config_name, subfolder, options, what="model config")
        config = cls.config_class.from_json_file(config_file.path)
        with torch.device("meta"):
            model = cls(config)
        dtype = load.dtype or torch.float32
        check_parameters_fit(model, dtype, load.device)
        # The weights sit beside the config: in the subfolder when it has the config, else at the root.
        weights = find_weights(
            repo_id_or_path,
            config_file.subfolder,
            options,
            use_safetensors=load.use_safetensors,
            variant=load.variant,
        )
        # load_into copies each tensor of the file into a new parameter: on the CPU both are in memory at once.
        on_cpu = load.device is None or load.device.type == "cpu"
        copies = parameter_bytes(model, dtype) if on_cpu else 0
        state = rename_legacy_keys(load_weights(weights, expected=model, copied_into=copies))
        load_into(model, state, source=weights.source, dtype=dtype, device=load.device)
        if load.device is not None:
            model.to(load.device)  # buffers made by the constructor; the parameters are there already
        return model.eval()

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE,
        push_to_hub: bool = False,
        overwrite: bool = False,
        **push_kwargs: Any,
    ) -> Path:
        """Write ``config.json`` and the weights to ``save_directory``, all or nothing, in diffusers' file names.

        The weights go to ``diffusion_pytorch_model[.<variant>].safetensors`` (``.bin``, a ``torch.save`` of the
        plain state dict, with ``safe_serialization=False``), or, above ``max_shard_size``, to shards
        ``diffusion_pytorch_model[.<variant>]-0000k-of-0000N.safetensors`` listed in
        ``diffusion_pytorch_model.safetensors.index[.<variant>].json``. Every file is written to a temporary name
        first and they are renamed into place together, so an interrupted save leaves the previous model intact (a
        save killed between its renames is completed from its journal by the next save or load of the folder);
        weights files of the same variant left from an earlier save (other shards, the other format) are then
        removed. Concurrent saves to one folder take turns (a lock on the folder). Files get the mode an ordinary
        ``open()`` gives. diffusers' ``from_pretrained`` reads the result, and so does :meth:`from_pretrained`.

        Args:
            save_directory: The folder to write (created if missing). A model of the same class there is replaced.
            safe_serialization: Write safetensors (default) or a ``.bin`` pickle.
            variant: Insert this name into the weights file names (``"fp16"``); load them with ``variant=``.
            max_shard_size: The largest weights file, in bytes or as ``"10GB"``/``"500MB"``/``"300KB"`` (default
                ``"10GB"``, diffusers' default); None never shards.
            push_to_hub: Then upload the folder to the Hub repo ``repo_id`` (default: the folder's name).
            overwrite: Also replace another kind of model: by default a folder whose ``config.json`` names another
                class, or that holds a pipeline (``model_index.json``; save into its ``unet/`` instead), is refused.
            **push_kwargs: With ``push_to_hub``: ``repo_id``, ``commit_message``, ``private``, ``token``,
                ``create_pr``, ``revision``.

        Returns:
            The folder.

        Raises:
            OverwriteError: ``save_directory`` holds another kind of model (and ``overwrite`` is False), or is a file.
            SaveError: The disk is full, permission is denied, or the file system is read-only; nothing was changed.
            ValueError: ``variant`` or ``max_shard_size`` is malformed.
            TypeError: An unknown keyword argument.
        """
        check_push_kwargs(push_kwargs)
        files = self._save_plan(
            save_directory,
            overwrite=overwrite,
            safe_serialization=safe_serialization,
            variant=variant,
            max_shard_size=max_shard_size,
        )
        folder = Path(save_directory)
        remove_stale_temporaries(files)
        atomic_write_files(files, remove=stale_weights(folder, {p.name for p in files}, variant))
        if push_to_hub:
            push_folder(folder, type(self).__name__, **push_kwargs)
        return folder

    def _save_plan(
        self,
        folder: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE,
    ) -> dict[Path, Writer]:
        """Check ``folder`` (see :meth:`save_pretrained`) and return the files to write there, unwritten: the
        weights (shards before their index), then ``config.json``."""
        config = self.config
        folder = check_save_folder(
            folder,
            what=f"a {type(self).__name__}",
            owned={config.config_name: lambda name: name == config._class_name},
            foreign={"model_index.json": "a pipeline; save the model into its unet/ folder"},
            overwrite=overwrite,
        )
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        weights = weights_writers(
            state, safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size
        )
        files: dict[Path, Writer] = {folder / name: write for name, write in weights.items()}

        def write_config(tmp: Path) -> None:
            tmp.write_text(config.to_json_string(), encoding="utf-8")

        files[folder / config.config_name] = write_config
        return files

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute name on models

        def __getattr__(self, name: str) -> Any:
            """Parameters, buffers and submodules first (nn.Module's lookup), then a config key read as an attribute
            (deprecated, with a FutureWarning, as in diffusers; see :func:`ddpm.mixins.config_attribute`)."""
            try:
                return super().__getattr__(name)
            except AttributeError:
                return config_attribute(self, name)
