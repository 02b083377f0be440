"""Project tests: the docs build, the examples run, the benchmarks start, the README's commands work."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def blocked_network_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a newcomer's shell on a machine without network, for subprocesses.

    ``ddpm`` is this tree's (``src`` first on PYTHONPATH) and this environment's console scripts (``ddpm``,
    ``python``) come first on PATH. HF_HUB_OFFLINE is unset, the Hugging Face cache is empty and the Hub endpoint is
    a local port nothing listens on, so anything that needs the Hub fails at once instead of passing because the
    tests' offline switch is on. One CPU thread per process: on a shared 2-core machine two threads per process
    make sampling several times slower.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        HF_HUB_CACHE=str(tmp_path_factory.mktemp("empty-hf-cache")),
        HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
        OMP_NUM_THREADS="1",
    )
    return env
