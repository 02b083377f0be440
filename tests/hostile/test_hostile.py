"""Hostile files and bad input (issue 5): clear errors, nothing executes, nothing is half-written.

Every case of ``bad_inputs.CASES`` runs here: it must raise the expected exception with a message that names the
file, key and value, and no payload may ever run. The rest of the module covers what a table cannot: safetensors
winning over a malicious ``.bin``, saves interrupted by an exception or by SIGKILL, and the overwrite guard.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import ddpm.io
from ddpm import (
    DDIMScheduler,
    DDPMError,
    DDPMPipeline,
    DDPMScheduler,
    OverwriteError,
    UNet2DModel,
    UnsafeCheckpointError,
    WeightsError,
)
from ddpm.io import load_pickle
from ddpm.models.loading import load_state_dict_file
from ddpm.pipelines import DiffusionPipeline

from bad_inputs import BIN, CASES, WEIGHTS, Case, build_template, expand, new_ctx, outcome, write_malicious_bin

SRC = Path(__file__).resolve().parents[2] / "src"
#: Areas where the input comes from a file; their errors must be ours (DDPMError subclasses).
FILE_AREAS = {
    "pickled weights carrying code", "damaged weights", "weights that do not fit the config", "UNet config.json",
    "scheduler_config.json", "model_index.json", "saving", "missing files", "training checkpoint (--resume)",
}  # fmt: skip
# Many tiny forwards: on a busy 2-core machine two intra-op threads make each ~50x slower.


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(tmp_path_factory.mktemp("hostile") / "template")


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(a(_x(), 10).sample, b(_x(), 10).sample)


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- the catalogue


class _Hung(BaseException):
    """Raised in a case that still runs after its time (a BaseException: no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def _fails_if_it_hangs(name: str, *, seconds: int) -> Iterator[None]:
    """Fail, instead of blocking CI forever, when the body is still running after ``seconds`` (a FIFO opened for
    reading waits for a writer): SIGALRM interrupts the blocked system call. A no-op where there is no SIGALRM."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def hung(signum: int, frame: object) -> None:
        raise _Hung(f"{name} still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_catalogue_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_loudly_with_a_message_that_says_what_and_where(
    case: Case, template: Path, tmp_path: Path
) -> None:
    ctx = new_ctx(template, tmp_path)
    with _fails_if_it_hangs(case.id, seconds=300):
        error, message = outcome(case, ctx)
    if case.error is None:  # the CLI: exit status 1, the message on stderr, no traceback
        assert message.startswith("exit status 1;"), message
        assert "Traceback" not in message
    else:
        assert error is case.error, f"{case.id}: expected {case.error.__name__}, got {error}: {message}"
        if case.area in FILE_AREAS:
            assert issubclass(error, DDPMError)
    for fragment in case.says:
        assert expand(fragment, ctx) in message, f"{case.id}: {fragment!r} not in {message!r}"
    assert len(message) < 2500, f"{case.id}: the message is {len(message)} characters long"
    assert not ctx.marker.exists(), f"{case.id}: the payload ran"


# ---------------------------------------------------------------------------------------------- pickles


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle", "pickle5"])
def test_malicious_pickle_is_refused_by_every_reader_and_its_payload_never_runs(how: str, tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.bin"
    write_malicious_bin(path, marker, how)
    for read in (load_state_dict_file, load_pickle, lambda p: load_pickle(p, what="training checkpoint")):
        with pytest.raises(UnsafeCheckpointError, match="nothing in it ran") as info:
            read(path)
        assert str(path) in str(info.value) and "safetensors" in str(info.value)
    assert not marker.exists()


def test_pickle_scan_names_what_it_cannot_resolve_and_sees_code_in_a_broken_stream(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    # protocol 4: push "posix", push "torch", POP, push "Tensor", STACK_GLOBAL (a stack the scan does not follow)
    path.write_bytes(b"\x80\x04\x8c\x05posix\x8c\x05torch0\x8c\x06Tensor\x93.")
    with pytest.raises(UnsafeCheckpointError, match="named at run time"):
        load_pickle(path)
    marker = tmp_path / "payload-ran"
    write_malicious_bin(path, marker, "pickle")
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"system") + 20])  # cut after the first global
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        load_pickle(path)
    assert not marker.exists()


def test_unreadable_files_are_reported_as_unreadable_not_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def denied(file: Any, *args: Any, **kwargs: Any) -> Any:  # every read of a user's file goes through os.open
        if Path(file).parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    for name in ("w.bin", "w.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"not empty")
        for read in (load_state_dict_file, load_pickle, lambda p: load_pickle(p, what="training checkpoint")):
            with pytest.raises(WeightsError, match="Permission denied") as info:
                read(path)
            assert str(info.value).startswith("cannot read ") and "damaged" not in str(info.value)


def test_use_safetensors_false_reads_the_malicious_bin_and_refuses_it(template: Path, tmp_path: Path) -> None:
    ctx = new_ctx(template, tmp_path)
    write_malicious_bin(ctx.repo / BIN, ctx.marker)  # beside the good safetensors file
    with pytest.raises(UnsafeCheckpointError):
        UNet2DModel.from_pretrained(ctx.repo, use_safetensors=False)
    assert not ctx.marker.exists()


def test_safetensors_wins_over_a_malicious_bin_beside_it(template: Path, tmp_path: Path) -> None:
    ctx = new_ctx(template, tmp_path)
    write_malicious_bin(ctx.repo / BIN, ctx.marker)
    reference = UNet2DModel.from_pretrained(template)
    assert _same_model(UNet2DModel.from_pretrained(ctx.repo), reference)
    for cls in (DDPMPipeline, DiffusionPipeline):
        assert _same_model(cls.from_pretrained(ctx.repo).unet, reference)
    assert not ctx.marker.exists()


@pytest.mark.parametrize("how", ["zip", "legacy"])
def test_plain_tensor_pickles_still_load(how: str, template: Path, tmp_path: Path) -> None:
    ctx = new_ctx(template, tmp_path)
    ctx.weights_as_bin(how)
    assert _same_model(UNet2DModel.from_pretrained(ctx.repo), UNet2DModel.from_pretrained(template))


@pytest.mark.parametrize("fmt", ["safetensors", "zip", "legacy"])
def test_randomly_corrupted_weights_files_give_only_our_errors(fmt: str, tmp_path: Path) -> None:
    """Seeded byte flips, cuts and insertions: each damaged file loads or raises a WeightsError (no crash, no other
    exception type, never a segfault)."""
    import random

    from safetensors.torch import save_file

    state = {"a.weight": torch.randn(4, 3), "b.bias": torch.arange(5.0), "c": torch.zeros(2, 2, dtype=torch.float16)}
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.bin")
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    original, rng, outcomes = path.read_bytes(), random.Random(0), set()
    for _ in range(60):
        data = bytearray(original)
        i = rng.randrange(len(data))
        how = rng.choice(["flip", "cut", "insert"])
        if how == "flip":
            data[i] = rng.randrange(256)
        elif how == "cut":
            del data[i:]
        else:
            data[i:i] = rng.randbytes(rng.randint(1, 8))
        path.write_bytes(bytes(data))
        try:
            load_state_dict_file(path)
            outcomes.add("loaded")
        except WeightsError as exc:
            assert str(path) in str(exc)
            outcomes.add(type(exc).__name__)
    assert "WeightsError" in outcomes


# ---------------------------------------------------------------------------------------------- interrupted saves


def _saved_model(template: Path, folder: Path) -> tuple[UNet2DModel, dict[str, bytes]]:
    """Save the template's UNet to ``folder``: (the model, the folder's files and their bytes)."""
    old = UNet2DModel.from_pretrained(template)
    old.save_pretrained(folder)
    return old, _listing(folder)


def _other_unet(template: Path) -> UNet2DModel:
    unet = UNet2DModel.from_pretrained(template)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.5)
    return unet


def test_save_killed_midway_by_a_failing_weights_writer_keeps_the_previous_model(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """safetensors writes half the file, then the disk fills up: the old files stay, no temporary file is left."""
    import safetensors.torch

    folder = tmp_path / "model"
    old, before = _saved_model(template, folder)
    real_save_file = safetensors.torch.save_file

    def half_then_fail(tensors: dict[str, torch.Tensor], filename: str, metadata: Any = None) -> None:
        real_save_file(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _other_unet(template).save_pretrained(folder)
    assert _listing(folder) == before  # byte for byte, and no temporary files
    assert _same_model(UNet2DModel.from_pretrained(folder), old)


def test_unet_save_is_all_or_nothing_when_the_config_write_is_interrupted(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while writing config.json, after the new weights were written: the old weights stay too."""
    folder = tmp_path / "model"
    old, before = _saved_model(template, folder)
    new = _other_unet(template)

    def interrupted(self: Any) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(type(new.config), "to_json_string", interrupted)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(folder)
    assert _listing(folder) == before
    monkeypatch.undo()
    assert _same_model(UNet2DModel.from_pretrained(folder), old)


@pytest.mark.parametrize("fail_at", [0, 1, 2, 3])
def test_pipeline_save_failing_at_any_file_keeps_the_previous_pipeline(
    fail_at: int, template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pipe"
    old = DDPMPipeline.from_pretrained(template)
    old.save_pretrained(folder)
    before = _listing(folder)
    new = DDPMPipeline(unet=_other_unet(template), scheduler=DDIMScheduler.from_config(old.scheduler.config))
    calls = []
    real_fsync = ddpm.io._fsync

    def fsync_or_fail(path: Path) -> None:  # called once per staged file, after its writer finished
        calls.append(path)
        if len(calls) > fail_at:
            raise OSError(5, "Input/output error")
        real_fsync(path)

    monkeypatch.setattr(ddpm.io, "_fsync", fsync_or_fail)
    with pytest.raises(OSError, match="Input/output error"):
        new.save_pretrained(folder)
    assert len(calls) == fail_at + 1
    assert _listing(folder) == before
    monkeypatch.undo()
    loaded = DiffusionPipeline.from_pretrained(folder)
    assert isinstance(loaded.scheduler, DDPMScheduler) and _same_model(loaded.unet, old.unet)
    new.save_pretrained(folder)  # and a save that is not interrupted replaces everything
    loaded = DiffusionPipeline.from_pretrained(folder)
    assert isinstance(loaded.scheduler, DDIMScheduler) and _same_model(loaded.unet, new.unet)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import safetensors.torch, torch
    from ddpm import UNet2DModel

    folder = Path(sys.argv[1])
    unet = UNet2DModel.from_pretrained(folder)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.5)
    real = safetensors.torch.save_file

    def killed(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 3])
        os.kill(os.getpid(), signal.SIGKILL)  # the power goes out halfway through the weights

    safetensors.torch.save_file = killed
    unet.save_pretrained(folder)
    """
)


def test_save_killed_by_sigkill_keeps_the_previous_model_and_the_next_save_cleans_up(
    template: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "model"
    old, before = _saved_model(template, folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", _KILL_SCRIPT, str(folder)]
    result = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    after = _listing(folder)
    stale = sorted(set(after) - set(before))
    assert {k: after[k] for k in before} == before  # the real files are untouched
    assert len(stale) == 1 and stale[0].startswith(f".{WEIGHTS}.") and stale[0].endswith(".tmp")  # hidden, ignored
    assert _same_model(UNet2DModel.from_pretrained(folder), old)
    old.save_pretrained(folder)
    assert sorted(_listing(folder)) == sorted(before)  # the next save removed the stale temporary file


# ---------------------------------------------------------------------------------------------- the overwrite guard


def test_saving_over_the_same_kind_of_model_is_quiet(template: Path, tmp_path: Path) -> None:
    pipe = DDPMPipeline.from_pretrained(template)
    unet = pipe.unet
    assert isinstance(unet, UNet2DModel)
    unet_folder, pipe_folder, sched_folder = tmp_path / "unet", tmp_path / "pipe", tmp_path / "sched"
    for _ in range(2):
        unet.save_pretrained(unet_folder)
        pipe.save_pretrained(pipe_folder)
        pipe.scheduler.save_pretrained(sched_folder)
    DDIMScheduler.from_config(pipe.scheduler.config).save_pretrained(sched_folder)  # any scheduler over any
    diffusers_config = {**unet.config.to_dict(), "_diffusers_version": "0.42.1"}  # as diffusers writes it
    (unet_folder / "config.json").write_text(json.dumps(diffusers_config))
    unet.save_pretrained(unet_folder)


def test_overwrite_true_replaces_another_kind_of_model(template: Path, tmp_path: Path) -> None:
    pipe = DDPMPipeline.from_pretrained(template)
    unet = pipe.unet
    assert isinstance(unet, UNet2DModel)
    folder = tmp_path / "target"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(OverwriteError):
        unet.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    unet.save_pretrained(folder, overwrite=True)
    assert _same_model(UNet2DModel.from_pretrained(folder), unet)
    with pytest.raises(OverwriteError):
        pipe.save_pretrained(folder)  # now a bare UNet folder
    pipe.save_pretrained(folder, overwrite=True)
    assert isinstance(DiffusionPipeline.from_pretrained(folder), DDPMPipeline)
    with pytest.raises(OverwriteError):
        pipe.scheduler.save_pretrained(folder)  # now a pipeline folder
    pipe.scheduler.save_pretrained(folder, overwrite=True)


def test_overwrite_error_is_a_file_exists_error_and_a_ddpm_error() -> None:
    assert issubclass(OverwriteError, FileExistsError) and issubclass(OverwriteError, DDPMError)
