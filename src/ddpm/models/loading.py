"""Reading weights files safely and loading them strictly into a model.

* :func:`load_state_dict_file` reads ``.safetensors`` files, or pickled ``.bin`` files through
  :func:`ddpm.io.load_pickle` only: a pickle that names anything but tensors and plain containers is refused with
  :class:`~ddpm.errors.UnsafeCheckpointError` before any of its code can run.
* :func:`rename_legacy_keys` maps the 2022 attention names of the google/ddpm-* files (``query``, ``key``,
  ``value``, ``proj_attn``) to today's (``to_q``, ``to_k``, ``to_v``, ``to_out.0``), and squeezes 1×1-conv shaped
  projection weights (C, C, 1, 1) to linear ones (C, C). Files already in the new form pass through unchanged.
* :func:`load_into` checks names and shapes first and reports every missing, unexpected and mis-shaped tensor in one
  :class:`~ddpm.errors.WeightsError`, then assigns the tensors (converted to the wanted dtype) as the parameters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..config import show_value
from ..errors import WeightsError
from ..hub import HubOptions, locate, not_found_error
from ..io import check_readable, damaged_file_error, load_pickle

logger = logging.getLogger(__name__)

__all__ = [
    "LEGACY_KEY_RENAMES",
    "PICKLE_WEIGHTS_NAME",
    "SAFETENSORS_WEIGHTS_NAME",
    "find_weights_file",
    "load_into",
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
        found = locate(repo_id_or_path, name, folder, options, root_fallback=False)
        if found is not None:
            path = found.path
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
        WeightsError: The file cannot be read, is empty, truncated, corrupt, or does not hold a flat name → tensor
            mapping.
        UnsafeCheckpointError: A pickle names objects other than tensors and plain containers; it was refused
            unread and none of its code ran.
    """
    path = Path(path)
    check_readable(path, what="weights file")
    state = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pickle(path)
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
    except MemoryError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError, OSError or ValueError on bad files
        detail = str(exc).strip().partition("\n")[0] or "no details"
        raise damaged_file_error(path, f"not readable as safetensors: {detail}") from exc


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    obj = load_pickle(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a mapping of tensor names to tensors")
    return dict(obj)


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


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")
