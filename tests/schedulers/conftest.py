"""Scheduler tests: whole sampling loops on tiny tensors, side by side with diffusers' schedulers.

Every test runs on one intra-op thread (the tensors are a few hundred elements; see helpers.one_thread).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import one_thread


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    with one_thread():
        yield
