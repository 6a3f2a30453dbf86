"""Fused ops for mmtrain, each beside its plain-PyTorch reference.

Importing this package registers every op in `mmtrain.registry.OPS`; `mmtrain.ops` dispatches.
The Triton implementations are optional: when `triton` cannot be imported each op is
registered with `triton=None` and the reason, so `auto` falls back to the reference and an
explicit `triton` request fails with that reason.

| op | reference | Triton |
|---|---|---|
| `masked_set_attention` | `masked_set_attention_reference` | `set_attention.masked_set_attention_triton` |
| `masked_set_attention_pooled` | `masked_set_attention_pooled_reference` | `..._pooled_triton` |
| `masked_set_attention_two_mask` | `masked_set_attention_two_mask_reference` | `..._two_mask_triton` |
| `masked_mixture_log_prob` | `masked_mixture_log_prob_reference` | `mixture_log_prob.masked_mixture_log_prob_triton` |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mmtrain.registry import OPS

from .limits import (
    MAX_HEAD_DIM,
    MAX_LATENT_DIM,
    MAX_SET_ELEMENTS,
    MAX_SET_SIZE,
    set_attention_fits,
)
from .op import KernelOp
from .reference import (
    masked_mixture_log_prob_reference,
    masked_set_attention_pooled_reference,
    masked_set_attention_reference,
    masked_set_attention_two_mask_reference,
)

_triton_impls: dict[str, Callable[..., Any]] = {}
TRITON_UNAVAILABLE_REASON = ""
try:
    import triton  # noqa: F401
except Exception as exc:  # pragma: no cover - exercised only without triton installed
    TRITON_UNAVAILABLE_REASON = f"triton is not importable ({type(exc).__name__}: {exc}); "
    TRITON_UNAVAILABLE_REASON += "install mmtrain[kernels]"
else:
    from .mixture_log_prob import masked_mixture_log_prob_triton
    from .set_attention import (
        masked_set_attention_pooled_triton,
        masked_set_attention_triton,
        masked_set_attention_two_mask_triton,
    )

    _triton_impls = {
        "masked_set_attention": masked_set_attention_triton,
        "masked_set_attention_pooled": masked_set_attention_pooled_triton,
        "masked_set_attention_two_mask": masked_set_attention_two_mask_triton,
        "masked_mixture_log_prob": masked_mixture_log_prob_triton,
    }


def _set_attention_fits(q: torch.Tensor, *_: object) -> bool:
    return set_attention_fits(q.shape[-2], q.shape[-1])


def _mixture_fits(z: torch.Tensor, *_: object) -> bool:
    return z.shape[-1] <= MAX_LATENT_DIM


_supports: dict[str, Callable[..., bool]] = {
    "masked_set_attention": _set_attention_fits,
    "masked_set_attention_pooled": _set_attention_fits,
    "masked_set_attention_two_mask": _set_attention_fits,
    "masked_mixture_log_prob": _mixture_fits,
}

_references: dict[str, Callable[..., Any]] = {
    "masked_set_attention": masked_set_attention_reference,
    "masked_set_attention_pooled": masked_set_attention_pooled_reference,
    "masked_set_attention_two_mask": masked_set_attention_two_mask_reference,
    "masked_mixture_log_prob": masked_mixture_log_prob_reference,
}

for _name, _reference in _references.items():
    OPS.register(
        _name,
        KernelOp(
            _name,
            _reference,
            triton=_triton_impls.get(_name),
            triton_unavailable_reason=TRITON_UNAVAILABLE_REASON,
            supports=_supports[_name],
        ),
    )

__all__ = [
    "MAX_HEAD_DIM",
    "MAX_LATENT_DIM",
    "MAX_SET_ELEMENTS",
    "MAX_SET_SIZE",
    "TRITON_UNAVAILABLE_REASON",
    "masked_mixture_log_prob_reference",
    "masked_set_attention_pooled_reference",
    "masked_set_attention_reference",
    "masked_set_attention_two_mask_reference",
]
