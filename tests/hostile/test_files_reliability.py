"""Issue 13, the file layer: sizes refused before allocating, special files, file modes, non-finite and non-float
weights, disk faults while saving, a save killed between its renames, and concurrent saves to one folder.

Faults that cannot be made for real here (a full disk, a file another user cannot read: the tests run as root) are
injected by monkeypatching the function that meets them; each test's docstring says which.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import ddpm.io
from ddpm import ConfigError, DDPMError, ResourceLimitError, SaveError, WeightsError
from ddpm.config import read_json
from ddpm.io import JOURNAL_NAME, atomic_write_files, load_pickle
from ddpm.models import UNet2DConfig, UNet2DModel
from ddpm.pipelines import DDPMPipeline
from ddpm.schedulers import DDPMScheduler

from helpers import TINY_UNET_CONFIG

SRC = Path(__file__).resolve().parents[2] / "src"
TESTS = Path(__file__).resolve().parents[1]


def _tiny(seed: int = 0, **changes: object) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel.from_config({**TINY_UNET_CONFIG, **changes})


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A tiny UNet saved in safetensors."""
    folder = tmp_path / "unet"
    _tiny().save_pretrained(folder)
    return folder


def _weights(folder: Path) -> Path:
    return folder / "diffusion_pytorch_model.safetensors"


def _python(code: str, *, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this tree's ddpm; a hang fails the test after ``timeout`` s."""
    full_env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


# ---------------------------------------------------------------------------------------------- 13.1 sizes


def test_sample_size_beyond_the_maximum_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"config key 'sample_size' has value 8192; expected .* at most 4096"):
        UNet2DConfig.from_dict({**TINY_UNET_CONFIG, "sample_size": 8192})
    UNet2DConfig.from_dict({**TINY_UNET_CONFIG, "sample_size": 1024})  # NCSN++ FFHQ's size stays valid


def test_building_a_model_beyond_the_memory_limit_is_refused_before_allocating(
    monkeypatch: pytest.MonkeyPatch, saved: Path
) -> None:
    monkeypatch.setenv("DDPM_MEMORY_LIMIT", "64KiB")
    with pytest.raises(ResourceLimitError, match=r"building a UNet2DModel with [\d,]+ parameters in float32 needs"):
        _tiny()
    with pytest.raises(ResourceLimitError, match=r"smaller config"):
        UNet2DModel.from_pretrained(saved)


def _safetensors_declaring(path: Path, tensors: dict[str, tuple[str, list[int]]], *, sparse_size: int) -> None:
    """A safetensors file whose header declares ``tensors`` (name -> (dtype, shape)), made sparse: its data are holes
    (no disk used)."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = {"F32": 4, "F16": 2}[dtype] * int(torch.tensor(shape).prod())
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + max(offset, sparse_size))


def test_a_huge_sparse_safetensors_file_is_refused_from_its_header(saved: Path) -> None:
    """18 GB declared for a model of a few hundred KB: refused unread (the file is sparse: no disk is used)."""
    _safetensors_declaring(_weights(saved), {"conv_in.weight": ("F32", [18 * 2**30 // 4])}, sparse_size=0)
    started = time.monotonic()
    with pytest.raises(WeightsError, match=r"declares 18 GiB of tensors, far more than the [\d,]+ parameters"):
        UNet2DModel.from_pretrained(saved)
    assert time.monotonic() - started < 10


def test_weights_that_fit_the_config_but_not_the_memory_are_refused(
    monkeypatch: pytest.MonkeyPatch, saved: Path
) -> None:
    model_bytes = sum(v.numel() * 4 for v in _tiny().state_dict().values())
    monkeypatch.setenv("DDPM_MEMORY_LIMIT", str(model_bytes + 1000))  # the model fits; model + file does not
    _safetensors_declaring(_weights(saved), {"conv_in.weight": ("F32", [2 * model_bytes // 4])}, sparse_size=0)
    with pytest.raises(ResourceLimitError, match=r"reading the weights .*diffusion_pytorch_model.safetensors needs"):
        UNet2DModel.from_pretrained(saved)


def test_the_memory_check_counts_the_file_and_the_parameters_it_is_copied_into(
    monkeypatch: pytest.MonkeyPatch, saved: Path
) -> None:
    """Loading holds the file's tensors and the parameters they are copied into at once: a model that fits, with a
    file that fits, is refused when both together do not (a 15 GiB model on 21 GiB used to be read, then swapped)."""
    model_bytes = sum(v.numel() * 4 for v in _tiny().state_dict().values())
    monkeypatch.setenv("DDPM_MEMORY_LIMIT", str(model_bytes * 3 // 2))
    says = r"reading the weights .*safetensors needs about .*; the file's .* of tensors and the .* of parameters they"
    with pytest.raises(ResourceLimitError, match=says + " are copied into are in memory at once"):
        UNet2DModel.from_pretrained(saved)
    monkeypatch.setenv("DDPM_MEMORY_LIMIT", str(model_bytes * 5 // 2))
    UNet2DModel.from_pretrained(saved)


def test_a_bin_whose_zip_members_inflate_beyond_the_limit_is_refused_unread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 64 KB .bin whose deflated member declares 64 MiB: the central directory is read, nothing is inflated."""
    path = tmp_path / "bomb.bin"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", bytes(64 * 2**20))
    assert path.stat().st_size < 2**20
    monkeypatch.setenv("DDPM_MEMORY_LIMIT", "16MiB")
    with pytest.raises(ResourceLimitError, match=r"reading the weights file .*bomb.bin \(the sizes it declares\)"):
        load_pickle(path)


def test_a_bin_whose_pickle_declares_more_than_a_pickle_needs_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "bomb.bin"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", bytes(4096))
    monkeypatch.setattr(ddpm.io, "MAX_PICKLE_BYTES", 1024)
    with pytest.raises(WeightsError, match=r"its pickle archive/data.pkl declares 4,096 bytes, more than the 1,024"):
        load_pickle(path)


# ---------------------------------------------------------------------------------------------- 13.2 special files


def _within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a daemon thread; the exception it raised, or fail the test when it is still running after
    ``seconds`` (a hang fails the test instead of blocking CI)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    return outcome[0]


@pytest.mark.parametrize("name", ["config.json", "diffusion_pytorch_model.safetensors"])
def test_a_fifo_in_a_model_folder_fails_fast(saved: Path, name: str) -> None:
    """A FIFO named like a model file: a clear error within seconds, never a wait for a writer."""
    (saved / name).unlink()
    os.mkfifo(saved / name)
    error = _within(30, lambda: UNet2DModel.from_pretrained(saved))
    # ddpm.hub counts anything but a folder as present, so the reader names the FIFO instead of calling it missing.
    assert isinstance(error, DDPMError), error
    assert f"{saved / name} is a FIFO (named pipe), not a regular file" in str(error), error


def test_a_fifo_read_directly_is_named_a_fifo(tmp_path: Path) -> None:
    from ddpm.models.loading import load_state_dict_file

    for name in ("w.safetensors", "w.bin"):
        os.mkfifo(tmp_path / name)
        error = _within(30, lambda: load_state_dict_file(tmp_path / name))  # noqa: B023 - called at once
        assert isinstance(error, WeightsError), error
        assert f"weights file {tmp_path / name} is a FIFO (named pipe), not a regular file" in str(error)


def test_read_json_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "model_index.json")
    error = _within(30, lambda: read_json(tmp_path / "model_index.json"))
    assert isinstance(error, ConfigError) and "model_index.json is a FIFO (named pipe)" in str(error), error


# ---------------------------------------------------------------------------------------------- 13.3 modes, permissions


def test_saved_files_get_the_mode_an_ordinary_open_gives(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        pipe = DDPMPipeline(unet=_tiny(), scheduler=DDPMScheduler())
        pipe.save_pretrained(tmp_path / "pipe")
        _tiny().save_pretrained(tmp_path / "bin", safe_serialization=False)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 6
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}


def _deny_reading(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real_open = os.open

    def fake_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).endswith(name):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", fake_open)


@pytest.mark.parametrize("name", ["diffusion_pytorch_model.safetensors", "config.json"])
def test_a_file_we_may_not_read_is_a_permission_error_not_damage(
    monkeypatch: pytest.MonkeyPatch, saved: Path, name: str
) -> None:
    """Simulated: os.open raises EACCES for the file (as root, chmod 000 does not stop reading)."""
    _deny_reading(monkeypatch, name)
    with pytest.raises(DDPMError) as caught:
        UNet2DModel.from_pretrained(saved)
    message = str(caught.value)
    assert "cannot read" in message and "Permission denied" in message
    assert f"ask its owner to make it readable (chmod a+r {saved / name})" in message
    assert "damaged" not in message and "download it again" not in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_a_file_another_user_cannot_read_for_real(saved: Path) -> None:
    _weights(saved).chmod(0)
    with pytest.raises(WeightsError, match=r"Permission denied; ask its owner to make it readable"):
        UNet2DModel.from_pretrained(saved)


@pytest.mark.skipif(
    not hasattr(os, "seteuid") or not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="switching to another user needs root (as another user, test_a_file_another_user_cannot_read_for_real runs)",
)
def test_another_user_loads_what_we_saved_and_is_told_permission_not_damage() -> None:
    """For real, as root: save with the usual umask, then load as the user 'nobody' (effective uid switched in this
    process). The saved pipeline loads (the weights file was 0600 under safetensors 0.8); made 0600 by hand, the
    weights file is a permission error, never 'damaged'."""
    import tempfile

    import safetensors.torch  # noqa: F401 - imported as root: 'nobody' may not read the interpreter's site-packages

    nobody = 65534
    old = os.umask(0o022)
    root = Path(tempfile.mkdtemp())
    try:
        root.chmod(0o755)  # pytest's tmp_path is 0700: 'nobody' could not even reach the folder
        DDPMPipeline(unet=_tiny(), scheduler=DDPMScheduler()).save_pretrained(root / "pipe")

        def as_nobody(call: Callable[[], object]) -> object:
            os.setegid(nobody)
            os.seteuid(nobody)
            try:
                return call()
            finally:
                os.seteuid(0)
                os.setegid(0)

        assert isinstance(as_nobody(lambda: DDPMPipeline.from_pretrained(root / "pipe")), DDPMPipeline)
        weights = root / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
        weights.chmod(0o600)
        with pytest.raises(WeightsError) as caught:
            as_nobody(lambda: DDPMPipeline.from_pretrained(root / "pipe"))
        message = str(caught.value)
        assert f"cannot read weights file {weights}: Permission denied; ask its owner to make it readable" in message
        assert "damaged" not in message and "download it again" not in message
    finally:
        os.umask(old)
        shutil.rmtree(root)


# ---------------------------------------------------------------------------------------------- 13.4 non-finite


def test_a_nan_weight_is_named_at_load(saved: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(_weights(saved))
    state["conv_in.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, _weights(saved))
    numel = state["conv_in.weight"].numel()
    says = rf"has 1 tensor\(s\) with NaN or infinite values: conv_in.weight \(1 of {numel:,} values\); the file is"
    with pytest.raises(WeightsError, match=says + " damaged or was saved from a diverged training run"):
        UNet2DModel.from_pretrained(saved)


def test_a_weight_beyond_float16_is_named_when_loading_in_float16(saved: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(_weights(saved))
    state["conv_out.bias"][0] = 1e6
    save_file(state, _weights(saved))
    UNet2DModel.from_pretrained(saved)  # float32: fine
    says = r"1 tensor\(s\) do not fit in float16 \(largest finite value 65504\) .*conv_out.bias \(largest magnitude"
    with pytest.raises(WeightsError, match=says + r" 1e\+06\); load the model in bfloat16 or float32"):
        UNet2DModel.from_pretrained(saved, torch_dtype=torch.float16)
    assert UNet2DModel.from_pretrained(saved, torch_dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_float_tensors_where_the_model_has_float_ones_are_refused(saved: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(_weights(saved))
    state["conv_in.bias"] = torch.zeros_like(state["conv_in.bias"], dtype=dtype)
    save_file(state, _weights(saved))
    name = str(dtype).replace("torch.", "")
    with pytest.raises(WeightsError, match=rf"1 tensor\(s\) of a non-floating-point dtype .*conv_in.bias \({name}\)"):
        UNet2DModel.from_pretrained(saved)


# ---------------------------------------------------------------------------------------------- 13.9 JSON numbers


def test_a_5001_digit_integer_names_the_file_and_key(saved: Path) -> None:
    text = (saved / "config.json").read_text().replace('"sample_size": 16', '"sample_size": ' + "9" * 5001)
    (saved / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=r"config.json: config key 'sample_size' holds an integer too long to read"):
        UNet2DModel.from_pretrained(saved)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"sample_size": 16, "sample_size": 32}')
    with pytest.raises(ConfigError, match=r"c.json: the key 'sample_size' appears twice in one object"):
        read_json(tmp_path / "c.json")


# ---------------------------------------------------------------------------------------------- 13.5 disk faults


def _fail_with(exc: BaseException) -> object:
    def fail(*args: object, **kwargs: object) -> None:
        raise exc

    return fail


@pytest.mark.parametrize(
    ("safe", "exc", "says"),
    [
        (True, OSError(errno.ENOSPC, "No space left on device"), "is full"),
        (
            False,
            RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"),
            "writing it failed",
        ),
        (False, RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"), "it failed"),
    ],
)
def test_disk_full_while_saving_is_a_save_error_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, saved: Path, safe: bool, exc: BaseException, says: str
) -> None:
    """Injected: the weights writer (safetensors' save_file, torch.save) raises as it does on a full disk."""
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch if safe else torch, "save_file" if safe else "save", _fail_with(exc))
    with pytest.raises(SaveError) as caught:
        _tiny(seed=1).save_pretrained(saved, safe_serialization=safe)
    message = str(caught.value)
    assert f"cannot save {saved.resolve()}/diffusion_pytorch_model." in message
    assert says in message and "free" in message and "the previous files are unchanged" in message
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before  # no temporaries, nothing changed


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.EACCES, "permission denied; save to a folder you may write to"),
        (errno.EROFS, "is on a read-only file system; save to another folder"),
    ],
)
def test_permission_denied_and_read_only_while_saving(
    monkeypatch: pytest.MonkeyPatch, saved: Path, code: int, says: str
) -> None:
    """Injected: os.replace raises as on a folder we may not write to / a read-only file system."""
    monkeypatch.setattr(os, "replace", _fail_with(OSError(code, os.strerror(code))))
    with pytest.raises(SaveError, match=says):
        _tiny().save_pretrained(saved)


def test_a_file_where_a_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SaveError, match=r"a file stands where a folder is needed on that path"):
        _tiny().save_pretrained(tmp_path / "file" / "model")
    with pytest.raises(SaveError, match=r"a file stands where a folder is needed"):
        atomic_write_files({tmp_path / "file" / "x.json": lambda tmp: tmp.write_text("{}")})


# ---------------------------------------------------------------------------------------------- 13.5 kill mid-save


def _pipeline_state(folder: Path) -> tuple[int, float]:
    pipe = DDPMPipeline.from_pretrained(folder)
    return pipe.unet.config.layers_per_block, float(pipe.unet.conv_in.state_dict()["bias"][0])


def test_a_save_killed_between_its_renames_is_completed_by_the_next_load(tmp_path: Path) -> None:
    """The new version has another config (layers_per_block 2) and other weights; the save is killed right after its
    first rename (os.replace patched to os._exit), which used to leave new weights beside an old config."""
    folder = tmp_path / "pipe"
    DDPMPipeline(unet=_tiny(seed=0), scheduler=DDPMScheduler()).save_pretrained(folder)
    old = _pipeline_state(folder)
    result = _python(
        f"""
        import os, torch
        from ddpm.models import UNet2DModel
        from ddpm.pipelines import DDPMPipeline
        from ddpm.schedulers import DDPMScheduler
        from helpers import TINY_UNET_CONFIG
        torch.manual_seed(1)
        pipe = DDPMPipeline(unet=UNet2DModel.from_config({{**TINY_UNET_CONFIG, "layers_per_block": 2}}),
                            scheduler=DDPMScheduler())
        print("new", pipe.unet.config.layers_per_block, float(pipe.unet.conv_in.bias[0]), flush=True)
        real = os.replace
        def replace_then_die(src, dst):
            real(src, dst)
            if not str(dst).endswith(".json"):
                os._exit(9)
        os.replace = replace_then_die
        pipe.save_pretrained({str(folder)!r})
        """
    )
    assert result.returncode == 9, result.stderr
    new = result.stdout.split()
    assert (folder / JOURNAL_NAME).exists()
    state = _pipeline_state(folder)
    assert state == (int(new[1]), pytest.approx(float(new[2])))
    assert state != old
    assert not (folder / JOURNAL_NAME).exists()
    assert not list(folder.rglob("*.tmp"))


def test_a_damaged_journal_is_refused_clearly(saved: Path) -> None:
    (saved / JOURNAL_NAME).write_text('{"renames": [["../../etc/x", "config.json"]], "remove": []}')
    with pytest.raises(SaveError, match=r"holds an unfinished save whose journal .* is damaged"):
        UNet2DModel.from_pretrained(saved)


# ---------------------------------------------------------------------------------------------- 13.5 concurrent saves


@pytest.mark.slow  # three interpreters importing torch: 10 to 35 s on a busy 2-core machine
def test_concurrent_saves_to_one_folder_all_succeed(tmp_path: Path) -> None:
    """Three processes each save their own pipeline five times into one folder: every save succeeds (they used to
    delete each other's temporary files), and the folder then holds one process's complete save."""
    folder = tmp_path / "pipe"
    code = """
        import sys, torch
        from ddpm.models import UNet2DModel
        from ddpm.pipelines import DDPMPipeline
        from ddpm.schedulers import DDPMScheduler
        from helpers import TINY_UNET_CONFIG
        seed = int(sys.argv[1])
        torch.manual_seed(seed)
        layers = 1 + seed % 2
        pipe = DDPMPipeline(unet=UNet2DModel.from_config({**TINY_UNET_CONFIG, "layers_per_block": layers}),
                            scheduler=DDPMScheduler())
        for _ in range(5):
            pipe.save_pretrained(sys.argv[2])
        print(layers, float(pipe.unet.conv_in.bias[0]))
    """
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), str(seed), str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in range(3)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outputs]
    saves = [(int(out.split()[0]), pytest.approx(float(out.split()[1]))) for out, _ in outputs]
    layers, bias = _pipeline_state(folder)
    assert any(layers == a and bias == b for a, b in saves)
    assert not list(folder.rglob("*.tmp")) and not (folder / JOURNAL_NAME).exists()


@pytest.fixture(autouse=True)
def _no_memory_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DDPM_MEMORY_LIMIT", raising=False)
    yield
