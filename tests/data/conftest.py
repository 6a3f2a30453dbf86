"""Data-test fixtures (the test plugins register when `helpers` is imported)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.data.helpers import write_shards


@pytest.fixture
def sharded(tmp_path: Path) -> Callable[..., Path]:
    """`sharded(rows, shards)`: a directory of `shards` parquet files holding ids 0..rows-1."""

    def make(rows: int = 600, shards: int = 4, null_b_every: int = 0) -> Path:
        return write_shards(
            tmp_path / f"ds-{rows}-{shards}-{null_b_every}", rows, shards, null_b_every
        )

    return make
