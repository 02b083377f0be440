"""Crash-safe file writing: write to temporary files in the target folder, then rename them into place.

An interrupted save therefore leaves either the old files or the new ones, never a truncated mix:

* :func:`atomic_write` writes one file;
* :func:`atomic_write_files` writes several (a model's config and weights, a whole pipeline) so that a failure in
  any of them changes none: every file is written in full first, and only then are they all renamed;
* :func:`check_save_folder` is the guard every ``save_pretrained`` runs first: it refuses to write over a folder
  that holds another kind of model, unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path

from .errors import OverwriteError

__all__ = ["atomic_write", "atomic_write_files", "atomic_write_text", "check_save_folder", "remove_stale_temporaries"]

#: ``write(tmp_path)`` produces the complete file at ``tmp_path``.
Writer = Callable[[Path], None]

_TMP_SUFFIX = ".tmp"


def _temporary_name_prefix(path: Path) -> str:
    return f".{path.name}."


@contextlib.contextmanager
def _temporary_sibling(path: Path) -> Iterator[Path]:
    """A new empty file next to ``path`` (same folder, so the final rename stays on one file system).

    It is removed if the block raises (Ctrl-C included); on success the caller has renamed it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_name_prefix(path), suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        # mkstemp creates the file owner-only (0600); give it the mode an ordinary open() would: 0666 less the umask.
        os.fchmod(fd, 0o666 & ~_current_umask())
    except (AttributeError, OSError):  # pragma: no cover - platforms without fchmod
        pass
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    # The umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_files(writes: Mapping[str | os.PathLike[str], Writer]) -> None:
    """Write several files so that an interruption changes none of them.

    Each ``write(tmp_path)`` fills a temporary sibling of its target (``.<name>.<random>.tmp``), which is flushed to
    disk. Only when every file is complete are they renamed onto their targets, in the mapping's order (put the file
    that marks a folder as complete, e.g. ``model_index.json``, last).

    If a writer raises (or the process gets Ctrl-C) before the renames, every temporary file is removed and no
    target is touched. A process killed outright can leave a temporary file behind, never a damaged target;
    :func:`remove_stale_temporaries` clears those.

    Args:
        writes: Target path → writer.
    """
    targets = [Path(p) for p in writes]
    with contextlib.ExitStack() as stack:
        staged = []
        for target, write in zip(targets, writes.values()):
            tmp = stack.enter_context(_temporary_sibling(target))
            write(tmp)
            _fsync(tmp)
            staged.append((tmp, target))
        for tmp, target in staged:
            os.replace(tmp, target)
    for folder in dict.fromkeys(t.parent for t in targets):
        _fsync_folder(folder)


def atomic_write(path: str | os.PathLike[str], write: Writer) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    If ``write`` raises (or the process is interrupted before the rename), ``path`` keeps its previous content and
    the temporary file is removed.
    """
    atomic_write_files({path: write})


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temporaries(paths: Collection[str | os.PathLike[str]]) -> None:
    """Delete the temporary files a killed save of ``paths`` left behind (``.<name>.<random>.tmp`` beside each).

    Call it only where one process saves to the folder at a time (``save_pretrained`` does).
    """
    for path in map(Path, paths):
        if not path.parent.is_dir():
            continue
        for stale in path.parent.glob(f"{_temporary_name_prefix(path)}*{_TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- what a folder holds


def _class_name_in(path: Path) -> str | None:
    """The ``_class_name`` of a JSON config file; None when it is unreadable or has none."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(2**24))  # bounded, like ddpm.config.read_json
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    name = data.get("_class_name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def check_save_folder(
    folder: str | os.PathLike[str],
    *,
    what: str,
    owned: Mapping[str, Callable[[str], bool]],
    foreign: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Make sure ``save_pretrained`` may write ``what`` into ``folder``; create the folder.

    Files of the same kind are replaced quietly (as in diffusers): saving a UNet over a UNet, a scheduler over any
    scheduler, a pipeline over a ddpm pipeline. Another kind of model in the folder is refused, so that a mistyped
    path cannot turn a pipeline folder into a mix of two models.

    Args:
        folder: The target folder.
        what: The thing being saved, for the message (``"a UNet2DModel"``).
        owned: The JSON file this save replaces → whether its ``_class_name`` is of the same kind. An existing file
            whose class is not accepted (or that is unreadable) is another kind of model.
        foreign: File names whose presence means the folder holds another kind of model → a description of that kind
            (``{"model_index.json": "a pipeline"}``).
        overwrite: Skip the checks and replace whatever is there.

    Returns:
        The folder, as a Path (created if missing).

    Raises:
        OverwriteError: ``folder`` is a file, or holds another kind of model and ``overwrite`` is False.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OverwriteError(f"cannot save {what} to {folder}: it is a file, not a folder")
    if not overwrite and folder.is_dir():
        found: list[str] = []
        for name, description in (foreign or {}).items():
            if (folder / name).exists():
                found.append(f"{name} ({description})")
        for name, accepts in owned.items():
            path = folder / name
            if path.exists():
                class_name = _class_name_in(path)
                if class_name is None or not accepts(class_name):
                    kind = f"_class_name {class_name!r}" if class_name else "no readable _class_name"
                    found.append(f"{name} ({kind})")
        if found:
            raise OverwriteError(
                f"refusing to save {what} to {folder}: the folder holds another kind of model: {', '.join(found)}. "
                "Save to another folder, or pass overwrite=True to replace its files."
            )
    folder.mkdir(parents=True, exist_ok=True)
    return folder
