"""``ModelMixin``: config-driven construction, ``from_pretrained`` and ``save_pretrained`` for ddpm models.

A model folder holds ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or, in older repos,
``diffusion_pytorch_model.bin``), the same layout diffusers reads and writes, so folders move between the two
libraries in both directions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
from torch import nn

from ..config import ConfigBase
from ..hub import HubOptions, require
from ..io import Writer, atomic_write_files, check_save_folder, remove_stale_temporaries
from ..mixins import ConfigMixin, PushToHubMixin, config_attribute
from ..runtime import resolve_dtype  # re-exported: ``from ddpm.models.modeling import resolve_dtype`` keeps working
from .loading import SAFETENSORS_WEIGHTS_NAME, find_weights_file, load_into, load_state_dict_file, rename_legacy_keys

__all__ = ["ModelMixin", "resolve_dtype"]

M = TypeVar("M", bound="ModelMixin")


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
        """
        return cls(cls.config_class.from_dict(config, **overrides))

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
        use_safetensors: bool | None = None,
    ) -> M:
        """Load a model from a local folder or a Hugging Face Hub repo.

        The config and the weights are read from ``subfolder`` when it holds a config, otherwise from the repo root
        (the google/ddpm-* repos keep everything at the root). Weights come from
        ``diffusion_pytorch_model.safetensors`` when present, else from ``diffusion_pytorch_model.bin`` (read with
        ``torch.load(weights_only=True)``). Legacy attention names are renamed. The model is returned in eval mode.

        Args:
            repo_id_or_path: A Hub id (``"google/ddpm-ema-celebahq-256"``) or a local folder.
            subfolder: The component folder to try first, e.g. ``"unet"`` in a pipeline repo.
            revision: A Hub branch, tag or commit.
            cache_dir: The Hugging Face cache to use instead of ``HF_HUB_CACHE``.
            local_files_only: Never download; use the cache only (``HF_HUB_OFFLINE=1`` does the same).
            token: A Hub token for private or gated repos.
            torch_dtype: The dtype of the parameters (default float32), e.g. ``torch.float16``.
            use_safetensors: True requires the safetensors file (no fallback), False reads the ``.bin`` file,
                None (default) prefers safetensors.

        Raises:
            CheckpointNotFoundError: The folder/repo, its config or its weights cannot be found.
            ConfigError: The config is malformed or uses a value ddpm does not implement.
            WeightsError: The weights file is damaged or does not fit the config (all differences listed).
            UnsafeCheckpointError: A ``.bin`` file carries pickled objects other than tensors.
        """
        options = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        return cls._from_pretrained(
            repo_id_or_path, subfolder, options, torch_dtype=torch_dtype, use_safetensors=use_safetensors
        )

    @classmethod
    def _from_pretrained(
        cls: type[M],
        repo_id_or_path: str | os.PathLike[str],
        subfolder: str | None,
        options: HubOptions,
        *,
        torch_dtype: torch.dtype | str | None = None,
        use_safetensors: bool | None = None,
    ) -> M:
        """:meth:`from_pretrained` with the download options gathered; pipelines load their UNet through it."""
        dtype = resolve_dtype(torch_dtype)
        config_file = require(repo_id_or_path, cls.config_class.config_name, subfolder, options, what="model config")
        config = cls.config_class.from_json_file(config_file.path)
        # The weights sit beside the config: in the subfolder when it has the config, else at the root.
        weights_path = find_weights_file(
            repo_id_or_path, config_file.subfolder, options, use_safetensors=use_safetensors
        )
        state = rename_legacy_keys(load_state_dict_file(weights_path))
        with torch.device("meta"):
            model = cls(config)
        load_into(model, state, source=weights_path, dtype=dtype or torch.float32)
        return model.eval()

    def save_pretrained(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` to ``folder``, all or nothing.

        Both files are written to temporary names first and renamed into place together, so an interrupted save
        leaves the previous model intact. diffusers' ``from_pretrained`` reads the result, and so does
        :meth:`from_pretrained`.

        Args:
            folder: The folder to write (created if missing). A model of the same class there is replaced.
            overwrite: Also replace another kind of model: by default a folder whose ``config.json`` names another
                class, or that holds a pipeline (``model_index.json``; save into its ``unet/`` instead), is refused.

        Returns:
            The folder.

        Raises:
            OverwriteError: ``folder`` holds another kind of model (and ``overwrite`` is False), or is a file.
        """
        files = self._save_plan(folder, overwrite=overwrite)
        remove_stale_temporaries(files)
        atomic_write_files(files)
        return Path(folder)

    def _save_plan(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> dict[Path, Writer]:
        """Check ``folder`` (see :meth:`save_pretrained`) and return the files to write there, unwritten."""
        from safetensors.torch import save_file

        config = self.config
        folder = check_save_folder(
            folder,
            what=f"a {type(self).__name__}",
            owned={config.config_name: lambda name: name == config._class_name},
            foreign={"model_index.json": "a pipeline; save the model into its unet/ folder"},
            overwrite=overwrite,
        )
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}

        def write_weights(tmp: Path) -> None:
            save_file(state, str(tmp), metadata={"format": "pt"})

        def write_config(tmp: Path) -> None:
            tmp.write_text(config.to_json_string(), encoding="utf-8")

        return {folder / SAFETENSORS_WEIGHTS_NAME: write_weights, folder / config.config_name: write_config}

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute name on models

        def __getattr__(self, name: str) -> Any:
            """Parameters, buffers and submodules first (nn.Module's lookup), then a config key read as an attribute
            (deprecated, with a FutureWarning, as in diffusers; see :func:`ddpm.mixins.config_attribute`)."""
            try:
                return super().__getattr__(name)
            except AttributeError:
                return config_attribute(self, name)
