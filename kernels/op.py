"""The record of one kernel op: its plain-PyTorch reference and its fused implementation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class KernelOp:
    """An op with its plain-PyTorch reference and optional fused implementation.

    `supports(*args)` says whether the fused implementation handles these arguments (e.g.
    set sizes up to its tile limit); `auto` uses the reference where it says no, so `auto`
    never fails on shapes that only the reference handles.
    """

    name: str
    reference: Callable[..., Any]
    triton: Callable[..., Any] | None = None
    triton_unavailable_reason: str = ""
    supports: Callable[..., bool] | None = None
