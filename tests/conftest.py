"""Test setup: every test runs offline against a temporary Hugging Face cache.

huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE when it is first imported, so they are set here, before
anything imports it (diffusers included).
"""

from __future__ import annotations

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="ddpm-hf-cache-")
os.environ["HF_HUB_CACHE"] = _CACHE
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def hf_cache() -> str:
    """The temporary HF cache folder every test shares (HF_HUB_CACHE)."""
    return _CACHE
