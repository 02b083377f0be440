"""The config and Hub methods diffusers users call on every scheduler, model and pipeline.

:class:`ConfigMixin` gives a class with a ``config`` (a :class:`~ddpm.config.ConfigBase`) diffusers'
``save_config`` / ``load_config``; :class:`PushToHubMixin` gives anything with a ``save_pretrained`` diffusers'
``push_to_hub``, which saves into a temporary folder and uploads it with huggingface_hub. Both are defined once here
and mixed into :class:`~ddpm.schedulers.base.Scheduler`, :class:`~ddpm.models.modeling.ModelMixin` and
:class:`~ddpm.pipelines.pipeline.DiffusionPipeline`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .config import ConfigBase, read_json
from .errors import OverwriteError
from .hub import HubOptions, require
from .io import atomic_write_text

__all__ = ["ConfigMixin", "PushToHubMixin", "config_attribute", "upload_folder"]


def config_attribute(obj: object, name: str) -> Any:
    """``obj.<config key>``: diffusers' deprecated attribute access to a config key, with a ``FutureWarning``.

    Called by ``__getattr__`` (so only for names that are not real attributes). The config stays the one source:
    the value is read from ``obj.config`` (its keys, then the keys carried with it), never copied onto ``obj``.

    Raises:
        AttributeError: ``name`` is not a config key either (the usual message).
    """
    config = obj.__dict__.get("config") if not name.startswith("__") else None
    if isinstance(config, ConfigBase) and not name.startswith("_"):
        extra = config.extra_keys()
        if name in config or name in extra:
            warnings.warn(
                f"reading the config key {name!r} as an attribute of {type(obj).__name__} is deprecated (as in "
                "diffusers); read it from .config instead",
                FutureWarning,
                stacklevel=3,
            )
            return config[name] if name in config else extra[name]
    raise AttributeError(f"'{type(obj).__name__}' object has no attribute '{name}'")


def upload_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    commit_message: str,
    private: bool | None = None,
    token: str | bool | None = None,
    create_pr: bool = False,
    revision: str | None = None,
) -> Any:
    """Create the Hub repo ``repo_id`` if missing and upload ``folder`` to it as one commit (huggingface_hub)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token if isinstance(token, str) else None)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message,
        create_pr=create_pr,
        revision=revision,
    )


class PushToHubMixin:
    """``push_to_hub``: save with ``save_pretrained`` into a temporary folder and upload it as one commit."""

    #: Provided by the class this is mixed into: writes the object into a folder.
    save_pretrained: Callable[..., Any]

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        create_pr: bool = False,
        revision: str | None = None,
        **save_kwargs: Any,
    ) -> Any:
        """Upload this object to the Hub repo ``repo_id`` (created if missing), as diffusers does.

        Args:
            repo_id: ``"user/name"`` or ``"org/name"``.
            commit_message: The commit message (default: ``"Upload <ClassName>"``).
            private: Create the repo as private (only when it does not exist yet).
            token: Hub token (default: the one ``huggingface-cli login`` stored).
            create_pr: Open a pull request instead of committing to the branch.
            revision: The branch to commit to (default: the repo's main branch).
            **save_kwargs: Passed to ``save_pretrained`` (e.g. ``safe_serialization``, ``variant`` for models).

        Returns:
            huggingface_hub's ``CommitInfo`` of the upload.
        """
        with tempfile.TemporaryDirectory(prefix="ddpm-push-") as tmp:
            self.save_pretrained(tmp, **save_kwargs)
            return upload_folder(
                tmp,
                repo_id,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                private=private,
                token=token,
                create_pr=create_pr,
                revision=revision,
            )


class ConfigMixin:
    """``save_config`` / ``load_config`` for a class whose ``config`` is a :class:`~ddpm.config.ConfigBase`.

    Attributes:
        config_name: The file the config lives in (``scheduler_config.json``, ``config.json``).
    """

    config_class: ClassVar[type[ConfigBase]]
    config_name: ClassVar[str] = "config.json"
    config: ConfigBase

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config_class = cls.__dict__.get("config_class")
        if config_class is not None:
            cls.config_name = config_class.config_name

    if not TYPE_CHECKING:  # hidden from mypy, which would otherwise accept any attribute name on these objects

        def __getattr__(self, name: str) -> Any:
            """A config key read as an attribute (deprecated, with a FutureWarning); see :func:`config_attribute`."""
            return config_attribute(self, name)

    def save_config(self, save_directory: str | os.PathLike[str], push_to_hub: bool = False, **kwargs: Any) -> Path:
        """Write only the config, ``save_directory/<config_name>``, atomically (the folder is created if missing).

        Args:
            save_directory: The folder to write into.
            push_to_hub: Also upload the folder to the Hub (``repo_id=`` and the other keywords of
                :meth:`PushToHubMixin.push_to_hub` go in ``kwargs``).

        Returns:
            The path of the written file.

        Raises:
            OverwriteError: ``save_directory`` is a file.
        """
        folder = Path(save_directory)
        if folder.exists() and not folder.is_dir():
            raise OverwriteError(f"{folder} is a file, not a folder; pass a folder to save_config")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.config_name
        atomic_write_text(path, self.config.to_json_string())
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", None) or folder.name
            kwargs.setdefault("commit_message", f"Upload {type(self).__name__} config")
            upload_folder(folder, repo_id, **kwargs)
        return path

    def register_to_config(self, **kwargs: Any) -> None:
        """Record extra keys with the config (diffusers' method): they are written to the config file and readable
        as ``config``-mapping extras and as deprecated attributes (``obj.key``, with a ``FutureWarning``).

        A key of this class's own config cannot change here, because the object was built from it (a model's
        layers, for instance); build a new one instead: ``type(obj).from_config(obj.config, key=value)``.
        (Schedulers override this: their own keys are validated and the schedule is recomputed.)

        Raises:
            ValueError: A key is one of the config's own keys.
        """
        own = [k for k in kwargs if k in self.config_class._field_names()]
        if own:
            name = type(self).__name__
            raise ValueError(
                f"{name}.register_to_config cannot change {own[0]!r}: the {name} was built from it; build a new one "
                f"with {name}.from_config(obj.config, {own[0]}=...)"
            )
        self.config = dataclasses.replace(self.config, _carried={**self.config._carried, **kwargs})

    @classmethod
    def load_config(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        return_unused_kwargs: bool = False,
        return_commit_hash: bool = False,
        *,
        subfolder: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Read ``<config_name>`` from a folder, a JSON file or a Hub repo, as a plain dict (diffusers' form).

        ``cls.from_config(cls.load_config(path))`` is the diffusers idiom for "this class, that config".

        Args:
            pretrained_model_name_or_path: A folder, the JSON file itself, or a Hub id.
            return_unused_kwargs: Also return ``kwargs`` (diffusers returns the keywords it did not use).
            return_commit_hash: Also return the commit hash (always ``None`` here: ddpm does not track it).
            subfolder: The folder to try before the root (``"scheduler"``, ``"unet"``).
            revision, cache_dir, local_files_only, token: As for ``from_pretrained``.
            **kwargs: Returned unused when ``return_unused_kwargs`` is True; otherwise ignored.

        Raises:
            CheckpointNotFoundError: The file is not in ``subfolder`` nor the root.
            ConfigError: The file is not a JSON object.
        """
        source = Path(pretrained_model_name_or_path)
        if source.is_file():
            path = source
        else:
            options = HubOptions(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
            path = require(pretrained_model_name_or_path, cls.config_name, subfolder, options, what="config").path
        config = read_json(path)
        outputs: tuple[Any, ...] = (config,)
        if return_unused_kwargs:
            outputs += (kwargs,)
        if return_commit_hash:
            outputs += (None,)
        return outputs if len(outputs) > 1 else config
