"""Files on disk: crash-safe writing, the overwrite guard, and safe reading of ``torch.save`` pickles.

Writing goes to temporary files in the target folder, which are then renamed into place, so an interrupted save
leaves either the old files or the new ones, never a truncated mix:

* :func:`atomic_write` writes one file;
* :func:`atomic_write_files` writes several (a model's config and weights, a whole pipeline) so that a failure in
  any of them changes none: every file is written in full first, and only then are they all renamed;
* :func:`check_save_folder` is the guard every ``save_pretrained`` runs first: it refuses to write over a folder
  that holds another kind of model, unless ``overwrite=True``.

Saved files get the mode an ordinary ``open()`` gives (``0666`` less the umask). A failure of the disk (full,
permission denied, read-only, a file where a folder should be) is a :class:`~ddpm.errors.SaveError` naming the path
(:func:`save_error`). A multi-file save writes a journal of its renames first, so a save killed between them is
completed by the next save or load (:func:`finish_interrupted_save`), and saves into one folder hold a lock on it.

Reading a file the user controls goes through :func:`open_regular`: regular files only, opened without blocking.

Reading a pickle (:func:`load_pickle`, for ``.bin`` weights and training checkpoints) checks the sizes its zip
members declare against the memory (:func:`declared_zip_bytes`, nothing inflated) and scans it first: the Python
objects it names are read from its opcodes with :mod:`pickletools`, which parses and never executes, and a name
outside torch's ``weights_only`` allow-list refuses the file before anything in it runs. Only then is it loaded,
with ``torch.load(weights_only=True)``. Every failure becomes a :class:`~ddpm.errors.WeightsError` that says which
file and whether it is unreadable, empty, damaged or unsafe.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import errno
import json
import os
import pickletools
import shutil
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO

from .errors import DDPMError, OverwriteError, SaveError, UnsafeCheckpointError, WeightsError

__all__ = [
    "atomic_write",
    "atomic_write_files",
    "atomic_write_text",
    "check_readable",
    "check_save_folder",
    "damaged_file_error",
    "declared_zip_bytes",
    "finish_interrupted_save",
    "load_pickle",
    "open_regular",
    "remove_stale_temporaries",
    "save_error",
]

#: ``write(tmp_path)`` produces the complete file at ``tmp_path``; what it returns is ignored.
Writer = Callable[[Path], object]

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


# ---------------------------------------------------------------------------------------------- saving: errors

#: Words in the message of a writer's own exception (torch.save's ``RuntimeError``, safetensors' ``SafetensorError``)
#: that mean the operating system refused to write: the disk is full, or writing failed.
_WRITE_FAILED = ("no space left", "storagefull", "unexpected pos", "file write failed", "disk quota", "write failed")


def _free_space(folder: Path) -> str:
    """The free space on the disk holding ``folder``, for messages (``"12.3 MiB"``; ``"an unknown amount"``)."""
    from .memory import format_bytes  # imports torch: only when a save failed

    for candidate in (folder, *folder.parents):
        try:
            return format_bytes(shutil.disk_usage(candidate).free)
        except OSError:
            continue
    return "an unknown amount"


#: What to say (after ``cannot save <path>: ``) for an ``errno`` while saving; ``{folder}`` is the target's folder,
#: ``{file}`` the file that stands where a folder is needed.
_SAVE_REMEDIES = {
    errno.EACCES: "permission denied; save to a folder you may write to, or ask the owner of {folder} for write access",
    errno.EROFS: "{folder} is on a read-only file system; save to another folder",
    errno.ENOTDIR: "a file stands where a folder is needed on that path ({file}); remove or rename it, or save to "
    "another folder",
    errno.EISDIR: "it is a folder; remove it or save to another path",
}
_SAVE_REMEDIES[errno.EPERM] = _SAVE_REMEDIES[errno.EACCES]
_SAVE_REMEDIES[errno.EEXIST] = _SAVE_REMEDIES[errno.ENOTDIR]


def save_error(path: Path, exc: BaseException) -> SaveError | None:
    """The :class:`~ddpm.errors.SaveError` for a failure to write ``path``, or None when ``exc`` is not about the disk.

    ``exc`` is an ``OSError`` (disk full, permission denied, read-only file system, a file where a folder should
    be) or a writer's own error whose message says that writing failed (torch.save's ``unexpected pos``).
    """
    folder = path.parent
    code = exc.errno if isinstance(exc, OSError) else None
    text = str(exc).lower()
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or "no space left" in text or "quota" in text:
        return SaveError(
            f"cannot save {path}: No space left on device: the disk holding {folder} is full ({_free_space(folder)} "
            "free); free some space or save to another disk, then save again (the previous files are unchanged)"
        )
    if code in _SAVE_REMEDIES:
        file = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), folder)
        return SaveError(f"cannot save {path}: " + _SAVE_REMEDIES[code].format(folder=folder, file=file))
    if isinstance(exc, OSError):
        return SaveError(f"cannot save {path}: {exc.strerror or exc}")
    if any(words in text for words in _WRITE_FAILED):
        return SaveError(
            f"cannot save {path}: writing it failed ({type(exc).__name__}: {_first_line(str(exc))[:200]}); the disk "
            f"holding {folder} has {_free_space(folder)} free: if it is full, free some space or save to another "
            "disk, then save again (the previous files are unchanged)"
        )
    return None


@contextlib.contextmanager
def _saving(path: Path) -> Iterator[None]:
    """Turn a failure to write ``path`` (see :func:`save_error`) into a :class:`~ddpm.errors.SaveError`."""
    try:
        yield
    except DDPMError:
        raise
    except Exception as exc:
        error = save_error(path, exc)
        if error is None:
            raise
        raise error from exc


# ---------------------------------------------------------------------------------------------- saving: locks, journal

#: The file a multi-file save writes (fsynced) before its first rename and removes after its last: the renames and
#: removals still to do. A save killed in between is completed from it by the next save or load of the folder.
JOURNAL_NAME = ".ddpm-save-journal.json"
#: A journal is a few KB; a larger one is not ours.
_MAX_JOURNAL_BYTES = 2**20


def _save_root(paths: Iterable[Path]) -> Path:
    """The folder holding every file of a save (where its journal goes): the common folder of their folders."""
    parents = [os.path.abspath(p.parent) for p in paths]
    return Path(os.path.commonpath(parents)) if parents else Path.cwd()


@contextlib.contextmanager
def _folders_locked(folders: Iterable[Path]) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on each folder, taken in a fixed order so that two savers cannot
    deadlock. One process saves into a folder at a time; a folder's temporary files are only removed under its lock,
    so a concurrent save never loses its own. A no-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with contextlib.ExitStack() as stack:
        for folder in sorted(set(map(Path, map(os.path.abspath, folders)))):
            with _saving(folder / JOURNAL_NAME):
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(folder, os.O_RDONLY)
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without locks (some network mounts): save unlocked, as before
                pass
        yield


def _write_journal(root: Path, renames: list[tuple[Path, Path]], removals: Collection[Path]) -> Path:
    journal = root / JOURNAL_NAME
    text = json.dumps(
        {
            "renames": [[os.path.relpath(t, root), os.path.relpath(d, root)] for t, d in renames],
            "remove": [os.path.relpath(p, root) for p in removals],
        }
    )
    tmp = root / f"{JOURNAL_NAME}.tmp"
    with _saving(journal):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, journal)
        _fsync_folder(root)
    return journal


def _journal_path(root: Path, relative: object) -> Path:
    """A path the journal names, checked to stay inside ``root``."""
    if not isinstance(relative, str) or os.path.isabs(relative) or ".." in Path(relative).parts:
        raise ValueError(f"it names {relative!r}, not a path inside the folder")
    return root / relative


def _read_journal(journal: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    root = journal.parent
    with open_regular(journal, what="save journal", max_bytes=_MAX_JOURNAL_BYTES, error=SaveError) as f:
        data = json.loads(f.read())
    renames = []
    for tmp_name, target_name in data["renames"]:
        tmp, target = _journal_path(root, tmp_name), _journal_path(root, target_name)
        if tmp.parent != target.parent or not tmp.name.startswith(_temporary_name_prefix(target)):
            raise ValueError(f"{tmp_name!r} is not a temporary file of {target_name!r}")
        renames.append((tmp, target))
    return renames, [_journal_path(root, name) for name in data["remove"]]


def _replay(journal: Path) -> None:
    """Complete the save ``journal`` records: the renames not done yet, then the removals; then drop the journal."""
    try:
        renames, removals = _read_journal(journal)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise SaveError(
            f"{journal.parent} holds an unfinished save whose journal {journal.name} is damaged ({exc}); the folder "
            f"may mix two saves: save the model into it again (or restore it from a copy), then delete {journal}"
        ) from None
    try:
        with _saving(journal):
            for tmp, target in renames:
                if tmp.exists():  # else: renamed before the interruption
                    os.replace(tmp, target)
            for path in removals:
                path.unlink(missing_ok=True)
            for folder in dict.fromkeys([journal.parent, *(t.parent for _, t in renames)]):
                _fsync_folder(folder)
            journal.unlink()
            _fsync_folder(journal.parent)
    except SaveError as exc:
        raise SaveError(
            f"{journal.parent} holds a save that was interrupted before it completed, and completing it failed: {exc}"
        ) from exc


def finish_interrupted_save(folder: str | os.PathLike[str]) -> bool:
    """Complete a multi-file save of ``folder`` that was killed between its renames (see :data:`JOURNAL_NAME`).

    Every file of such a save was complete on disk before its first rename, so the save is rolled forward: the folder
    then holds the whole new version, never a mix. Loading and saving call this first; it is cheap when there is
    nothing to do (one ``stat``).

    Returns:
        Whether an unfinished save was completed.

    Raises:
        SaveError: The save cannot be completed (the folder is read-only to this user, or the journal is damaged).
    """
    journal = Path(folder) / JOURNAL_NAME
    if not os.path.lexists(journal):
        return False
    with _folders_locked([journal.parent]):
        if not os.path.lexists(journal):  # another process completed it meanwhile
            return False
        _replay(journal)
    return True


# ---------------------------------------------------------------------------------------------- saving


def atomic_write_files(writes: Mapping[Path, Writer], *, remove: Collection[Path] = ()) -> None:
    """Write several files so that an interruption changes none of them, or leaves a save the next one completes.

    Each ``write(tmp_path)`` fills a temporary sibling of its target (``.<name>.<random>.tmp``), which is given the
    mode an ordinary ``open()`` gives (``0666`` less the umask: some writers make their own owner-only file) and
    flushed to disk. Only when every file is complete are they renamed onto their targets, in the mapping's order (put
    the file that marks a folder as complete, e.g. ``model_index.json``, last); then ``remove`` is deleted.

    If a writer raises (or the process gets Ctrl-C) before the renames, every temporary file is removed and no target
    is touched. With several files, the renames and removals still to do are first written to a journal
    (:data:`JOURNAL_NAME`): a process killed between two renames leaves it, and the next save or load of the folder
    completes the save (:func:`finish_interrupted_save`), so the folder holds the old version or the new one, never a
    mix. The folders are locked (``flock``) during the save: concurrent saves to one folder take turns.

    Args:
        writes: Target path → writer.
        remove: Files the save makes stale (an earlier save's other shards), deleted after the renames.

    Raises:
        SaveError: The disk is full, permission is denied, the file system is read-only or a file stands where a
            folder should be; the message names the path and what to do. The previous files are unchanged.
    """
    targets = [Path(os.path.abspath(t)) for t in writes]
    if not targets:
        return
    root = _save_root(targets)
    mode = 0o666 & ~_current_umask()
    journaled = len(targets) > 1 or bool(remove)
    with _folders_locked([root, *(t.parent for t in targets)]), contextlib.ExitStack() as stack:
        if journaled and os.path.lexists(root / JOURNAL_NAME):
            _replay(root / JOURNAL_NAME)  # a save killed between its renames: complete it before this one
        staged = []
        for target, write in zip(targets, writes.values()):
            with _saving(target):
                tmp = stack.enter_context(_temporary_sibling(target))
                write(tmp)
                os.chmod(tmp, mode)  # after the writer, which may have replaced the file (safetensors' save_file)
                _fsync(tmp)
            staged.append((tmp, target))
        journal = _write_journal(root, staged, remove) if journaled else None
        for tmp, target in staged:
            with _saving(target):
                os.replace(tmp, target)
        for path in remove:
            path.unlink(missing_ok=True)
        for folder in dict.fromkeys(t.parent for t in targets):
            _fsync_folder(folder)
        if journal is not None:
            journal.unlink()
            _fsync_folder(root)


def atomic_write(path: str | os.PathLike[str], write: Writer) -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it onto ``path`` atomically.

    If ``write`` raises (or the process is interrupted before the rename), ``path`` keeps its previous content and
    the temporary file is removed.

    Raises:
        SaveError: The disk is full, permission is denied... (see :func:`atomic_write_files`).
    """
    atomic_write_files({Path(path): write})


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temporaries(paths: Collection[str | os.PathLike[str]]) -> None:
    """Delete the temporary files a killed save of ``paths`` left behind (``.<name>.<random>.tmp`` beside each).

    It runs under the folders' save locks (see :func:`atomic_write_files`), so the temporary files of a save in
    progress in another process are never touched; a save killed between its renames is completed first.
    """
    targets = [Path(os.path.abspath(p)) for p in paths]
    folders = [p.parent for p in targets if p.parent.is_dir()]
    if not folders:
        return
    root = _save_root(targets)
    with _folders_locked([root, *folders]):
        if os.path.lexists(root / JOURNAL_NAME):
            _replay(root / JOURNAL_NAME)
        for path in targets:
            if not path.parent.is_dir():
                continue
            for stale in path.parent.glob(f"{_temporary_name_prefix(path)}*{_TMP_SUFFIX}"):
                stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- what a folder holds


def _class_name_in(path: Path) -> str | None:
    """The ``_class_name`` of a JSON config file; None when it is unreadable or has none."""
    try:
        with open_regular(path, what="config file", max_bytes=2**24) as f:  # bounded, like ddpm.config.read_json
            data = json.loads(f.read())
    except (DDPMError, OSError, UnicodeDecodeError, ValueError, RecursionError):
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
    with _saving(folder):
        folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------- reading pickles

#: The first bytes of a zip archive, ``torch.save``'s container since torch 1.6 (a pickle plus one entry per storage).
_ZIP_MAGIC = b"PK\x03\x04"
#: The pickles that open torch's legacy (non-zip) format: magic number, protocol, system info, then the object. The
#: storages' raw bytes follow; a plain ``pickle.dump`` file holds one pickle.
_LEGACY_PICKLES = 4
#: The opcodes that put a string on the stack (the operands of ``STACK_GLOBAL``).
_STRING_OPCODES = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})


def open_regular(
    path: str | os.PathLike[str],
    *,
    what: str,
    max_bytes: int | None = None,
    error: type[DDPMError] = WeightsError,
) -> BinaryIO:
    """Open a file the user controls for binary reading, refusing anything but a regular file of bounded size.

    The file is opened without blocking (``O_NONBLOCK``), so a FIFO, a terminal or a device named like a config or an
    image cannot hang the caller, and its type is checked on the open descriptor (no race between check and open).

    Args:
        path: The file.
        what: What the file is, for the messages (``"config file"``, ``"training image"``).
        max_bytes: Refuse a larger file (its size from ``fstat``); None for no limit.
        error: The :class:`~ddpm.errors.DDPMError` subclass to raise.

    Returns:
        The open file (blocking mode restored); close it, e.g. with ``with``.

    Raises:
        error: The file cannot be opened (missing, permission denied: the operating system's reason is quoted), is not
            a regular file (a folder, FIFO, socket or device), or is larger than ``max_bytes``.
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}{_read_remedy(exc, path)}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{what} {path} is {_file_kind(info.st_mode)}, not a regular file; replace it with the file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise error(
                f"{what} {path} is {info.st_size:,} bytes, more than the {max_bytes:,} a {what} may have; "
                "it is not a file ddpm wrote or can read"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_remedy(exc: OSError, path: Path) -> str:
    """What to do about a file that cannot be opened: for a permission error, ask for read access (the file is not
    damaged; never advise deleting it)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"; ask its owner to make it readable (chmod a+r {path})"
    return ""


def _file_kind(mode: int) -> str:
    """``"a folder"``, ``"a FIFO (named pipe)"``... for a ``st_mode`` that is not a regular file."""
    kinds = [
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def check_readable(path: Path, *, what: str) -> bytes:
    """Open ``path`` for reading and return its first four bytes (its magic number).

    Args:
        path: The file.
        what: What the file is, for the messages (``"weights file"``, ``"training checkpoint"``).

    Raises:
        WeightsError: The file cannot be opened or read (missing, permission denied: said as such, never as damage),
            is not a regular file (a FIFO, a folder...), or is empty.
    """
    try:
        with open_regular(path, what=what) as f:
            magic = f.read(4)
    except OSError as exc:
        raise WeightsError(f"cannot read {what} {path}: {exc.strerror or exc}{_read_remedy(exc, path)}") from exc
    if not magic:
        raise WeightsError(f"{what} {path} is empty (0 bytes); {_remedy(what)}")
    return magic


def damaged_file_error(path: Path, detail: str, *, what: str = "weights file") -> WeightsError:
    """The error for a file that was read but is not what it claims to be (truncated, corrupt)."""
    return WeightsError(f"{what} {path} is damaged ({detail}); {_remedy(what)}")


def _remedy(what: str) -> str:
    if what == "weights file":
        return "delete it and download it again"
    return "restore it from a copy, or start over without it"


def _scan_globals(path: Path) -> tuple[list[str], str | None]:
    """The Python objects (``module.name``) that the pickle stream(s) of a ``torch.save`` file would import, and why
    the scan stopped early (None when every stream was read to its end).

    The opcodes are read with :func:`pickletools.genops`, which parses and never executes: nothing in the file runs
    and nothing it names is imported. Read are the ``.pkl`` entries of the zip container, or the first pickles of the
    legacy format (a plain ``pickle.dump`` file is one pickle). Names are given as the unpickler resolves them (Python
    2 names mapped as ``pickle`` maps them); an object whose name is only known at run time (a ``STACK_GLOBAL`` with
    computed operands, a copyreg extension code) is listed by a description in angle brackets.
    """
    names: list[str] = []
    try:
        with open_regular(path, what="pickle") as f:
            is_zip = f.read(4) == _ZIP_MAGIC
            size = os.fstat(f.fileno()).st_size
            f.seek(0)
            for _ in range(0 if is_zip else _LEGACY_PICKLES):
                if f.tell() == size:
                    break
                names.extend(_globals_in_pickle(f))
        if is_zip:
            with zipfile.ZipFile(path) as archive:
                entries = [n for n in archive.namelist() if n.endswith(".pkl")]  # <archive>/data.pkl
                if not entries:
                    return names, "a zip archive without data.pkl, not a torch.save file"
                for entry in entries:
                    with archive.open(entry) as stream:  # streamed: never more than the declared size
                        names.extend(_globals_in_pickle(stream))
    except MemoryError:
        raise
    except Exception as exc:  # unknown opcodes, a stream cut short, a corrupt zip directory...
        return names, f"{type(exc).__name__}: {_first_line(str(exc))}"
    return names, None


def _globals_in_pickle(stream: IO[bytes]) -> Iterable[str]:
    """The globals one pickle names, reading ``stream`` up to and including its STOP opcode.

    ``STACK_GLOBAL`` takes its module and name from the stack. They are known here when the opcodes just before it
    only pushed (strings, or strings fetched from the memo), as ``pickle`` writes them; after anything else the
    object is reported as named at run time.
    """
    memo: dict[int, Any] = {}
    run: list[Any] = []  # the values pushed by the opcodes just before this one, when they only pushed one each
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):  # arg: "module name"
            module, _, attribute = str(arg).partition(" ")
            yield _resolve(module, attribute)
        elif name == "STACK_GLOBAL":
            operands = run[-2:]
            if len(operands) == 2 and all(isinstance(o, str) for o in operands):
                yield _resolve(operands[0], operands[1])
            else:
                yield "<an object named at run time (STACK_GLOBAL)>"
        elif name.startswith("EXT"):
            yield f"<copyreg extension {arg}>"
        if name in _STRING_OPCODES:
            run.append(arg)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            run.append(memo.get(arg) if isinstance(arg, int) else None)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):  # store the top of the stack, leave it there
            memo[arg if isinstance(arg, int) else len(memo)] = run[-1] if run else None
        else:
            run = []  # the top of the stack is no longer a string this scan knows


def _resolve(module: str, name: str) -> str:
    """``module.name`` as the unpickler imports it, mapping Python 2 names as ``pickle`` and torch do."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _allowed_globals() -> set[str]:
    """torch's ``weights_only`` allow-list: its own tensor rebuilders, dtypes and containers, plus the globals the user
    registered with ``torch.serialization.add_safe_globals``."""
    from torch import _weights_only_unpickler as unpickler  # the list torch.load(weights_only=True) enforces

    allowed = set(unpickler._get_allowed_globals())
    user = getattr(unpickler, "_get_user_allowed_globals", None)  # torch >= 2.4
    if user is not None:
        allowed.update(user())
    return allowed


#: The largest pickle stream (``data.pkl``) a ``torch.save`` file may declare: it holds the names and shapes of the
#: tensors, not their data (a few KB to a few MB); larger is a decompression bomb, refused before it is inflated.
MAX_PICKLE_BYTES = 2**30


def declared_zip_bytes(path: str | os.PathLike[str]) -> int | None:
    """The bytes the members of a zip file (``torch.save``'s container) inflate to, from its central directory
    (read without extracting anything); None when ``path`` is not a zip file.

    Raises:
        WeightsError: A member is a pickle larger than :data:`MAX_PICKLE_BYTES`, or the file is not a regular file.
    """
    with open_regular(path, what="pickle") as f:
        if f.read(4) != _ZIP_MAGIC:
            return None
        f.seek(0)
        try:
            infos = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            return None  # damaged: the scan that follows says how
    for info in infos:
        if info.filename.endswith(".pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise WeightsError(
                f"{path}: its pickle {info.filename} declares {info.file_size:,} bytes, more than the "
                f"{MAX_PICKLE_BYTES:,} a torch.save file's pickle can need (it holds the tensors' names, not their "
                "data); the file is damaged or a decompression bomb, and was refused unread"
            )
    return sum(info.file_size for info in infos)


def load_pickle(path: str | os.PathLike[str], *, what: str = "weights file") -> Any:
    """Read a ``torch.save`` file safely: scan the objects its pickle names, then ``torch.load(weights_only=True)``.

    Only tensors, numbers, strings and plain containers can come out. A pickle that names any other Python object
    (``os.system``, a class with ``__reduce__``...) is refused from its opcodes alone (a :mod:`pickletools` scan), so
    nothing in it runs and nothing it names is imported; ``torch.load(weights_only=True)`` then holds what is loaded
    to the same list.

    Args:
        path: The file (``.bin``, ``.pt``, ``.ckpt``...).
        what: What the file is, for the messages (``"weights file"``, ``"training checkpoint"``).

    Returns:
        The unpickled object, on the CPU.

    Raises:
        UnsafeCheckpointError: The pickle names objects outside torch's allow-list; the message names the first.
        ResourceLimitError: The sizes the file declares (a zip's members) exceed the memory available.
        WeightsError: The file cannot be read, is empty, truncated or otherwise not a readable ``torch.save`` file.
    """
    path = Path(path)
    is_zip = check_readable(path, what=what) == _ZIP_MAGIC
    declared = declared_zip_bytes(path) if is_zip else None
    from .memory import check_fits  # imports torch: only when a pickle is read

    check_fits(
        declared if declared is not None else path.stat().st_size,
        what=f"reading the {what} {path} (the sizes it declares)",
        lower="load it on a machine with more memory",
    )
    names, broken = _scan_globals(path)
    _refuse_unsafe(path, names)  # also when the stream broke after naming code
    if broken is not None:
        raise damaged_file_error(path, broken, what=what)

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing; our message explains
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except MemoryError:
        raise
    except Exception as exc:  # truncated storages, a corrupt zip entry, an opcode torch's unpickler does not take
        raise damaged_file_error(path, _torch_load_detail(exc), what=what) from exc


def _refuse_unsafe(path: Path, names: list[str]) -> None:
    allowed = _allowed_globals() if names else set()
    unsafe = [n for n in names if n not in allowed]
    if unsafe:
        raise UnsafeCheckpointError(
            f"{path} is a pickle that references Python objects other than tensors (it names {unsafe[0]}), so it was "
            "refused unread; nothing in it ran. Use a .safetensors file instead: ask its publisher for one, or, only "
            "if you trust the file's source, convert it in a separate, sandboxed step."
        )


def _torch_load_detail(exc: Exception) -> str:
    """The informative line of a ``torch.load`` failure, without torch's advice to retry with weights_only=False."""
    specific = [line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error:" in line]
    detail = specific[-1].replace("WeightsUnpickler error: ", "") if specific else _first_line(str(exc)).split(". ")[0]
    return f"{type(exc).__name__}: {detail}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"
