"""Reading weights files safely and loading them strictly into a model.

* :func:`load_state_dict_file` reads ``.safetensors`` files, or pickled ``.bin`` files through
  ``torch.load(weights_only=True)`` only: a pickle that carries anything but tensors and plain containers is refused
  with :class:`~ddpm.errors.UnsafeCheckpointError` before any of its code can run.
* :func:`rename_legacy_keys` maps the 2022 attention names of the google/ddpm-* files (``query``, ``key``,
  ``value``, ``proj_attn``) to today's (``to_q``, ``to_k``, ``to_v``, ``to_out.0``), and squeezes 1×1-conv shaped
  projection weights (C, C, 1, 1) to linear ones (C, C). Files already in the new form pass through unchanged.
* :func:`load_into` checks names and shapes first and reports every missing, unexpected and mis-shaped tensor in one
  :class:`~ddpm.errors.WeightsError`, then assigns the tensors (converted to the wanted dtype) as the parameters.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import show_value
from ..errors import UnsafeCheckpointError, WeightsError
from ..hub import HubOptions, find_file, not_found_error

logger = logging.getLogger(__name__)

__all__ = [
    "LEGACY_KEY_RENAMES",
    "PICKLE_WEIGHTS_NAME",
    "SAFETENSORS_WEIGHTS_NAME",
    "find_weights_file",
    "load_into",
    "load_pickle",
    "load_state_dict_file",
    "rename_legacy_keys",
]

SAFETENSORS_WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLE_WEIGHTS_NAME = "diffusion_pytorch_model.bin"

#: Legacy attention module names (diffusers ≤ 0.13 ``AttentionBlock``) → current names, inside ``.attentions.N.``.
LEGACY_KEY_RENAMES: dict[str, str] = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
_MAX_LISTED = 12


def find_weights_file(
    repo_id_or_path: str | os.PathLike[str],
    folder: str | None,
    options: HubOptions,
    *,
    use_safetensors: bool | None = None,
) -> Path:
    """Find the weights of a model stored in ``folder`` of a repo (``None``: its root).

    ``diffusion_pytorch_model.safetensors`` is preferred; without it, ``diffusion_pytorch_model.bin`` is used
    (``use_safetensors=None``, the default). ``use_safetensors=True`` requires the safetensors file, ``False`` uses
    the ``.bin`` file.

    Args:
        repo_id_or_path: A Hub id or a local folder.
        folder: The subfolder that holds the model, or None for the repo root.
        options: Revision, cache folder, offline switch and token.
        use_safetensors: None (prefer safetensors), True (only safetensors) or False (only ``.bin``).

    Returns:
        The local path of the weights file.

    Raises:
        CheckpointNotFoundError: No acceptable weights file exists there; the message says where it looked.
    """
    if use_safetensors is None:
        names = [SAFETENSORS_WEIGHTS_NAME, PICKLE_WEIGHTS_NAME]
    elif use_safetensors:
        names = [SAFETENSORS_WEIGHTS_NAME]
    else:
        names = [PICKLE_WEIGHTS_NAME]
    for name in names:
        path = find_file(repo_id_or_path, f"{folder}/{name}" if folder else name, options=options)
        if path is not None:
            if name == PICKLE_WEIGHTS_NAME and use_safetensors is None:
                logger.debug(
                    "%s has no %s; reading %s with torch.load(weights_only=True)",
                    repo_id_or_path,
                    SAFETENSORS_WEIGHTS_NAME,
                    path,
                )
            return path
    error = not_found_error(repo_id_or_path, names, subfolder=folder, options=options, what="model weights")
    if use_safetensors:
        raise type(error)(f"{error} (use_safetensors=True forbids falling back to {PICKLE_WEIGHTS_NAME})")
    raise error


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file into a dict of CPU tensors.

    Args:
        path: A ``.safetensors`` file, or a ``torch.save`` pickle (``.bin``, ``.pt``, ``.pth``, ``.ckpt``).

    Returns:
        Tensor name → tensor.

    Raises:
        WeightsError: The file is empty, truncated, corrupt, or does not hold a flat name → tensor mapping.
        UnsafeCheckpointError: A pickle references objects other than tensors and plain containers; it was refused
            by ``torch.load(weights_only=True)`` and none of its code ran.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from None
    if size == 0:
        raise WeightsError(f"weights file {path} is empty (0 bytes); delete it and download it again")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        state = _read_pickle(path)
    bad = [
        f"{show_value(k, 80)} ({type(v).__name__})"
        for k, v in state.items()
        if not (isinstance(k, str) and torch.is_tensor(v))
    ]
    if bad:
        raise WeightsError(
            f"{path} is not a flat mapping of tensor names to tensors; these entries are not tensors: {_listing(bad)}"
        )
    return state


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError or ValueError on bad files
        raise _damaged(path, f"not readable as safetensors: {_first_line(str(exc))}") from exc


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    obj = load_pickle(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a mapping of tensor names to tensors")
    return dict(obj)


def load_pickle(path: str | os.PathLike[str], *, what: str = "weights file") -> Any:
    """Read a ``torch.save`` file with ``torch.load(weights_only=True)``, turning every failure into our errors.

    Only tensors, numbers, strings and plain containers can come out: a pickle that names any other Python object
    (``os.system``, a class with ``__reduce__``...) is refused before that object is looked up, so none of its code
    runs.

    Args:
        path: The file (``.bin``, ``.pt``, ``.ckpt``...).
        what: What the file is, for the messages (``"weights file"``, ``"training checkpoint"``).

    Returns:
        The unpickled object, on the CPU.

    Raises:
        UnsafeCheckpointError: The pickle references objects other than tensors and plain containers.
        WeightsError: The file is missing, empty, truncated or otherwise not a readable ``torch.save`` file.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise WeightsError(f"{what} {path} is empty (0 bytes); {_remedy(what)}")
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # torch.save's zip container can be memory-mapped
    except OSError as exc:
        raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing; we explain below
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # truncated or corrupt zip / pickle streams surface as RuntimeError, EOFError, ...
        named = re.search(r"GLOBAL ([^\s]+)", str(exc))
        foreign = _foreign_globals(path, is_zip) if isinstance(exc, pickle.UnpicklingError) else None
        if foreign is not None and (foreign or named):
            names = f" (it names {named.group(1) if named else foreign[0]})"
            raise UnsafeCheckpointError(
                f"{path} is a pickle that references Python objects other than tensors{names}, so it was refused "
                "unread by torch.load(weights_only=True); nothing in it ran. Use a .safetensors file instead: ask its "
                "publisher for one, or, only if you trust the file's source, convert it in a separate, sandboxed step."
            ) from None
        raise _damaged(path, _torch_load_detail(exc), what) from exc


def _foreign_globals(path: Path, is_zip: bool) -> list[str] | None:
    """The Python objects the pickle stream(s) of a ``torch.save`` file name outside torch's own, read without
    executing anything; None when the streams do not even parse (a damaged file).

    ``torch.load(weights_only=True)`` refuses damaged files and pickles that reference forbidden objects alike; only
    the second are unsafe. :func:`pickletools.genops` reads opcodes and never runs them.
    """
    try:
        if is_zip:
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                stream = io.BytesIO(archive.read(name))
            pickles = 1
        else:
            stream = io.BytesIO(path.read_bytes())
            pickles = 4  # the legacy format: magic number, protocol, system info, then the object
        names: list[str] = []
        for _ in range(pickles):
            if stream.tell() == len(stream.getbuffer()):
                break
            strings: list[str] = []  # the last string pushes, the operands of STACK_GLOBAL
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "GLOBAL":
                    names.append(".".join(str(arg).split(" ", 1)))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and "UNICODE" in opcode.name:
                    strings.append(arg)
    except Exception:
        return None
    return [n for n in names if not n.startswith(("torch", "collections.", "_codecs."))]


def rename_legacy_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename legacy attention keys (``...attentions.0.query.weight`` → ``...attentions.0.to_q.weight``).

    Attention projection weights stored as 1×1 convolutions, shape (C_out, C_in, 1, 1), become (C_out, C_in).
    Keys already in the current form are kept. Nothing else is touched.

    Args:
        state: Tensor name → tensor, as read from a file.

    Returns:
        A new dict with current names.

    Raises:
        WeightsError: The same tensor is present under both its legacy and its current name.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = key
        parts = key.split(".")
        # <...>.attentions.<i>.<module>.<weight|bias>
        if len(parts) >= 4 and parts[-4] == "attentions" and parts[-2] in LEGACY_KEY_RENAMES:
            new_key = ".".join([*parts[:-2], LEGACY_KEY_RENAMES[parts[-2]], parts[-1]])
        if (
            new_key.endswith(".weight")
            and ".attentions." in new_key
            and new_key[: -len(".weight")].endswith(_PROJECTIONS)
            and value.ndim == 4
            and value.shape[2:] == (1, 1)
        ):
            value = value.reshape(value.shape[0], value.shape[1])  # (C_out, C_in, 1, 1) -> (C_out, C_in)
        if new_key in out:
            raise WeightsError(
                f"the weights hold {new_key!r} twice, under its legacy and its current name; keep one of them"
            )
        out[new_key] = value
    return out


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
) -> None:
    """Load ``state`` into ``model`` strictly, assigning new parameter tensors (the model may live on ``meta``).

    Args:
        model: The model; only parameter names and shapes are read from it.
        state: Tensor name → tensor, already renamed with :func:`rename_legacy_keys`.
        source: The file the tensors came from, named in errors.
        dtype: The dtype of the loaded floating-point parameters (default: each parameter's current dtype).

    Raises:
        WeightsError: Some tensors are missing, unexpected or of the wrong shape; all of them are listed by name.
    """
    expected = model.state_dict()
    missing = [f"{k} {tuple(v.shape)}" for k, v in expected.items() if k not in state]
    unexpected = [f"{k} {tuple(v.shape)}" for k, v in state.items() if k not in expected]
    mismatched = [
        f"{k}: file {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [
            f"weights in {source} do not fit {type(model).__name__} (is the config.json beside them the right one?):"
        ]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                lines.append(f"  {title} ({len(items)}): {_listing(items)}")
        raise WeightsError("\n".join(lines))
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = expected[key]
        want = dtype if dtype is not None and target.is_floating_point() else target.dtype
        # A fresh, owned and aligned copy (never a view into a memory-mapped file) in the model's memory layout.
        converted[key] = torch.empty_like(target, dtype=want, device="cpu").copy_(value)
    model.load_state_dict(converted, strict=True, assign=True)


def _damaged(path: Path, detail: str, what: str = "weights file") -> WeightsError:
    return WeightsError(f"{what} {path} is damaged ({detail}); {_remedy(what)}")


def _remedy(what: str) -> str:
    if what == "weights file":
        return "delete it and download it again"
    return "restore it from a copy, or start over without it"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _torch_load_detail(exc: Exception) -> str:
    """The informative part of a ``torch.load`` failure, without torch's advice to retry with weights_only=False."""
    text = str(exc)
    if "weights_only" in text:
        specific = [
            line.strip()
            for line in text.splitlines()
            if "Unsupported" in line or "unsupported" in line or "WeightsUnpickler error:" in line
        ]
        detail = specific[-1] if specific else "not a pickle torch.load(weights_only=True) can read"
        return f"{type(exc).__name__}: {detail.replace('WeightsUnpickler error: ', '')}"
    return f"{type(exc).__name__}: {_first_line(text).split('. ')[0]}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"
