"""Loading and saving pipelines: ``model_index.json``, the class it names, and the ``unet/`` + ``scheduler/`` parts.

A pipeline folder or Hub repo holds ``model_index.json`` (the pipeline class and each component's class), the UNet
in ``unet/`` and the scheduler config in ``scheduler/``, diffusers' layout. The google/ddpm-* repos are flat (every
file at the root, sometimes without ``model_index.json``); :func:`ddpm.hub.locate` looks in the subfolder and then at
the root, so both load the same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from .. import __version__, hub
from ..config import check_keys, read_json, show_value
from ..errors import ConfigError
from ..io import Writer, atomic_write_files, check_save_folder, remove_stale_temporaries
from ..models import UNet2DModel
from ..models.loading import DEFAULT_MAX_SHARD_SIZE, resolve_load_dtype, stale_weights
from ..models.modeling import WeightsOptions, finish_interrupted_saves
from ..schedulers import SCHEDULERS, Scheduler
from .registry import PIPELINES, pipeline_class_named

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import DiffusionPipeline

logger = logging.getLogger(__name__)

__all__ = [
    "MODEL_INDEX_NAME",
    "ModelIndex",
    "component_dtype",
    "load_pipeline",
    "parse_model_index",
    "save_pipeline",
]

P = TypeVar("P", bound="DiffusionPipeline")

#: The file that lists a pipeline's components (diffusers' name and format).
MODEL_INDEX_NAME = "model_index.json"
SCHEDULER_CONFIG_NAME = Scheduler.config_class.config_name  # "scheduler_config.json"


@dataclasses.dataclass(frozen=True)
class ModelIndex:
    """What a ``model_index.json`` says, checked: the pipeline class and the class of each component.

    Attributes:
        pipeline: ``_class_name``, the pipeline class (``"DDPMPipeline"`` when the key is absent).
        unet: The class of the ``unet`` component.
        scheduler: The class of the ``scheduler`` component.
        source: The file, for error messages.
    """

    pipeline: str
    unet: str
    scheduler: str
    source: str = MODEL_INDEX_NAME

    @classmethod
    def of(cls, pipe: DiffusionPipeline) -> ModelIndex:
        """The index of a pipeline object: what ``save_pretrained`` writes and ``pipe.config`` shows.

        A pipeline class ddpm does not register (a user's subclass) is recorded as ``"DDPMPipeline"``, the class
        that loads it in both libraries.
        """
        name = type(pipe).__name__
        pipeline = name if pipeline_class_named(name) is not None else "DDPMPipeline"
        return cls(pipeline=pipeline, unet=type(pipe.unet).__name__, scheduler=type(pipe.scheduler).__name__)

    def components(self) -> dict[str, tuple[str, str]]:
        """Each component's ``(library, class name)``, as ``model_index.json`` lists them.

        The library is ``"diffusers"``: diffusers resolves each class inside the named library, and ddpm's classes
        have diffusers' names.
        """
        return {"scheduler": ("diffusers", self.scheduler), "unet": ("diffusers", self.unet)}


def parse_model_index(data: Mapping[str, Any], source: str | os.PathLike[str] = MODEL_INDEX_NAME) -> ModelIndex:
    """Check the content of a ``model_index.json`` and return what ddpm needs from it.

    Keys ddpm does not use (other components, ``_diffusers_version``) are ignored.

    Args:
        data: The parsed JSON object.
        source: The file it came from, named in errors.

    Raises:
        ConfigError: ``data`` is not an object, ``_class_name`` is not a string, or the ``unet`` or ``scheduler``
            entry is not ``[library, class name]``; the message names the file, the key and the value.
    """
    source = str(source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must hold a JSON object, found {type(data).__name__}")
    check_keys(data, source)
    pipeline = data.get("_class_name", "DDPMPipeline")
    if not isinstance(pipeline, str):
        raise ConfigError(f"{source}: _class_name has value {show_value(pipeline)}; expected a pipeline class name")
    classes = {}
    for name, example in (("unet", "UNet2DModel"), ("scheduler", "DDPMScheduler")):
        entry = data.get(name)
        if not (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and (entry[0] is None or isinstance(entry[0], str))
            and isinstance(entry[1], str)
            and entry[1]
        ):
            raise ConfigError(
                f"{source}: the {name!r} entry is {show_value(entry)}; expected [library, class name], "
                f'e.g. ["diffusers", "{example}"]'
            )
        classes[name] = entry[1]
    extra = sorted(k for k in data if not k.startswith("_") and k not in classes)
    if extra:
        logger.debug("%s: ignoring components %s", source, ", ".join(extra))
    return ModelIndex(pipeline=pipeline, unet=classes["unet"], scheduler=classes["scheduler"], source=source)


def read_model_index(repo_id_or_path: str | os.PathLike[str], options: hub.HubOptions) -> ModelIndex | None:
    """The checked ``model_index.json`` of a repo, or None when it has none (then it must have a UNet config).

    Raises:
        CheckpointNotFoundError: The repo has neither ``model_index.json`` nor a UNet ``config.json``.
        ConfigError: ``model_index.json`` is malformed.
    """
    found = hub.locate(repo_id_or_path, MODEL_INDEX_NAME, options=options)
    if found is not None:
        return parse_model_index(read_json(found.path), source=found.path)
    if hub.locate(repo_id_or_path, UNet2DModel.config_class.config_name, "unet", options) is None:
        raise hub.not_found_error(
            repo_id_or_path, [MODEL_INDEX_NAME, "config.json"], subfolder="unet", options=options, what="a pipeline"
        )
    logger.debug("%s has no %s; loading a UNet and a scheduler", repo_id_or_path, MODEL_INDEX_NAME)
    return None


def scheduler_class_named(class_name: str) -> type[Scheduler] | None:
    """The ddpm scheduler class called ``class_name`` (``"DDIMScheduler"``), or None."""
    return next((cls for cls in SCHEDULERS.values() if cls.__name__ == class_name), None)


DtypeOption = torch.dtype | str | Mapping[str, torch.dtype | str] | None


def component_dtype(torch_dtype: DtypeOption, dtype: DtypeOption, component: str = "unet") -> torch.dtype | None:
    """The dtype a pipeline's ``from_pretrained`` loads ``component`` in.

    Either option is one dtype for every model component, or, as in diffusers, a dict of component name -> dtype
    with an optional ``"default"`` entry for the others (``{"unet": torch.float16, "default": torch.float32}``).

    Raises:
        ValueError: A value is not a floating-point dtype, or ``torch_dtype`` and ``dtype`` disagree.
    """

    def pick(option: DtypeOption) -> torch.dtype | str | None:
        if isinstance(option, Mapping):
            unknown = sorted(k for k in option if not isinstance(k, str))
            if unknown:
                raise ValueError(f"dtype dict keys must be component names or 'default', got {unknown[0]!r}")
            return option.get(component, option.get("default"))
        return option

    return resolve_load_dtype(pick(torch_dtype), pick(dtype))


def load_pipeline(
    called: type[P],
    repo_id_or_path: str | os.PathLike[str],
    options: hub.HubOptions,
    load: WeightsOptions,
    *,
    class_from_index: bool,
    unet: UNet2DModel | None = None,
    scheduler: Any = None,
) -> P:
    """Load a pipeline: the body of :meth:`DiffusionPipeline.from_pretrained`, which documents it.

    Args:
        called: The class ``from_pretrained`` was called on.
        repo_id_or_path: A Hub id, a local folder or a bundled model name.
        options: The download options.
        load: How the UNet's weights are read and placed (dtype, device, format, variant).
        class_from_index: Build the class ``model_index.json`` names (``called`` is ``DiffusionPipeline`` itself)
            rather than ``called``.
        unet, scheduler: Components given by the caller, used as they are instead of loading them (diffusers'
            ``from_pretrained(repo, scheduler=my_scheduler)``).
    """
    finish_interrupted_saves(repo_id_or_path, None)
    index = read_model_index(repo_id_or_path, options)
    if index is not None and index.unet != "UNet2DModel":
        raise ConfigError(f"{index.source}: the unet is a {index.unet}, and ddpm implements only UNet2DModel")
    pipeline_cls = _pipeline_class(index) if class_from_index else called
    if unet is None:
        unet = UNet2DModel._from_pretrained(repo_id_or_path, "unet", options, load).eval()
    if scheduler is not None:
        return cast("type[P]", pipeline_cls)(unet=unet, scheduler=scheduler)
    scheduler_file = hub.locate(repo_id_or_path, SCHEDULER_CONFIG_NAME, "scheduler", options)
    scheduler_config = read_json(scheduler_file.path) if scheduler_file is not None else {}
    scheduler_cls = _scheduler_class(pipeline_cls, index, scheduler_config, scheduler_file)
    if scheduler_file is None:
        raise hub.not_found_error(
            repo_id_or_path, [SCHEDULER_CONFIG_NAME], subfolder="scheduler", options=options, what="scheduler config"
        )
    config = scheduler_cls.config_class.from_dict(scheduler_config, source=scheduler_file.path)
    return cast("type[P]", pipeline_cls)(unet=unet, scheduler=scheduler_cls.from_config(config))


def _pipeline_class(index: ModelIndex | None) -> type[DiffusionPipeline]:
    """The registered class ``model_index.json`` names; a repo without one is a ``DDPMPipeline``."""
    name = "DDPMPipeline" if index is None else index.pipeline
    named = pipeline_class_named(name)
    if named is None:
        known = ", ".join(sorted(cls.__name__ for cls in PIPELINES.values()))
        source = MODEL_INDEX_NAME if index is None else index.source
        raise ConfigError(f"{source}: _class_name {name!r} is not a ddpm pipeline; load it with one of {known}")
    return named


def _scheduler_class(
    pipeline_cls: type[DiffusionPipeline],
    index: ModelIndex | None,
    config: Mapping[str, Any],
    source: hub.Located | None,
) -> type[Scheduler]:
    """The scheduler to build: the pipeline's own type (DDIM, PNDM), or the class the checkpoint names."""
    if pipeline_cls.scheduler_type is not None:
        return SCHEDULERS[pipeline_cls.scheduler_type]
    if index is not None:
        name, where = index.scheduler, index.source
    else:
        name, where = config.get("_class_name", "DDPMScheduler"), str(None if source is None else source.path)
    scheduler_cls = scheduler_class_named(name) if isinstance(name, str) else None
    if scheduler_cls is None:
        supported = ", ".join(cls.__name__ for cls in SCHEDULERS.values())
        raise ConfigError(
            f"{where}: the scheduler is {show_value(name)}, which ddpm does not implement (supported: "
            f"{supported}); load it with DDIMPipeline or PNDMPipeline to convert its config"
        )
    return scheduler_cls


def save_pipeline(
    pipe: DiffusionPipeline,
    save_directory: str | os.PathLike[str],
    *,
    overwrite: bool,
    safe_serialization: bool = True,
    variant: str | None = None,
    max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """``pipe.save_pretrained(...)``: see :meth:`DiffusionPipeline.save_pretrained`."""
    known = {cls.__name__ for cls in PIPELINES.values()}
    folder = Path(save_directory)
    bare_model = folder.is_dir() and not (folder / MODEL_INDEX_NAME).exists()
    folder = check_save_folder(
        folder,
        what=f"a {type(pipe).__name__}",
        owned={MODEL_INDEX_NAME: lambda name: name in known},
        foreign={"config.json": "a model without model_index.json, not a pipeline"} if bare_model else {},
        overwrite=overwrite,
    )
    files: dict[Path, Writer] = {}
    weights = {"safe_serialization": safe_serialization, "variant": variant, "max_shard_size": max_shard_size}
    for name, part in (("unet", pipe.unet), ("scheduler", pipe.scheduler)):
        plan = getattr(part, "_save_plan", None)
        extra = weights if name == "unet" else {}
        if plan is not None:
            files.update(plan(folder / name, overwrite=overwrite, **extra))
        else:  # a component of another library (e.g. a diffusers scheduler) saves itself, before the rest
            cast(Any, part).save_pretrained(folder / name, **extra)
    model_index = ModelIndex.of(pipe)
    index = {
        "_class_name": model_index.pipeline,
        "_ddpm_version": __version__,
        **{name: list(entry) for name, entry in model_index.components().items()},
    }
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    files[folder / MODEL_INDEX_NAME] = lambda tmp: _write_text(tmp, text)  # last: completes the folder
    remove_stale_temporaries(files)
    atomic_write_files(files, remove=stale_weights(folder / "unet", {p.name for p in files}, variant))
    return folder


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
