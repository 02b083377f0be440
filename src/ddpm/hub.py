"""Finding files: a local folder, a bundled model, or a Hugging Face Hub repo (through its cache).

This is the only module that talks to ``huggingface_hub``. Every ``from_pretrained`` in ddpm asks :func:`locate` (or
:func:`require`, which raises when the file is missing) for the files it needs, one by one: ``subfolder`` first, then
the repo root, so a Hub repo only ever downloads what is used (one weights file and the configs). It honours
``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``local_files_only`` exactly as huggingface_hub does, and turns its
exceptions into :class:`~ddpm.errors.CheckpointNotFoundError` messages that say what to do. When the Hub cannot be
reached (no network, DNS failure, refused connection) and a file is not cached, that error comes at once, from one
request, instead of after huggingface_hub's retries; a name close to a bundled model's gets "did you mean ...?"
without asking the Hub at all. A sharded checkpoint is
fetched the same way, its index and then each shard it lists; :func:`split_into_shards` groups tensors into shards on
saving exactly as the Hub's own tools do.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BUNDLED_MODELS",
    "HubOptions",
    "Located",
    "bundled_model_path",
    "close_bundled_name",
    "find_file",
    "is_offline",
    "local_files",
    "locate",
    "not_found_error",
    "require",
    "require_file",
    "split_into_shards",
]

#: Short names of models shipped inside the package, mapped to their folder under ``ddpm/pretrained``.
BUNDLED_MODELS: dict[str, str] = {
    # 32x32 MNIST digits, 2.7 M parameters, trained with ddpm.training; its card: pretrained/ddpm-mnist/README.md
    "ddpm-mnist": "ddpm-mnist",
}


def close_bundled_name(name: str) -> str | None:
    """The bundled model ``name`` is most likely a typo of (``ddpm-mnst``, ``ddpm_mnist``, ``mnist``), or ``None``.

    Only names without a ``/`` qualify: ``org/name`` is a Hub id, whatever it looks like.
    """
    if "/" in name or "\\" in name:
        return None
    close = difflib.get_close_matches(name.lower(), list(BUNDLED_MODELS), n=1, cutoff=0.6)
    return close[0] if close else None


def bundled_model_path(name: str) -> Path | None:
    """The folder of a bundled model by its short name, or ``None`` if ``name`` is not one."""
    folder = BUNDLED_MODELS.get(name)
    if folder is None:
        return None
    return Path(__file__).parent / "pretrained" / folder


@dataclass(frozen=True)
class HubOptions:
    """The download options every ``from_pretrained`` accepts, passed through to huggingface_hub."""

    revision: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    local_files_only: bool = False
    token: str | bool | None = None


def is_offline(options: HubOptions) -> bool:
    """True when no download may happen (``local_files_only=True`` or ``HF_HUB_OFFLINE`` set)."""
    from huggingface_hub import constants

    return options.local_files_only or bool(constants.HF_HUB_OFFLINE)


def _local_root(repo_id_or_path: str | os.PathLike[str]) -> Path | None:
    """The local folder meant by ``repo_id_or_path``, or None when it names a Hub repo."""
    bundled = bundled_model_path(str(repo_id_or_path))
    if bundled is not None:
        return bundled
    path = Path(repo_id_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointNotFoundError(
            f"{path} is a file, not a folder; from_pretrained expects a model folder or a Hub id"
        )
    text = str(repo_id_or_path)
    # A Hub id is "name" or "org/name"; anything else that does not exist is a mistyped local path.
    if isinstance(repo_id_or_path, Path) or text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text:
        raise CheckpointNotFoundError(f"no such folder: {path}")
    # A Hub id without an "org/" is a legacy name (gpt2, bert-base-uncased); one close to a bundled model's is a typo.
    typo_of = close_bundled_name(text)
    if typo_of is not None:
        raise CheckpointNotFoundError(
            f"{text!r} is neither a bundled model nor a local folder; did you mean {typo_of}? (bundled models: "
            f"{', '.join(BUNDLED_MODELS)}; a Hub id looks like google/ddpm-cifar10-32)"
        )
    return None


def local_files(repo_id_or_path: str | os.PathLike[str], subfolder: str | None = None) -> list[str] | None:
    """The names of the files in ``subfolder`` (None: the root) of a local folder, sorted; None for a Hub id.

    Error messages use it to say what a folder holds instead of what was asked for.
    """
    try:
        root = _local_root(repo_id_or_path)
    except CheckpointNotFoundError:
        return None
    if root is None:
        return None
    folder = root / subfolder if subfolder else root
    return sorted(p.name for p in folder.iterdir() if not p.is_dir()) if folder.is_dir() else []


@dataclass(frozen=True)
class Located:
    """A file :func:`locate` found.

    Attributes:
        path: The file on this machine (in the local folder or the Hugging Face cache).
        subfolder: The folder of the repo it was found in: the ``subfolder`` asked for, or ``None`` for the root.
    """

    path: Path
    subfolder: str | None


def locate(
    repo_id_or_path: str | os.PathLike[str],
    filename: str,
    subfolder: str | None = None,
    options: HubOptions = HubOptions(),
    *,
    root_fallback: bool = True,
) -> Located | None:
    """Find ``filename`` in ``subfolder`` of a repo, or else at its root: the one file lookup of ddpm.

    The root fallback serves the flat google/ddpm-* repos, which keep every component's files at the top level,
    while diffusers pipelines keep them in ``unet/`` and ``scheduler/``. A Hub file is downloaded into the cache
    (or, offline, only looked up there).

    Args:
        repo_id_or_path: A local folder, a bundled model's short name, or a Hub id such as
            ``"google/ddpm-ema-celebahq-256"``.
        filename: The file to look for, e.g. ``"config.json"``.
        subfolder: The component folder (``"unet"``, ``"scheduler"``) to try before the root.
        options: Revision, cache folder, offline switch and token for Hub ids.
        root_fallback: Look at the root when ``subfolder`` lacks the file (False: ``subfolder`` only, e.g. for the
            weights that must sit beside the config found there).

    Returns:
        The file and the folder it was in, or ``None`` when it is in neither place (or, offline or with the Hub
        unreachable, not in the cached copy of the repo).

    Raises:
        CheckpointNotFoundError: The repo does not exist, the revision does not exist, access is denied, or the
            network failed and the repo is not in the cache; the message names the id.
    """
    folders = [subfolder, None] if subfolder and root_fallback else [subfolder]
    root = _local_root(repo_id_or_path)
    if root is not None:
        for folder in folders:
            path = root / folder / filename if folder else root / filename
            # Anything but a folder counts as present: a FIFO or device named like the file is then refused by
            # the reader (ddpm.io.open_regular), which says what it is, instead of being reported as missing.
            if path.exists() and not path.is_dir():
                return Located(path, folder)
        return None
    unreachable: Exception | None = None
    for folder in folders:
        try:
            return Located(_download(str(repo_id_or_path), filename, folder, options), folder)
        except _NotInRepo as missing:
            unreachable = unreachable or missing.unreachable
    if unreachable is not None and not _snapshot_is_cached(str(repo_id_or_path), options):
        raise CheckpointNotFoundError(
            f"could not reach the Hugging Face Hub to get {filename} of {repo_id_or_path}, and it is not in the cache "
            f"({unreachable}); check the network, or set HF_HUB_OFFLINE=1 to use only cached files"
        )
    return None


def require(
    repo_id_or_path: str | os.PathLike[str],
    filename: str,
    subfolder: str | None = None,
    options: HubOptions = HubOptions(),
    *,
    what: str | None = None,
) -> Located:
    """Like :func:`locate`, but raise a message that says where it looked when the file is in neither place.

    Raises:
        CheckpointNotFoundError: As :func:`locate`, or the file is missing (``what`` names it in the message).
    """
    found = locate(repo_id_or_path, filename, subfolder, options)
    if found is None:
        raise not_found_error(repo_id_or_path, [filename], subfolder=subfolder, options=options, what=what)
    return found


def find_file(
    repo_id_or_path: str | os.PathLike[str],
    filename: str,
    *,
    subfolder: str | None = None,
    options: HubOptions = HubOptions(),
) -> Path | None:
    """The path :func:`locate` finds (``subfolder`` first, then the root), or ``None``."""
    found = locate(repo_id_or_path, filename, subfolder, options)
    return None if found is None else found.path


def require_file(
    repo_id_or_path: str | os.PathLike[str],
    filename: str,
    *,
    subfolder: str | None = None,
    options: HubOptions = HubOptions(),
    what: str | None = None,
) -> Path:
    """The path :func:`require` finds; raises :class:`~ddpm.errors.CheckpointNotFoundError` when it is missing."""
    return require(repo_id_or_path, filename, subfolder, options, what=what).path


def _snapshot_is_cached(repo_id: str, options: HubOptions) -> bool:
    """True when the Hugging Face cache holds a copy of ``repo_id`` at the revision asked for (the cache's layout:
    ``models--org--name/refs/<branch>`` naming a snapshot, or ``snapshots/<commit>``)."""
    from huggingface_hub import constants

    cache = Path(options.cache_dir or constants.HF_HUB_CACHE)
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = options.revision or "main"
    return (repo / "refs" / revision).is_file() or (repo / "snapshots" / revision).is_dir()


class _NotInRepo(Exception):
    """``_download`` found no such file; ``unreachable`` holds the error when the Hub could not be asked."""

    def __init__(self, unreachable: Exception | None = None) -> None:
        super().__init__()
        self.unreachable = unreachable


def _download(repo_id: str, filename: str, folder: str | None, options: HubOptions) -> Path:
    """``folder/filename`` of a Hub repo from the cache, downloading it unless offline.

    Raises:
        _NotInRepo: The repo has no such file, or it is not cached and the Hub could not be reached.
        CheckpointNotFoundError: The repo or revision does not exist, access is denied, or the download failed.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        if not is_offline(options):
            _ask_the_hub_unless_cached(repo_id, filename, folder, options)
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                subfolder=folder,
                revision=options.revision,
                cache_dir=None if options.cache_dir is None else os.fspath(options.cache_dir),
                local_files_only=options.local_files_only,
                token=options.token,
            )
        )
    except LocalEntryNotFoundError as exc:  # (a subclass of EntryNotFoundError: keep it first)
        # Online, this means the Hub could not be reached and this file is not cached.
        raise _NotInRepo(None if is_offline(options) else exc) from None
    except EntryNotFoundError:
        raise _NotInRepo() from None
    except GatedRepoError as exc:
        raise CheckpointNotFoundError(
            f"{repo_id} is gated: accept its terms on the Hub and log in (huggingface-cli login) or pass token=... "
            f"({exc})"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(f"{repo_id} has no revision {options.revision!r}") from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"{repo_id!r} is neither a local folder nor a Hub repository you can access "
            "(check the spelling, or pass token=... for a private repo)"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise CheckpointNotFoundError(f"could not download {filename} from {repo_id}: {exc}") from None


#: HTTP statuses that mean "try again later" (timeout, rate limit, server errors), which huggingface_hub retries.
_BUSY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _ask_the_hub_unless_cached(repo_id: str, filename: str, folder: str | None, options: HubOptions) -> None:
    """Ask the Hub once, without retrying, about a file that is not cached: a failed connection ends the search here.

    ``hf_hub_download`` retries an unanswered request for a file it has not cached five times over ~25 s, logging
    each "Retrying in 1s/2s/4s/8s"; when the Hub cannot be reached at all (no network, DNS failure, refused
    connection) that only delays the same error. One HEAD request without retries answers at once. A cached file
    skips this: ``hf_hub_download`` then falls back to the cache on a failed connection without retrying.

    Raises:
        _NotInRepo: The Hub could not be reached (``unreachable`` holds why), or it says the file does not exist.
        huggingface_hub.errors.HfHubHTTPError: The Hub answered with an error (no such repo, revision, access).
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    cache_dir = None if options.cache_dir is None else os.fspath(options.cache_dir)
    path_in_repo = f"{folder}/{filename}" if folder else filename
    if isinstance(try_to_load_from_cache(repo_id, path_in_repo, cache_dir, options.revision), str):
        return
    url = hf_hub_url(repo_id, filename, subfolder=folder, revision=options.revision)
    try:
        get_hf_file_metadata(url, token=options.token)
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code in _BUSY_STATUSES:
            return  # the Hub is there but busy: hf_hub_download waits and retries
        raise  # the Hub's answer (no such repo, file or revision; gated): the caller maps it
    except Exception as exc:  # no answer at all (its type is the HTTP client's: DNS, connection, timeout, proxy)
        raise _NotInRepo(exc) from None


def split_into_shards(
    state: Mapping[str, torch.Tensor], *, filename_pattern: str, max_shard_size: int | str
) -> tuple[dict[str, list[str]], int]:
    """Group tensors into shard files as the Hub (huggingface_hub, diffusers, transformers) does.

    Tensors are taken in order and a new shard is started when the next one would push the current shard past
    ``max_shard_size``; a tensor larger than the limit gets a shard of its own. With one shard its file is named by
    ``filename_pattern`` with ``{suffix}`` removed, else ``{suffix}`` becomes ``-00001-of-0000N``.

    Args:
        state: Tensor name -> tensor, in the order to write.
        filename_pattern: e.g. ``"diffusion_pytorch_model{suffix}.safetensors"``.
        max_shard_size: An int (bytes) or a string with a unit, e.g. ``"10GB"``, ``"500MB"``, ``"300KB"``
            (decimal units, as the Hub uses).

    Returns:
        File name -> the tensor names it holds, and the total size in bytes.

    Raises:
        ValueError: ``max_shard_size`` is not a positive int or a number with a unit (TB, GB, MB, KB).
    """
    from huggingface_hub import split_torch_state_dict_into_shards

    if isinstance(max_shard_size, bool) or not isinstance(max_shard_size, (int, str)):
        raise ValueError(f"max_shard_size must be an int (bytes) or a string like '10GB', got {max_shard_size!r}")
    if isinstance(max_shard_size, int) and max_shard_size <= 0:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size}")
    split = split_torch_state_dict_into_shards(
        dict(state), filename_pattern=filename_pattern, max_shard_size=max_shard_size
    )
    return dict(split.filename_to_tensors), int(split.metadata["total_size"])


def not_found_error(
    repo_id_or_path: str | os.PathLike[str],
    filenames: list[str],
    *,
    subfolder: str | None = None,
    options: HubOptions = HubOptions(),
    what: str | None = None,
    root_fallback: bool = True,
) -> CheckpointNotFoundError:
    """The error for files that are in none of the places :func:`locate` looks (``subfolder``, then the root unless
    ``root_fallback`` is False)."""
    names = " or ".join(filenames)
    places = "the root" if not subfolder else f"{subfolder}/ or the root" if root_fallback else f"{subfolder}/"
    label = f" ({what})" if what else ""
    if _local_root(repo_id_or_path) is not None:
        return CheckpointNotFoundError(f"{repo_id_or_path}: no {names}{label} in {places} of the folder")
    if is_offline(options):
        from huggingface_hub import constants

        cache = options.cache_dir or constants.HF_HUB_CACHE
        switch = "local_files_only=True" if options.local_files_only else "HF_HUB_OFFLINE=1"
        return CheckpointNotFoundError(
            f"{repo_id_or_path!r} is not a local folder, and its {names}{label} is not in the Hugging Face cache "
            f"({cache}); downloading is off ({switch}). Download it once with network access (unset HF_HUB_OFFLINE, "
            "local_files_only=False), point HF_HUB_CACHE at a cache that holds it, or pass a local folder."
        )
    return CheckpointNotFoundError(f"{repo_id_or_path}: the repo has no {names}{label} in {places}")
