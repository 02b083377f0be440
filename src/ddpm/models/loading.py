"""Finding, reading and writing weights files, and loading them strictly into a model.

* :func:`find_weights` finds a model's weights in a folder or Hub repo under diffusers' names: one file
  (``diffusion_pytorch_model[.<variant>].safetensors`` or ``.bin``) or a sharded checkpoint (an index
  ``diffusion_pytorch_model.safetensors.index[.<variant>].json`` that maps each tensor to its shard file);
  :func:`load_weights` reads them, checking every shard against the index.
* :func:`weights_writers` is the other direction: the files ``save_pretrained`` writes, sharded as the Hub shards
  (:func:`ddpm.hub.split_into_shards`) when ``max_shard_size`` asks for it.
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

import json
import logging
import math
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import read_json, show_value
from ..errors import CheckpointNotFoundError, VariantNotFoundError, WeightsError
from ..hub import HubOptions, local_files, locate, not_found_error, split_into_shards
from ..io import Writer, check_readable, damaged_file_error, declared_zip_bytes, load_pickle, open_regular
from ..memory import check_fits, format_bytes
from ..runtime import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "LEGACY_KEY_RENAMES",
    "PICKLE_INDEX_NAME",
    "PICKLE_WEIGHTS_NAME",
    "SAFETENSORS_INDEX_NAME",
    "SAFETENSORS_WEIGHTS_NAME",
    "WeightsFiles",
    "add_variant",
    "check_declared_sizes",
    "declared_bytes",
    "find_weights",
    "find_weights_file",
    "load_into",
    "load_state_dict_file",
    "load_weights",
    "read_index",
    "rename_legacy_keys",
    "resolve_device_map",
    "resolve_load_dtype",
    "stale_weights",
    "weights_writers",
]

_STEM = "diffusion_pytorch_model"
SAFETENSORS_WEIGHTS_NAME = f"{_STEM}.safetensors"
PICKLE_WEIGHTS_NAME = f"{_STEM}.bin"
#: The index of a sharded checkpoint (diffusers' and the Hub's names); a variant goes before ``.json``.
SAFETENSORS_INDEX_NAME = f"{SAFETENSORS_WEIGHTS_NAME}.index.json"
PICKLE_INDEX_NAME = f"{PICKLE_WEIGHTS_NAME}.index.json"
#: ``save_pretrained``'s default shard limit, diffusers' default: a checkpoint below it is one file.
DEFAULT_MAX_SHARD_SIZE = "10GB"

#: The weights files of any variant, single or sharded: group 1 is the variant (None for the plain weights).
_WEIGHTS_FILE = re.compile(rf"{_STEM}(?:\.(.+?))?(?:-\d{{5}}-of-\d{{5}})?\.(?:safetensors|bin)")
_INDEX_FILE = re.compile(rf"{_STEM}\.(?:safetensors|bin)\.index(?:\.(.+))?\.json")
#: device_map strategies that spread a model over devices; ddpm puts a model on the one best device instead.
_DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")

#: Legacy attention module names (diffusers ≤ 0.13 ``AttentionBlock``) → current names, inside ``.attentions.N.``.
LEGACY_KEY_RENAMES: dict[str, str] = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
_MAX_LISTED = 12


def add_variant(filename: str, variant: str | None) -> str:
    """Insert ``variant`` before the last suffix, as diffusers names variant files.

    ``diffusion_pytorch_model.safetensors`` -> ``diffusion_pytorch_model.fp16.safetensors``;
    ``diffusion_pytorch_model.safetensors.index.json`` -> ``diffusion_pytorch_model.safetensors.index.fp16.json``.
    """
    if variant is None:
        return filename
    stem, _, suffix = filename.rpartition(".")
    return f"{stem}.{variant}.{suffix}"


def _check_variant(variant: object) -> str | None:
    if variant is None:
        return None
    if not isinstance(variant, str) or not variant or any(c in variant for c in "/\\") or variant.startswith("."):
        raise ValueError(f"variant must be a name such as 'fp16' (no path separators), got {variant!r}")
    return variant


@dataclass(frozen=True)
class WeightsFiles:
    """A model's weights as :func:`find_weights` found them: one file, or the shards an index lists.

    Attributes:
        files: The weights file, or every shard (in the order of their names).
        index: The index JSON of a sharded checkpoint; None for one file.
        weight_map: Tensor name -> shard file name, from the index; None for one file.
    """

    files: tuple[Path, ...]
    index: Path | None = None
    weight_map: Mapping[str, str] | None = None

    @property
    def source(self) -> Path:
        """The file to name in messages: the index, or the one weights file."""
        return self.index if self.index is not None else self.files[0]


def _candidates(use_safetensors: bool | None, variant: str | None) -> list[tuple[str, bool]]:
    """(file name, is an index) in the order :func:`find_weights` tries them."""
    formats = {
        None: [(SAFETENSORS_WEIGHTS_NAME, SAFETENSORS_INDEX_NAME), (PICKLE_WEIGHTS_NAME, PICKLE_INDEX_NAME)],
        True: [(SAFETENSORS_WEIGHTS_NAME, SAFETENSORS_INDEX_NAME)],
        False: [(PICKLE_WEIGHTS_NAME, PICKLE_INDEX_NAME)],
    }[use_safetensors]
    out: list[tuple[str, bool]] = []
    for name, index in formats:
        out += [(add_variant(index, variant), True), (add_variant(name, variant), False)]
    return out


def find_weights(
    repo_id_or_path: str | os.PathLike[str],
    folder: str | None,
    options: HubOptions,
    *,
    use_safetensors: bool | None = None,
    variant: str | None = None,
) -> WeightsFiles:
    """Find the weights of a model stored in ``folder`` of a repo (``None``: its root), sharded or not.

    Tried in order, each as a sharded checkpoint (its index) and then as one file: safetensors, then ``.bin``
    (``use_safetensors=None``, the default); ``True`` allows only safetensors, ``False`` only ``.bin``. With a
    ``variant`` (``"fp16"``) only the files of that variant are considered: ``diffusion_pytorch_model.fp16.safetensors``
    and ``diffusion_pytorch_model.safetensors.index.fp16.json``. From a Hub repo, only the files used are downloaded
    (with an index: every shard it lists).

    Args:
        repo_id_or_path: A Hub id or a local folder.
        folder: The subfolder that holds the model, or None for the repo root.
        options: Revision, cache folder, offline switch and token.
        use_safetensors: None (prefer safetensors), True (only safetensors) or False (only ``.bin``).
        variant: The variant of the weights, or None for the plain ones.

    Returns:
        The local paths of the weights.

    Raises:
        VariantNotFoundError: No weights of ``variant`` are there; for a local folder the message lists the weights
            files it holds.
        CheckpointNotFoundError: No acceptable weights are there (the message says where it looked and, for a local
            folder, which variants it holds), or a shard the index lists is missing.
        WeightsError: The index is not a valid index of shard files.
    """
    variant = _check_variant(variant)
    candidates = _candidates(use_safetensors, variant)
    for name, is_index in candidates:
        found = locate(repo_id_or_path, name, folder, options, root_fallback=False)
        if found is None:
            continue
        if not is_index:
            if name.endswith(".bin") and use_safetensors is None:
                logger.debug(
                    "%s: no safetensors weights; reading %s with torch.load(weights_only=True)",
                    repo_id_or_path,
                    found.path,
                )
            return WeightsFiles((found.path,))
        return _locate_shards(repo_id_or_path, folder, options, found.path)
    raise _missing_weights(
        repo_id_or_path,
        folder,
        options,
        [n for n, is_index in candidates if not is_index],
        use_safetensors=use_safetensors,
        variant=variant,
    )


def _locate_shards(
    repo_id_or_path: str | os.PathLike[str], folder: str | None, options: HubOptions, index: Path
) -> WeightsFiles:
    """Every shard ``index`` lists, from the folder the index is in (downloaded from a Hub repo)."""
    weight_map = read_index(index)
    paths = []
    for shard in sorted(set(weight_map.values())):
        found = locate(repo_id_or_path, shard, folder, options, root_fallback=False)
        if found is None:
            where = f"{folder}/ of {repo_id_or_path}" if folder else str(repo_id_or_path)
            raise CheckpointNotFoundError(
                f"{index} lists the shard {shard}, which is not in {where}; the checkpoint is incomplete "
                "(copy or download the missing shard, or save the model again)"
            )
        paths.append(found.path)
    return WeightsFiles(tuple(paths), index, weight_map)


def read_index(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index: tensor name -> shard file name.

    Raises:
        ConfigError: The file is not a JSON object.
        WeightsError: ``weight_map`` is missing, empty or not a mapping of names to plain file names (a shard
            name with a path separator or ``..`` could point outside the model folder, so it is refused).
    """
    data = read_json(path)
    weight_map = data.get("weight_map")
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())
    ):
        raise WeightsError(
            f"{path} is not a checkpoint index: it needs a non-empty 'weight_map' object of tensor name -> shard file"
        )
    bad = sorted({v for v in weight_map.values() if v in ("", ".", "..") or any(c in v for c in "/\\")})
    if bad:
        raise WeightsError(
            f"{path}: shard names must be plain file names in the folder of the index, found {show_value(bad[0], 80)}"
        )
    return dict(weight_map)


def _variants_in(names: Collection[str]) -> list[str]:
    """The variants (``"fp16"``; ``"<none>"`` for the plain weights) of the weights files among ``names``."""
    found: set[str] = set()
    for name in names:
        match = _WEIGHTS_FILE.fullmatch(name) or _INDEX_FILE.fullmatch(name)
        if match:
            found.add(match.group(1) or "<none>")
    return sorted(found)


def _missing_weights(
    repo_id_or_path: str | os.PathLike[str],
    folder: str | None,
    options: HubOptions,
    names: list[str],
    *,
    use_safetensors: bool | None,
    variant: str | None,
) -> CheckpointNotFoundError:
    """The error for weights that are not there, saying what is (for a local folder)."""
    what = "model weights" if variant is None else f"model weights of variant {variant!r}"
    error = not_found_error(repo_id_or_path, names, subfolder=folder, options=options, what=what, root_fallback=False)
    message = f"{error} (sharded or not)"
    present = local_files(repo_id_or_path, folder)
    if present is not None:
        weights = [n for n in present if _WEIGHTS_FILE.fullmatch(n) or _INDEX_FILE.fullmatch(n)]
        variants = [v for v in _variants_in(weights) if v != "<none>"]
        message += f"; the folder holds {', '.join(weights) if weights else 'no weights files'}"
        if variants and variant not in variants:
            message += f" (variant {', '.join(map(repr, variants))}: pass variant={variants[0]!r})"
    if use_safetensors:
        message += f"; use_safetensors=True forbids falling back to {add_variant(PICKLE_WEIGHTS_NAME, variant)}"
    elif use_safetensors is False:
        message += "; use_safetensors=False reads only .bin files"
    return VariantNotFoundError(message) if variant is not None else CheckpointNotFoundError(message)


def find_weights_file(
    repo_id_or_path: str | os.PathLike[str],
    folder: str | None,
    options: HubOptions,
    *,
    use_safetensors: bool | None = None,
) -> Path:
    """The one weights file of a model, or the index of a sharded one: :func:`find_weights`' ``source``."""
    return find_weights(repo_id_or_path, folder, options, use_safetensors=use_safetensors).source


def load_weights(
    weights: WeightsFiles, *, expected: nn.Module | None = None, copied_into: int = 0
) -> dict[str, torch.Tensor]:
    """Read a model's weights, every shard of a sharded checkpoint checked against its index.

    Before any tensor is read, the bytes the files declare (:func:`declared_bytes`: safetensors headers, a zip's
    central directory) are checked against the memory available and, with ``expected``, against what the model needs.

    Args:
        weights: The files, from :func:`find_weights`.
        expected: The model the weights are for (built on the ``meta`` device): a file declaring far more data than
            its parameters can hold is refused unread.
        copied_into: The bytes of the parameters the tensors read are then copied into on the CPU (both are in
            memory at once), counted with the file's; 0 when they go to another device.

    Raises:
        WeightsError: A file is damaged or unsafe (see :func:`load_state_dict_file`), declares far more data than
            ``expected`` needs, a shard lacks a tensor the index puts in it, or the same tensor is in two shards.
        ResourceLimitError: The declared data exceed the memory available.
    """
    check_declared_sizes(weights.files, expected, copied_into=copied_into)
    if weights.weight_map is None:
        return load_state_dict_file(weights.files[0])
    state: dict[str, torch.Tensor] = {}
    shard_of: dict[str, str] = {}
    for path in weights.files:
        shard = load_state_dict_file(path)
        twice = [k for k in shard if k in shard_of]
        if twice:
            raise WeightsError(
                f"{weights.index}: the tensor {twice[0]!r} is in two shards, {shard_of[twice[0]]} and {path.name}; "
                "the checkpoint mixes two saves: save it again"
            )
        listed = [k for k, f in weights.weight_map.items() if f == path.name and k not in shard]
        if listed:
            raise WeightsError(
                f"{path} lacks {len(listed)} tensor(s) that {weights.index} puts in it: {_listing(listed)}; the shard "
                "is stale or damaged: download it again or save the model again"
            )
        state.update(shard)
        shard_of.update(dict.fromkeys(shard, path.name))
    return state


def weights_writers(
    state: Mapping[str, torch.Tensor],
    *,
    safe_serialization: bool = True,
    variant: str | None = None,
    max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE,
) -> dict[str, Writer]:
    """The weights files ``save_pretrained`` writes for ``state``, by file name, unwritten.

    One file ``diffusion_pytorch_model[.<variant>].safetensors`` (``.bin`` with ``safe_serialization=False``, a
    ``torch.save`` of the plain state dict), or, when the tensors exceed ``max_shard_size``, shards
    ``diffusion_pytorch_model[.<variant>]-00001-of-0000N.safetensors`` plus their index
    ``diffusion_pytorch_model.safetensors.index[.<variant>].json``: the files diffusers writes.

    Args:
        state: Tensor name -> contiguous CPU tensor.
        safe_serialization: safetensors (True) or a ``torch.save`` pickle (False).
        variant: A name inserted into the file names (``"fp16"``), or None.
        max_shard_size: The largest shard, in bytes or as ``"10GB"``/``"500MB"``; None never shards.

    Raises:
        ValueError: ``variant`` or ``max_shard_size`` is malformed.
    """
    variant = _check_variant(variant)
    suffix = "safetensors" if safe_serialization else "bin"
    infix = f".{variant}" if variant else ""
    pattern = f"{_STEM}{infix}{{suffix}}.{suffix}"
    if max_shard_size is None:
        groups, total = {pattern.format(suffix=""): list(state)}, 0
    else:
        groups, total = split_into_shards(state, filename_pattern=pattern, max_shard_size=max_shard_size)

    def writer(keys: list[str]) -> Writer:
        def write(tmp: Path) -> None:
            shard = {k: state[k] for k in keys}
            if safe_serialization:
                from safetensors.torch import save_file

                save_file(shard, str(tmp), metadata={"format": "pt"})
            else:
                torch.save(shard, tmp)

        return write

    files = {name: writer(keys) for name, keys in groups.items()}
    if len(groups) > 1:
        index = {
            "metadata": {"total_size": total},
            "weight_map": {k: name for name, keys in groups.items() for k in keys},
        }
        text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        index_name = add_variant(SAFETENSORS_INDEX_NAME if safe_serialization else PICKLE_INDEX_NAME, variant)
        files[index_name] = lambda tmp: tmp.write_text(text, encoding="utf-8")  # after its shards
    return files


def stale_weights(folder: str | os.PathLike[str], keep: Collection[str], variant: str | None) -> list[Path]:
    """The weights files of ``variant`` in ``folder`` that a save writing ``keep`` makes stale, indexes first.

    A save replaces the whole set of weights of its variant, in both formats: a stale index would otherwise be read
    before the new single file, and a stale ``.safetensors`` before a new ``.bin``. ``save_pretrained`` removes them
    in the same journaled step as its renames (:func:`ddpm.io.atomic_write_files`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.name not in keep
        and any(
            (m := rx.fullmatch(p.name)) is not None and m.group(1) == variant for rx in (_INDEX_FILE, _WEIGHTS_FILE)
        )
    ]
    return sorted(stale, key=lambda p: _INDEX_FILE.fullmatch(p.name) is None)


def resolve_load_dtype(torch_dtype: torch.dtype | str | None, dtype: torch.dtype | str | None) -> torch.dtype | None:
    """The dtype ``from_pretrained`` loads in, given under either of its names (``dtype`` is diffusers' newer one).

    Raises:
        ValueError: One is not a floating-point dtype, or both are given and differ.
    """
    first, second = resolve_dtype(torch_dtype), resolve_dtype(dtype)
    if first is not None and second is not None and first != second:
        raise ValueError(
            f"torch_dtype={first} and dtype={second} disagree; pass one of them (they are two names of one option)"
        )
    return second if second is not None else first


def resolve_device_map(device_map: object) -> torch.device | None:
    """The one device ``from_pretrained(device_map=...)`` puts the weights on; None leaves them on the CPU.

    Accepted: None; a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``torch.device``, a GPU index ``0``); a strategy
    name (``"auto"``, ``"balanced"``, ``"sequential"``, ``"balanced_low_0"``), which places the whole model on the
    first GPU, else the CPU; a dict whose values all name one device (``{"": "cuda"}``).

    Raises:
        NotImplementedError: The dict maps modules to several devices (ddpm does not split a model).
        ValueError: Not a device, a CUDA device without CUDA, a negative index, or the ``"meta"``/``"disk"`` device.
    """
    if device_map is None:
        return None
    if isinstance(device_map, Mapping):
        devices = {str(resolve_device_map(v)) for v in device_map.values()}
        if len(devices) > 1:
            raise NotImplementedError(
                f"device_map={device_map!r} spreads the model over {len(devices)} devices; ddpm keeps a model on one "
                "device: pass one device (device_map='cuda') or 'auto'"
            )
        if not devices:
            raise ValueError("device_map is an empty dict; pass a device such as 'cpu' or 'cuda', or 'auto'")
        return torch.device(devices.pop())
    if isinstance(device_map, bool) or not isinstance(device_map, (str, int, torch.device)):
        raise ValueError(f"device_map={device_map!r}: pass a device ('cpu', 'cuda', 'cuda:0', 0) or 'auto'")
    if isinstance(device_map, int):
        if device_map < 0:
            raise ValueError(f"device_map={device_map}: a GPU index cannot be negative; for the CPU pass 'cpu'")
        device_map = f"cuda:{device_map}"
    if device_map in _DEVICE_MAP_STRATEGIES:
        return resolve_device("auto")
    try:
        device = torch.device(device_map)
    except RuntimeError:
        raise ValueError(f"device_map={device_map!r} is neither a device ('cpu', 'cuda:0') nor 'auto'") from None
    if device.type in ("meta", "disk"):
        raise ValueError(f"device_map={device_map!r}: weights must be loaded onto a real device (cpu, cuda, ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device_map={str(device_map)!r}: torch sees no CUDA device here; use 'cpu' or 'auto'")
    return device if device.type != "cuda" or device.index is not None else resolve_device(device)


#: Bytes per element of safetensors' dtype names.
_SAFETENSORS_ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
#: safetensors' own limit on its JSON header.
_MAX_SAFETENSORS_HEADER = 100_000_000


def _safetensors_declared(path: Path) -> int | None:
    """The bytes of the tensors a safetensors file's header declares (dtypes × shapes); None when the header is not
    readable (the load that follows then says how the file is damaged)."""
    with open_regular(path, what="weights file") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 0 < size <= _MAX_SAFETENSORS_HEADER:
            return None
        try:
            header = json.loads(f.read(size))
        except (ValueError, RecursionError):
            return None
    if not isinstance(header, dict):
        return None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        itemsize = _SAFETENSORS_ITEMSIZE.get(str(entry.get("dtype"))) if isinstance(entry, dict) else None
        if itemsize is None or not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            return None
        total += math.prod(shape) * itemsize
    return total


def declared_bytes(path: str | os.PathLike[str]) -> int:
    """The memory a weights file's tensors take once read, from what the file declares and without reading them: the
    safetensors header's dtypes and shapes, a ``torch.save`` zip's member sizes (its central directory), else the
    file's size.

    Raises:
        WeightsError: The file is not a regular file or cannot be opened.
    """
    path = Path(path)
    declared = _safetensors_declared(path) if path.suffix == ".safetensors" else declared_zip_bytes(path)
    return declared if declared is not None else path.stat().st_size


#: A weights file may declare up to this many bytes per parameter of its model (float64 is 8) before it is refused as
#: not belonging to the config.
_MAX_BYTES_PER_PARAMETER = 8
_SLACK_BYTES = 2**20


def check_declared_sizes(files: Collection[Path], expected: nn.Module | None, *, copied_into: int = 0) -> None:
    """Refuse weights files whose declared data cannot fit in memory, or far exceed what ``expected`` holds.

    Args:
        files: The weights files (one, or the shards).
        expected: The model they are for (on ``meta``), or None.
        copied_into: The bytes of the parameters the tensors are copied into on the CPU while the file's are still
            held: the peak is the sum.

    Raises:
        WeightsError: The files declare more than 8 bytes per parameter of ``expected`` (float64), plus 1 MiB.
        ResourceLimitError: The declared data (plus ``copied_into``) exceed the memory available
            (:func:`ddpm.memory.check_fits`).
    """
    sizes = {path: declared_bytes(path) for path in files}
    total = sum(sizes.values())
    where = next(iter(sizes)) if len(sizes) == 1 else f"the {len(sizes)} shards in {next(iter(sizes)).parent}"
    if expected is not None:
        count = sum(p.numel() for p in expected.state_dict().values())
        most = count * _MAX_BYTES_PER_PARAMETER + _SLACK_BYTES
        if total > most:
            raise WeightsError(
                f"{where} declares {format_bytes(total)} of tensors, far more than the {count:,} parameters of the "
                f"{type(expected).__name__} its config describes can hold ({format_bytes(most)} even in float64); "
                "the weights do not belong to this config.json, or the file is damaged: refused unread"
            )
    lower = "load them on a machine with more memory"
    if copied_into:
        lower = (
            f"the file's {format_bytes(total)} of tensors and the {format_bytes(copied_into)} of parameters they are "
            f"copied into are in memory at once: {lower}"
        )
    check_fits(total + copied_into, what=f"reading the weights {where}", lower=lower)


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
    device: torch.device | None = None,
) -> None:
    """Load ``state`` into ``model`` strictly, assigning new parameter tensors (the model may live on ``meta``).

    Args:
        model: The model; only parameter names and shapes are read from it.
        state: Tensor name → tensor, already renamed with :func:`rename_legacy_keys`.
        source: The file the tensors came from, named in errors.
        dtype: The dtype of the loaded floating-point parameters (default: each parameter's current dtype).
        device: Where the parameters are created (default: the CPU); each tensor is copied there once.

    Raises:
        WeightsError: Some tensors are missing, unexpected or of the wrong shape (all of them listed by name), are
            not floating-point where the model's parameters are, or are not finite (NaN, inf) in the file or once
            cast to ``dtype`` (a float16 overflow).
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
    not_float = [
        f"{k} ({str(v.dtype).replace('torch.', '')})"
        for k, v in state.items()
        if expected[k].is_floating_point() and not v.is_floating_point()
    ]
    if not_float:
        raise WeightsError(
            f"{source} holds {len(not_float)} tensor(s) of a non-floating-point dtype where {type(model).__name__} has "
            f"floating-point parameters: {_listing(not_float)}; they would be read as numbers they do not mean. The "
            "file is damaged or was not saved from this kind of model"
        )
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = expected[key]
        want = dtype if dtype is not None and target.is_floating_point() else target.dtype
        # A fresh, owned and aligned copy (never a view into a memory-mapped file) in the model's memory layout.
        converted[key] = torch.empty_like(target, dtype=want, device=device or "cpu").copy_(value)
    _check_finite(converted, state, source=source)
    model.load_state_dict(converted, strict=True, assign=True)


def _check_finite(converted: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, source: object) -> None:
    """Refuse weights that are not finite, in the file (NaN, inf) or after the cast to the requested dtype (a weight
    beyond float16's range): the model would make all-black images. One pass over the loaded tensors; the file's
    tensors are only looked at when a loaded one is not finite.

    Raises:
        WeightsError: Names the tensors, and for an overflowing cast the largest magnitude and the dtype's range.
    """
    in_file: list[str] = []
    overflow: list[str] = []
    dtype = None
    for key, value in converted.items():
        # A sum is one reduction without a temporary: NaN and inf propagate into it, so a finite sum proves the tensor
        # finite; a non-finite one (also a sum that overflows) is then checked element by element.
        if not value.is_floating_point() or math.isfinite(value.sum()) or value.isfinite().all():
            continue
        original = state[key]
        bad = int((~torch.isfinite(original)).sum())
        if bad:
            in_file.append(f"{key} ({bad:,} of {original.numel():,} values)")
        else:
            dtype = value.dtype
            largest = float(original.detach().abs().max())
            overflow.append(f"{key} (largest magnitude {largest:.6g})")
    if in_file:
        raise WeightsError(
            f"{source} has {len(in_file)} tensor(s) with NaN or infinite values: {_listing(in_file)}; the file is "
            "damaged or was saved from a diverged training run: download it again, or use an earlier checkpoint"
        )
    if overflow and dtype is not None:
        name = str(dtype).replace("torch.", "")
        raise WeightsError(
            f"{source}: {len(overflow)} tensor(s) do not fit in {name} (largest finite value "
            f"{torch.finfo(dtype).max:.6g}) and would become infinite: {_listing(overflow)}; load the model in "
            "bfloat16 or float32 instead (torch_dtype=torch.bfloat16 or torch.float32)"
        )


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")
