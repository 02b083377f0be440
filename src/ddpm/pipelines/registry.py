"""``PIPELINES``: ddpm's pipeline classes by scheduler short name, filled by :func:`register_pipeline`.

The registry serves the CLI (``ddpm sample --scheduler ddim``) and loading: ``DiffusionPipeline.from_pretrained``
builds the class a ``model_index.json`` names when it is registered here, and ``save_pretrained`` writes a
registered class's name (any other class is saved as a ``DDPMPipeline``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import DiffusionPipeline

__all__ = ["PIPELINES", "register_pipeline"]

P = TypeVar("P", bound="type[DiffusionPipeline]")

#: Pipeline classes by scheduler short name, as the CLI's ``--scheduler`` option names them.
PIPELINES: dict[str, type[DiffusionPipeline]] = {}


def register_pipeline(name: str) -> Callable[[P], P]:
    """Class decorator: list a pipeline class in ``PIPELINES`` under ``name`` (``"ddim"``).

    Raises:
        ValueError: ``name`` or the class name is already registered by another class.
    """

    def register(cls: P) -> P:
        taken = PIPELINES.get(name) or pipeline_class_named(cls.__name__)
        if taken is not None and taken is not cls:
            raise ValueError(f"cannot register {cls.__name__} as {name!r}: {taken.__name__} is registered already")
        PIPELINES[name] = cls
        return cls

    return register


def pipeline_class_named(class_name: str) -> type[DiffusionPipeline] | None:
    """The registered pipeline class called ``class_name`` (``"DDIMPipeline"``), or None."""
    return next((cls for cls in PIPELINES.values() if cls.__name__ == class_name), None)
