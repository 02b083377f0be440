"""The package map of docs/architecture.md, enforced: which part of ``ddpm`` may import which.

Every ``from ddpm... import`` / ``from .. import`` in src/ddpm, at module level or inside a function, is an edge
between two parts (a top-level module such as ``io``, or a subpackage such as ``schedulers``). The parts form
layers, each importing only from the layers below it, so there is no import cycle and no lazy import is ever
needed to break one.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

# The foundation: no torch models, no schedulers; each may import only the foundation modules listed for it.
FOUNDATION: dict[str, set[str]] = {
    "errors": set(),
    "outputs": set(),
    "runtime": set(),
    "io": {"errors", "memory"},
    "hub": {"errors"},
    "config": {"errors", "io"},
    "utils": {"errors", "config", "image_processing"},  # image_processing: make_image_grid, re-exported
    "image_processing": {"errors", "io"},
    "mixins": {"errors", "io", "hub", "config"},
    "memory": {"errors"},
}
BASE = set(FOUNDATION)

# What each part may import (besides itself), from docs/architecture.md's package map.
ALLOWED: dict[str, set[str]] = {
    **FOUNDATION,
    "schedulers": BASE,
    "models": BASE,
    "fast": BASE | {"models"},
    "pipelines": BASE | {"models", "schedulers", "fast", "ddpm"},  # ddpm: __version__, written into model_index.json
    "training": BASE | {"models", "schedulers", "pipelines"},
    "evaluation": BASE | {"training"},
    "commands": BASE | {"models", "schedulers", "fast", "pipelines", "training", "evaluation"},
    "cli": {"errors", "ddpm"},  # the subcommand modules are imported by name (ddpm.cli.COMMAND_MODULES)
    "__main__": {"cli"},
    "ddpm": BASE | {"models", "schedulers", "pipelines"},  # the lazy top-level namespace
}


def _part(module: str) -> str:
    """``ddpm.schedulers.base`` -> ``schedulers``; ``ddpm``, ``ddpm.__init__`` and ``ddpm.__version__`` -> ``ddpm``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] not in ("__init__", "__version__") else "ddpm"


def _imports() -> dict[str, set[str]]:
    """Part -> the other parts it imports."""
    edges: dict[str, set[str]] = {}
    for path in sorted((SRC / "ddpm").rglob("*.py")):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts)
        package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name == "ddpm" or name.startswith("ddpm."):
                    if _part(name) != _part(module):
                        edges.setdefault(_part(module), set()).add(_part(name))
    return edges


def test_every_part_of_the_package_is_on_the_map() -> None:
    parts = {_part(".".join(p.relative_to(SRC).with_suffix("").parts)) for p in (SRC / "ddpm").rglob("*.py")}
    assert parts == set(ALLOWED)


def test_each_part_imports_only_the_layers_below_it() -> None:
    edges = _imports()
    assert edges, "the import scan found nothing"
    wrong = {part: sorted(targets - ALLOWED[part]) for part, targets in edges.items() if targets - ALLOWED[part]}
    assert not wrong, f"imports outside docs/architecture.md's package map: {wrong}"


def test_the_scan_sees_relative_and_absolute_imports() -> None:
    edges = _imports()
    assert "schedulers" in edges["pipelines"] and "io" in edges["config"]  # relative, at module level
    assert "pipelines" in edges["training"]  # inside a function (training.sampling)
