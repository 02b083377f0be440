"""Trainer tests: a few steps of tiny models on 8x8 images, on one intra-op thread (see helpers.one_thread)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import one_thread


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    with one_thread():
        yield
