"""Shared fixtures for the kernel tests: Triton is optional, the backend is set explicitly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mmtrain import ops


@pytest.fixture
def triton_backend() -> Iterator[None]:
    """Run the test with the Triton backend selected explicitly (`auto` uses the reference
    on CPU), and restore the process-wide choice afterwards."""
    pytest.importorskip("triton")
    ops.set_backend("triton")
    try:
        yield
    finally:
        ops.set_backend(None)
