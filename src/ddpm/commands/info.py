"""``ddpm info``: what a checkpoint holds: pipeline, UNet config and size, scheduler, and the files it uses.

Only the small JSON files are read (and downloaded, for a Hub id not yet cached, unless offline). The weights file is
looked up in the cache or folder but never downloaded, and the parameter count comes from building the UNet on
PyTorch's ``meta`` device, which allocates no memory. With no MODEL it lists the models bundled with this
installation (name, size, parameters, one line from each card) and the schedulers ``ddpm sample`` offers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ._common import add_model_argument

NAME = "info"
HELP = "show a model's config, parameter count, scheduler and files (works offline on cached models)"

EXAMPLES = """\
examples:
  ddpm info                                     (the bundled models and the schedulers)
  ddpm info ddpm-mnist
  ddpm info google/ddpm-cifar10-32
  HF_HUB_OFFLINE=1 ddpm info google/ddpm-ema-celebahq-256 --json
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``info`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``) and return it."""
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_argument(parser, omitted="list the bundled models and the schedulers")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def describe(model: str, revision: str | None = None) -> dict[str, Any]:
    """Collect what ``ddpm info`` prints about ``model`` (a Hub id, folder or bundled name).

    Raises:
        CheckpointNotFoundError: There is no UNet config in the folder, the cache, or (online) the Hub repo.
        ConfigError: A config file is malformed or has unsupported values.
    """
    import torch

    from .. import hub
    from ..config import read_json, show_value
    from ..errors import CheckpointNotFoundError, ConfigError
    from ..models import UNet2DConfig, UNet2DModel
    from ..models.loading import find_weights_file
    from ..pipelines.pretrained import MODEL_INDEX_NAME, SCHEDULER_CONFIG_NAME, parse_model_index, scheduler_class_named

    options = hub.HubOptions(revision=revision)
    files: list[Path] = []
    index_file = hub.locate(model, MODEL_INDEX_NAME, options=options)
    index = parse_model_index(read_json(index_file.path), index_file.path) if index_file is not None else None
    if index_file is not None:
        files.append(index_file.path)

    # The UNet lives in unet/ when that folder has a config, else at the root (the flat google/ddpm-* repos).
    unet_file = hub.require(model, UNet2DConfig.config_name, "unet", options, what="the UNet config")
    files.append(unet_file.path)
    unet_config = UNet2DConfig.from_dict(read_json(unet_file.path), source=unet_file.path)
    with torch.device("meta"):  # parameters without memory: only their count is wanted
        meta_unet = UNet2DModel.from_config(unet_config)
    n_params = sum(p.numel() for p in meta_unet.parameters())

    weights: Path | None = None
    try:  # in the folder or the cache only: info never downloads weights
        weights = find_weights_file(model, unet_file.subfolder, dataclasses.replace(options, local_files_only=True))
        files.append(weights)
    except CheckpointNotFoundError:
        pass

    scheduler: dict[str, Any] | None = None
    sched_file = hub.locate(model, SCHEDULER_CONFIG_NAME, "scheduler", options)
    if sched_file is not None:
        files.append(sched_file.path)
        raw = read_json(sched_file.path)
        name = index.scheduler if index else raw.get("_class_name")
        if not isinstance(name, (str, type(None))):
            raise ConfigError(
                f"{sched_file.path}: _class_name has value {show_value(name)}; expected a scheduler class name"
            )
        cls = scheduler_class_named(name or "DDPMScheduler")
        config = raw
        if cls is not None:
            config = cls.from_config(cls.config_class.from_dict(raw, source=sched_file.path)).config.to_dict()
        scheduler = {"class": name or "DDPMScheduler", "supported": cls is not None, "config": config}

    return {
        "model": model,
        "pipeline": index.pipeline if index else None,
        "unet": {"class": "UNet2DModel", "parameters": n_params, "config": unet_config.to_dict()},
        "scheduler": scheduler,
        "weights_cached": weights is not None,
        "files": [{"path": str(p), "bytes": p.stat().st_size} for p in files],
    }


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")  # pragma: no cover


def _text(info: dict[str, Any]) -> str:
    unet = info["unet"]
    cfg = unet["config"]
    size = cfg["sample_size"]
    hw = f"{size}x{size}" if isinstance(size, int) else "x".join(map(str, size))
    lines = [
        f"model:      {info['model']}",
        f"pipeline:   {info['pipeline'] or '(no model_index.json; loads as DDPMPipeline)'}",
        f"unet:       UNet2DModel, {unet['parameters']:,} parameters ({_size(4 * unet['parameters'])} in float32), "
        f"{cfg['in_channels']}x{hw} images",
    ]
    sched = info["scheduler"]
    if sched is None:
        lines.append("scheduler:  (no scheduler_config.json; DDPMScheduler defaults)")
    else:
        note = "" if sched["supported"] else " (not implemented by ddpm; DDIMPipeline/PNDMPipeline convert it)"
        lines.append(f"scheduler:  {sched['class']}{note}")
    lines.append("files:")
    lines += [f"  {f['path']}  ({_size(f['bytes'])})" for f in info["files"]]
    if not info["weights_cached"]:
        lines.append("  weights not downloaded yet (diffusion_pytorch_model.safetensors or .bin)")
    lines.append("unet config:")
    lines += [f"  {k}: {json.dumps(v)}" for k, v in cfg.items() if not k.startswith("_")]
    if sched is not None:
        lines.append("scheduler config:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in sched["config"].items() if not k.startswith("_")]
    return "\n".join(lines)


def _card_line(folder: Path) -> str:
    """The first sentence of a bundled model's card (its README.md), or an empty string."""
    from ..errors import ConfigError
    from ..io import open_regular

    try:
        with open_regular(folder / "README.md", what="model card", max_bytes=1 << 20, error=ConfigError) as f:
            text = f.read().decode("utf-8", errors="replace")
    except ConfigError:
        return ""
    paragraph = " ".join(next((p for p in text.split("\n\n") if p.strip() and not p.startswith("#")), "").split())
    return paragraph.split(". ")[0].rstrip(".") + "." if paragraph else ""


def bundled() -> dict[str, Any]:
    """The bundled models (name, bytes on disk, parameters, description, folder) and the samplers ``ddpm sample``
    offers (name, scheduler class, default steps, description)."""
    from ..hub import BUNDLED_MODELS, bundled_model_path

    models = []
    for name in BUNDLED_MODELS:
        folder = bundled_model_path(name)
        if folder is None or not folder.is_dir():
            continue
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        params = describe(name)["unet"]["parameters"]
        models.append(
            {"name": name, "bytes": size, "parameters": params, "description": _card_line(folder), "path": str(folder)}
        )
    return {"bundled_models": models, "schedulers": samplers()}


def samplers() -> list[dict[str, Any]]:
    """The ``--scheduler`` names with their scheduler class (None where this installation lacks it), config
    overrides, default step count and one-line description."""
    from ..schedulers import SCHEDULERS
    from ..schedulers.presets import SAMPLER_PRESETS

    listing = []
    for p in SAMPLER_PRESETS.values():
        cls = SCHEDULERS.get(p.scheduler)
        listing.append(
            {
                "name": p.name,
                "class": cls.__name__ if cls is not None else None,
                "overrides": dict(p.overrides),
                "default_steps": p.default_steps,
                "description": p.description,
            }
        )
    return listing


def _bundled_text(listing: dict[str, Any]) -> str:
    lines = ["bundled models (ddpm info NAME for details; ddpm sample NAME to sample):"]
    if not listing["bundled_models"]:
        lines.append("  (none in this installation; give a Hub id such as google/ddpm-cifar10-32 or a folder)")
    for m in listing["bundled_models"]:
        lines.append(f"  {m['name']}  {_size(m['bytes'])}, {m['parameters']:,} parameters  {m['description']}")
    lines.append("samplers (ddpm sample --scheduler NAME; --steps N overrides the default steps):")
    width = max(len(s["name"]) for s in listing["schedulers"])
    for s in listing["schedulers"]:
        options = ", ".join(f"{k}={v}" for k, v in s["overrides"].items())
        cls = s["class"] or "(scheduler missing from this installation: reinstall ddpm)"
        lines.append(
            f"  {s['name']:<{width}}  {cls}{f'({options})' if options else ''}, {s['default_steps']} steps  "
            f"{s['description']}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print what ``ddpm info`` reports; returns the exit status."""
    if args.model is None:
        listing = bundled()
        print(json.dumps(listing, indent=2) if args.json else _bundled_text(listing))
        return 0
    info = describe(args.model, revision=args.revision)
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
