"""Dispatch for fused ops: one call site in the model, several implementations behind it.

Each op is registered in `registry.OPS` as a `KernelOp` by `mmtrain.kernels`. The backend is
chosen by `set_backend()` (the config option) or the `MMTRAIN_KERNELS` environment variable:
`torch` (the PyTorch reference), `triton`, or `auto` (Triton on CUDA tensors when it is
installed, the reference otherwise). An explicitly requested backend that cannot run raises;
`auto` never does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from mmtrain.errors import ConfigError
from mmtrain.kernels.op import KernelOp
from mmtrain.registry import OPS

BACKENDS = ("torch", "triton", "auto")
_backend_override: str | None = None


def set_backend(backend: str | None) -> None:
    """Select the kernel backend for this process (`None` returns to the environment)."""
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(
            f"unknown kernel backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    global _backend_override
    _backend_override = backend


def current_backend() -> str:
    backend = _backend_override or os.environ.get("MMTRAIN_KERNELS", "auto")
    if backend not in BACKENDS:
        raise ConfigError(
            f"MMTRAIN_KERNELS={backend!r} is not a backend; choose one of {', '.join(BACKENDS)}"
        )
    return backend


def _lookup(name: str) -> KernelOp:
    """The registered op. Inside a `torch.compile` trace the registry is read without loading
    it (its first load takes a lock and imports modules, which Dynamo cannot trace); the
    built-in ops are registered when this module imports `mmtrain.kernels`."""
    if torch.compiler.is_compiling():
        op = OPS.registered(name)
        if op is not None:
            return op
    return OPS.get(name)


def resolve(name: str, device: torch.device, *args: Any) -> Callable[..., Any]:
    """The implementation of op `name` that the current backend selects for `device` (and,
    under `auto`, for `args` when the op says which arguments its fused version supports)."""
    op = _lookup(name)
    backend = current_backend()
    if backend == "torch":
        return op.reference
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "triton":
        if op.triton is None:
            raise ConfigError(
                f"kernel backend 'triton' was requested but {name} cannot use it: "
                f"{op.triton_unavailable_reason or 'no Triton implementation'}"
            )
        if device.type != "cuda" and not interpreted:
            raise ConfigError(
                f"kernel backend 'triton' was requested but {name} got {device.type} tensors: "
                "Triton runs on CUDA tensors, or on the CPU only in its interpreter "
                "(TRITON_INTERPRET=1 before mmtrain.kernels is imported, for tests)"
            )
        return op.triton
    if op.triton is not None and device.type == "cuda" and not interpreted:
        if op.supports is None or op.supports(*args):
            return op.triton
    return op.reference


def masked_set_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Masked multi-head attention within small sets (docs/math.md §3.6); see `mmtrain.kernels`."""
    return resolve("masked_set_attention", q.device, q, k, v, mask)(q, k, v, mask)


def masked_set_attention_pooled(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """`masked_set_attention` summed over the present elements of each set → [B, H, Dh]."""
    return resolve("masked_set_attention_pooled", q.device, q, k, v, mask)(q, k, v, mask)


def masked_set_attention_two_mask(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`masked_set_attention` under two masks (full and sampled subset) → (out_a, out_b)."""
    args = (q, k, v, mask_a, mask_b)
    return resolve("masked_set_attention_two_mask", q.device, *args)(*args)


def masked_mixture_log_prob(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str = "normal",
    min_scale: float = 0.0,
) -> torch.Tensor:
    """log Σ_c softmax(logits masked to -inf)_c · Π_j f(z_j; loc_cj, min_scale + exp(log_scale_cj))."""
    args = (z, loc, log_scale, logits, component_mask, family, min_scale)
    return resolve("masked_mixture_log_prob", z.device, *args)(*args)
