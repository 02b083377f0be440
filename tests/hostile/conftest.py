"""Hostile files and bad input (the catalogue in bad_inputs.py): tiny models, on one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import one_thread


@pytest.fixture(autouse=True)
def _one_intra_op_thread() -> Iterator[None]:
    with one_thread():
        yield
