"""The README's commands work as written: run in order, verbatim, in a fresh folder, each one succeeds (issue 14.1).

What runs: every line of the ``bash`` blocks of the README's "Install and run" section, in order, each with
``bash -c`` in one fresh temporary folder, as a newcomer pastes them. ``ddpm`` is the console script of the
environment running the tests (its folder first on PATH), importing this tree (``src`` first on PYTHONPATH).

- ``pip install ...`` is not run (the environment is installed already): the part before ``&&`` must be one of
  :data:`INSTALL_LINES`, whose module must import; the rest of the line runs.
- A line marked ``# needs the Hub`` is not run (the network is blocked here): it must name a google/ddpm-* model.
- The network is blocked (HF_HUB_OFFLINE unset, an empty HF cache, the Hub endpoint a closed local port), so a line
  that needs the Hub without saying so fails.

The other sections' blocks (training for minutes, ``mkdocs serve``, the test suite itself) are not run.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import torch

import ddpm.fast
from ddpm.cli import build_parser
from ddpm.commands._common import resolve_model
from ddpm.commands._sampling import resolve_precision
from ddpm.commands.sample import _settings, default_out

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SECTION = "## Install and run"
HUB_MARK = "# needs the Hub"
#: The install commands the README may give, and a module each one makes importable.
INSTALL_LINES = {
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu": "torch",
    "pip install -e .": "ddpm",
    'pip install -e ".[train]"': "mlxtend",
}
#: One command's bound: the first sample (16 digits, 10 steps) takes about ten seconds on a busy 2-core CPU.
COMMAND_TIMEOUT_S = 300


def readme_commands(text: str) -> list[str]:
    """The command lines of the ``bash`` blocks of the "Install and run" section, in order."""
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end >= 0 else len(text)]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.M | re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


def _split_install(line: str) -> tuple[str | None, str]:
    """(the ``pip install`` part, or None; the rest of the line to run, without its comment)."""
    if not line.startswith("pip install"):
        return None, line
    install, _, rest = line.partition(" && ")
    if not rest:
        install = install.split("  #")[0]
    return install.strip(), rest.strip()


def test_the_readme_flow_is_what_the_test_runs() -> None:
    """The section starts with the install-and-run line and bare ``ddpm sample`` follows; installs are the
    documented ones; Hub lines are marked."""
    commands = readme_commands(README.read_text())
    installs = [_split_install(c)[0] for c in commands]
    assert [c for c in installs if c is not None] and all(c in INSTALL_LINES for c in installs if c is not None)
    first_run = next(i for i, c in enumerate(commands) if _split_install(c)[1])
    assert installs[first_run] == "pip install -e ." and "ddpm sample" in commands[first_run]
    cpu_torch = next(c for c in INSTALL_LINES if "download.pytorch.org/whl/cpu" in c)
    assert installs.index(cpu_torch) < first_run, "the CPU build of torch is installed first, in one line"
    assert commands[first_run + 1].split("#")[0].strip() == "ddpm sample"
    for command in commands:
        uses_hub = "google/" in command.split("#")[0]
        assert uses_hub == (HUB_MARK in command), f"a Hub model without {HUB_MARK!r} or the mark without one: {command}"


@pytest.mark.slow
def test_the_readme_commands_run_in_order_in_a_fresh_folder(tmp_path: Path, blocked_network_env: dict[str, str]):
    """Every command of the section, verbatim, the second ``ddpm sample`` included; then what they promise."""
    for command in readme_commands(README.read_text()):
        if HUB_MARK in command:
            continue
        install, rest = _split_install(command)
        if install is not None:
            assert install in INSTALL_LINES, install
            assert importlib.util.find_spec(INSTALL_LINES[install]) is not None, f"{install} is not installed here"
        if not rest:
            continue
        result = subprocess.run(
            ["bash", "-c", rest],
            cwd=tmp_path,
            env=blocked_network_env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        assert result.returncode == 0, f"$ {rest}\n{result.stdout}{result.stderr}"
    # What the README says the commands made, in the folders it names for this machine's CPU.
    suffix = "" if torch.cuda.is_available() or not ddpm.fast.cpu_supports_bf16() else "-bf16-fast"
    assert (tmp_path / "grid.png").is_file()
    assert len(list((tmp_path / "samples" / f"ddpm-mnist-dpm++3m-10{suffix}").glob("*.png"))) == 16
    assert len(list((tmp_path / "samples" / f"ddpm-mnist-pndm-50{suffix}").glob("*.png"))) == 4


@pytest.mark.parametrize("native_bf16", [False, True])
def test_the_folders_the_readme_names_are_those_ddpm_sample_writes_on_either_cpu(monkeypatch, native_bf16: bool):
    """The default folder depends on the CPU (``-bf16-fast`` where bf16 is native, and the default): the README says
    so, and its ``ddpm evaluate`` line finds the first command's folder on either kind of CPU (CI's has no bf16)."""
    monkeypatch.setattr(ddpm.fast, "cpu_supports_bf16", lambda: native_bf16)
    text = README.read_text()
    commands = readme_commands(text)
    first = next(c for c in commands if _split_install(c)[1]).split(" && ", 1)[1]
    args = build_parser().parse_args(first.split("#")[0].split()[1:])  # without "ddpm"
    precision = resolve_precision(args, torch.device("cpu"), None)
    args.fast = precision.fast
    folder = default_out(_settings(args, resolve_model(args.model), precision.dtype))
    assert (precision.dtype == "bf16") == native_bf16
    evaluate = next(c for c in commands if "ddpm evaluate" in c)
    pattern = evaluate.split("ddpm evaluate", 1)[1].split("#")[0].split()[0]
    assert fnmatch.fnmatchcase(str(folder), pattern), (folder, pattern)
    assert f"`{folder}/`" in text  # the prose names it
