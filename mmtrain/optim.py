"""Gradient post-processing and the optimiser step (docs/math.md §2.7)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from mmtrain.errors import ConfigError

GRADIENT_MODES = ("elementwise", "norm", "none")


@torch.no_grad()
def postprocess_gradients(
    parameters: Iterable[nn.Parameter], mode: str = "elementwise", clip: float = 100.0
) -> int:
    """Apply the gradient post-processing in place; return the number of NaN entries zeroed.

    `elementwise`: the paper's chain — NaN → 0 (infinities untouched), then every element
    clamped to [−clip, clip]. `norm`: NaN → 0, then global L2-norm clipping to `clip`.
    """
    if mode not in GRADIENT_MODES:
        raise ConfigError(f"unknown gradient mode {mode!r}; choose one of {GRADIENT_MODES}")
    with_grads = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in with_grads]
    if not grads or mode == "none":
        return 0
    nan_count = _count_nans(grads)
    if nan_count:
        for g in grads:
            torch.nan_to_num_(g, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
    if mode == "elementwise":
        torch._foreach_clamp_min_(grads, -clip)
        torch._foreach_clamp_max_(grads, clip)
    else:
        # It reads `.grad` of what it is given: the parameters, not their gradients.
        torch.nn.utils.clip_grad_norm_(with_grads, clip)
    return nan_count


def _count_nans(grads: list[torch.Tensor]) -> int:
    """The number of NaN entries in `grads`, with one host read when there are none: a
    tensor's norm is NaN exactly when it holds a NaN (infinities give inf), so the norms,
    stacked, tell whether any counting is needed."""
    norms = torch.stack(torch._foreach_norm(grads))
    if not bool(torch.isnan(norms).any()):
        return 0
    return int(torch.stack([torch.isnan(g).sum() for g in grads]).sum())


def build_optimizer(
    parameters: Iterable[nn.Parameter],
    name: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """Adam (the paper's) or AdamW, with PyTorch's fused kernel when every parameter is a
    floating tensor on a device that has one (one kernel per parameter instead of a dozen
    elementwise ops), else its multi-tensor (`foreach`) form. Both compute the same update as
    the one-tensor-at-a-time loop, up to float rounding."""
    if lr <= 0:
        raise ConfigError(f"learning rate must be positive, got {lr}")
    if name not in ("adam", "adamw"):
        raise ConfigError(f"unknown optimiser {name!r}; choose 'adam' or 'adamw'")
    parameters = list(parameters)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    kernel = {"fused": True} if _fused_supported(parameters) else {"foreach": True}
    return cls(parameters, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kernel)


def _fused_supported(parameters: list[nn.Parameter]) -> bool:
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = _get_fused_kernels_supported_devices()
    return bool(parameters) and all(
        p.device.type in devices and torch.is_floating_point(p) for p in parameters
    )
