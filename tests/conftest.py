"""Test-wide environment: offline, Triton in its interpreter when there is no GPU."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="mmtrain-hf-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MMTRAIN_HOME", tempfile.mkdtemp(prefix="mmtrain-home-"))

try:
    import torch

    _has_cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _has_cuda = False
if not _has_cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER") and not _has_cuda:
    # One intra-op thread per xdist worker: two workers with two threads each on a 2-core
    # machine run several times slower than with one.
    torch.set_num_threads(1)


@pytest.fixture
def small_cpu_settings() -> Iterator[None]:
    """One thread (tiny tensors; faster on a busy machine) and float32 by default, whatever
    other test modules set at import."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
