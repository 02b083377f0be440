"""Evaluation and bundled-model tests: small classifiers and 28x28 digits, on one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import one_thread


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    with one_thread():
        yield
