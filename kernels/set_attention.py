"""Fused masked attention within small sets (docs/math.md §3.6), forward and backward, in Triton.

Math, per set b and head h, with the set's presence mask m ∈ {0, 1}^M:

    s_ij = q_i · k_j / sqrt(Dh)   if m_i and m_j,   FILL otherwise   (FILL = finfo(fp32).min)
    o_i  = Σ_j softmax_j(s_i) v_j

so a present query never attends to an absent key, an absent query attends uniformly to all
M keys (finite garbage that downstream code excludes) and an all-false set stays finite.
Absent rows of q, k and v are read as zeros (`tl.where`), so NaN or inf there reaches neither
an output nor a gradient (0 · NaN = NaN), and their gradients are exactly zero. The
pooled variant returns u = Σ_{i: m_i} o_i (a `where`, never a product with the mask); the
two-mask variant evaluates two masks over the same q, k, v in one launch.

What is fused and why: the sets are tiny (M ≤ 32, typically 2-16) and the op is memory-bound
(about M/2 FLOP per byte), so the win is reading q, k, v once and writing only what is
needed: masking, softmax, P·V and the masked pooling all stay in registers, and the score
matrix never reaches memory. The pooled variant never writes per-element outputs; the
two-mask variant reads q, k, v once for both masks.

Tiling: one program owns BLOCK_N whole (set, head) pairs, a [BLOCK_N, BLOCK_M, BLOCK_D] tile
with M and Dh padded to powers of two (padding lanes are masked on load and never stored;
see `_launch_config`). The program loops over the M keys one at a time, computing the score
column s_{:j} by broadcast-multiply-sum over Dh and updating an online softmax. M and Dh
are runtime arguments, not constexprs, and the key loop is not unrolled: one compiled kernel
serves every (M, Dh) of a tile. A constexpr M unrolled the loop M times, which gave one
kernel per (M, Dh) pair (8192 over the supported shapes), compiles of 10-30 s at M = 32 and
about twice the registers (spilling at 16 × 64 under two masks on sm_90), as the
ahead-of-time check (`benchmarks/aot_kernels.py`) measured.
`tl.dot` is not used: it needs 16×16 tiles, which for M = 2..8 would waste (16/M)² of the
work and registers, and at M/2 FLOP per byte the CUDA cores are not the bottleneck anyway.

Backward recomputes everything from q, k, v (nothing but the inputs is saved): pass 1 over
the keys rebuilds each row's softmax statistics and D_i = Σ_j P_ij (dO_i · v_j); pass 2
computes, for each key j, dv_j = Σ_i P_ij dO_i and dk_j = Σ_i dS_ij q_i (stored once, since
the program owns the whole set: no atomics) and accumulates dq_i = Σ_j dS_ij k_j, where
dS_ij = P_ij (dO_i · v_j − D_i) / sqrt(Dh) on present pairs and 0 on masked ones. The second
pass reads k and v again, from cache. fp16/bf16 inputs are computed in fp32, fp64 in fp64.

Each op is a `torch.library.custom_op` (with a fake implementation, so `torch.compile` traces
around it) whose backward, registered with `torch.library.register_autograd`, is the fused
backward op.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from mmtrain.errors import ConfigError

from .launch import KernelLaunch, launch_options
from .limits import MAX_HEAD_DIM, MAX_SET_ELEMENTS, MAX_SET_SIZE, set_attention_fits

_FILL = -3.4028234663852886e38  # finfo(float32).min, also used for fp64 (see module docstring)

# Tile policy (see `_launch_config`); tests lower _TILE_ELEMENTS to exercise several programs.
_TILE_ELEMENTS = {"forward": 2048, "backward": 1024}
_ELEMENTS_PER_THREAD = {"forward": 8, "backward": 4}
_MIN_BLOCK_M = 8
_MIN_BLOCK_D = 64
_MAX_WARPS = 32


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _online_softmax_step(s, pair, v_j, m_i, l_i, acc, FILL: tl.constexpr):
    s = tl.where(pair, s, FILL)
    m_new = tl.maximum(m_i, s)
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new)
    l_i = l_i * alpha + p
    acc = acc * alpha[:, :, None] + p[:, :, None] * v_j[:, None, :]
    return m_new, l_i, acc


@triton.jit
def _online_stats_step(s, pair, dp, m_i, l_i, dd, FILL: tl.constexpr):
    s = tl.where(pair, s, FILL)
    m_new = tl.maximum(m_i, s)
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new)
    l_i = l_i * alpha + p
    dd = dd * alpha + p * dp
    return m_new, l_i, dd


@triton.jit
def _masked_set_attention_forward_kernel(
    Q,
    K,
    V,
    MASK_A,
    MASK_B,
    OUT_A,
    OUT_B,
    N,
    H,
    sqb,
    sqh,
    sqm,
    sqd,
    skb,
    skh,
    skm,
    skd,
    svb,
    svh,
    svm,
    svd,
    sab,
    sam,
    sbb,
    sbm,
    M,
    D,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TWO_MASK: tl.constexpr,
    POOLED: tl.constexpr,
    COMPUTE: tl.constexpr,
    FILL: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < N
    d_ok = offs_d < D
    nm_ok = n_ok[:, None] & (offs_m < M)[None, :]
    nd_ok = n_ok[:, None] & d_ok[None, :]
    tile_ok = nm_ok[:, :, None] & d_ok[None, None, :]
    n64 = offs_n.to(tl.int64)
    b = n64 // H
    h = n64 % H
    inv_sqrt_d = 1.0 / tl.sqrt(tl.full([BLOCK_N, BLOCK_M], D, COMPUTE))

    q_ptrs = (
        Q
        + (b * sqb + h * sqh)[:, None, None]
        + offs_m[None, :, None] * sqm
        + offs_d[None, None, :] * sqd
    )
    q = tl.load(q_ptrs, mask=tile_ok, other=0.0).to(COMPUTE)
    k_base = K + (b * skb + h * skh)[:, None] + offs_d[None, :] * skd
    v_base = V + (b * svb + h * svh)[:, None] + offs_d[None, :] * svd

    qa = tl.load(MASK_A + b[:, None] * sab + offs_m[None, :] * sam, mask=nm_ok, other=0) != 0
    m_a = tl.full([BLOCK_N, BLOCK_M], FILL, COMPUTE)
    l_a = tl.zeros([BLOCK_N, BLOCK_M], COMPUTE)
    acc_a = tl.zeros([BLOCK_N, BLOCK_M, BLOCK_D], COMPUTE)
    if TWO_MASK:
        qb = tl.load(MASK_B + b[:, None] * sbb + offs_m[None, :] * sbm, mask=nm_ok, other=0) != 0
        m_b = tl.full([BLOCK_N, BLOCK_M], FILL, COMPUTE)
        l_b = tl.zeros([BLOCK_N, BLOCK_M], COMPUTE)
        acc_b = tl.zeros([BLOCK_N, BLOCK_M, BLOCK_D], COMPUTE)

    # -- one key at a time: score column, mask, online softmax, P·V -----------------------
    for j in range(M):
        k_j = tl.load(k_base + j * skm, mask=nd_ok, other=0.0).to(COMPUTE)
        v_j = tl.load(v_base + j * svm, mask=nd_ok, other=0.0).to(COMPUTE)
        s = tl.sum(q * k_j[:, None, :], axis=2) * inv_sqrt_d
        ka = tl.load(MASK_A + b * sab + j * sam, mask=n_ok, other=0) != 0
        v_a = tl.where(ka[:, None], v_j, 0.0)
        m_a, l_a, acc_a = _online_softmax_step(s, qa & ka[:, None], v_a, m_a, l_a, acc_a, FILL)
        if TWO_MASK:
            kb = tl.load(MASK_B + b * sbb + j * sbm, mask=n_ok, other=0) != 0
            v_b = tl.where(kb[:, None], v_j, 0.0)
            m_b, l_b, acc_b = _online_softmax_step(s, qb & kb[:, None], v_b, m_b, l_b, acc_b, FILL)

    # -- epilogue: normalise, pool over present queries or store per element ---------------
    out_a = acc_a / l_a[:, :, None]
    if POOLED:
        pooled_a = tl.sum(tl.where(qa[:, :, None], out_a, 0.0), axis=1)
        out_ptrs = n64[:, None] * D + offs_d[None, :]
        tl.store(OUT_A + out_ptrs, pooled_a.to(OUT_A.dtype.element_ty), mask=nd_ok)
    else:
        out_ptrs = n64[:, None, None] * (M * D) + offs_m[None, :, None] * D + offs_d[None, None, :]
        tl.store(OUT_A + out_ptrs, out_a.to(OUT_A.dtype.element_ty), mask=tile_ok)
    if TWO_MASK:
        out_b = acc_b / l_b[:, :, None]
        if POOLED:
            pooled_b = tl.sum(tl.where(qb[:, :, None], out_b, 0.0), axis=1)
            tl.store(OUT_B + out_ptrs, pooled_b.to(OUT_B.dtype.element_ty), mask=nd_ok)
        else:
            tl.store(OUT_B + out_ptrs, out_b.to(OUT_B.dtype.element_ty), mask=tile_ok)


@triton.jit
def _masked_set_attention_backward_kernel(
    Q,
    K,
    V,
    MASK_A,
    MASK_B,
    DO_A,
    DO_B,
    DQ,
    DK,
    DV,
    N,
    H,
    sqb,
    sqh,
    sqm,
    sqd,
    skb,
    skh,
    skm,
    skd,
    svb,
    svh,
    svm,
    svd,
    sab,
    sam,
    sbb,
    sbm,
    soab,
    soah,
    soam,
    soad,
    sobb,
    sobh,
    sobm,
    sobd,
    M,
    D,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TWO_MASK: tl.constexpr,
    POOLED: tl.constexpr,
    COMPUTE: tl.constexpr,
    FILL: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    n_ok = offs_n < N
    d_ok = offs_d < D
    nm_ok = n_ok[:, None] & (offs_m < M)[None, :]
    nd_ok = n_ok[:, None] & d_ok[None, :]
    tile_ok = nm_ok[:, :, None] & d_ok[None, None, :]
    n64 = offs_n.to(tl.int64)
    b = n64 // H
    h = n64 % H
    inv_sqrt_d = 1.0 / tl.sqrt(tl.full([BLOCK_N, BLOCK_M], D, COMPUTE))

    q_ptrs = (
        Q
        + (b * sqb + h * sqh)[:, None, None]
        + offs_m[None, :, None] * sqm
        + offs_d[None, None, :] * sqd
    )
    q = tl.load(q_ptrs, mask=tile_ok, other=0.0).to(COMPUTE)
    k_base = K + (b * skb + h * skh)[:, None] + offs_d[None, :] * skd
    v_base = V + (b * svb + h * svh)[:, None] + offs_d[None, :] * svd

    # Pooled: dO_i = dU for present queries, 0 otherwise (the dO strides over m are 0).
    qa = tl.load(MASK_A + b[:, None] * sab + offs_m[None, :] * sam, mask=nm_ok, other=0) != 0
    do_a_ptrs = (
        DO_A
        + (b * soab + h * soah)[:, None, None]
        + offs_m[None, :, None] * soam
        + offs_d[None, None, :] * soad
    )
    do_a = tl.load(do_a_ptrs, mask=tile_ok, other=0.0).to(COMPUTE)
    if POOLED:
        do_a = tl.where(qa[:, :, None], do_a, 0.0)
    m_a = tl.full([BLOCK_N, BLOCK_M], FILL, COMPUTE)
    l_a = tl.zeros([BLOCK_N, BLOCK_M], COMPUTE)
    dd_a = tl.zeros([BLOCK_N, BLOCK_M], COMPUTE)
    if TWO_MASK:
        qb = tl.load(MASK_B + b[:, None] * sbb + offs_m[None, :] * sbm, mask=nm_ok, other=0) != 0
        do_b_ptrs = (
            DO_B
            + (b * sobb + h * sobh)[:, None, None]
            + offs_m[None, :, None] * sobm
            + offs_d[None, None, :] * sobd
        )
        do_b = tl.load(do_b_ptrs, mask=tile_ok, other=0.0).to(COMPUTE)
        if POOLED:
            do_b = tl.where(qb[:, :, None], do_b, 0.0)
        m_b = tl.full([BLOCK_N, BLOCK_M], FILL, COMPUTE)
        l_b = tl.zeros([BLOCK_N, BLOCK_M], COMPUTE)
        dd_b = tl.zeros([BLOCK_N, BLOCK_M], COMPUTE)

    # Rows absent under every mask are read as zeros: their q never multiplies a zero dS.
    if TWO_MASK:
        q = tl.where((qa | qb)[:, :, None], q, 0.0)
    else:
        q = tl.where(qa[:, :, None], q, 0.0)

    # -- pass 1: softmax statistics and D_i = Σ_j P_ij (dO_i · v_j), recomputed -------------
    for j in range(M):
        k_j = tl.load(k_base + j * skm, mask=nd_ok, other=0.0).to(COMPUTE)
        v_j = tl.load(v_base + j * svm, mask=nd_ok, other=0.0).to(COMPUTE)
        s = tl.sum(q * k_j[:, None, :], axis=2) * inv_sqrt_d
        ka = tl.load(MASK_A + b * sab + j * sam, mask=n_ok, other=0) != 0
        v_a = tl.where(ka[:, None], v_j, 0.0)
        dp_a = tl.sum(do_a * v_a[:, None, :], axis=2)
        m_a, l_a, dd_a = _online_stats_step(s, qa & ka[:, None], dp_a, m_a, l_a, dd_a, FILL)
        if TWO_MASK:
            kb = tl.load(MASK_B + b * sbb + j * sbm, mask=n_ok, other=0) != 0
            v_b = tl.where(kb[:, None], v_j, 0.0)
            dp_b = tl.sum(do_b * v_b[:, None, :], axis=2)
            m_b, l_b, dd_b = _online_stats_step(s, qb & kb[:, None], dp_b, m_b, l_b, dd_b, FILL)
    inv_l_a = 1.0 / l_a
    dd_a = dd_a * inv_l_a
    if TWO_MASK:
        inv_l_b = 1.0 / l_b
        dd_b = dd_b * inv_l_b

    # -- pass 2: dv_j and dk_j stored per key (the program owns the set), dq accumulated ----
    dq = tl.zeros([BLOCK_N, BLOCK_M, BLOCK_D], COMPUTE)
    for j in range(M):
        k_j = tl.load(k_base + j * skm, mask=nd_ok, other=0.0).to(COMPUTE)
        v_j = tl.load(v_base + j * svm, mask=nd_ok, other=0.0).to(COMPUTE)
        s = tl.sum(q * k_j[:, None, :], axis=2) * inv_sqrt_d
        ka = tl.load(MASK_A + b * sab + j * sam, mask=n_ok, other=0) != 0
        pair_a = qa & ka[:, None]
        p_a = tl.exp(tl.where(pair_a, s, FILL) - m_a) * inv_l_a
        dp_a = tl.sum(do_a * tl.where(ka[:, None], v_j, 0.0)[:, None, :], axis=2)
        ds = tl.where(pair_a, p_a * (dp_a - dd_a), 0.0)
        dv_j = tl.where(ka[:, None], tl.sum(p_a[:, :, None] * do_a, axis=1), 0.0)
        k_keep = ka
        if TWO_MASK:
            kb = tl.load(MASK_B + b * sbb + j * sbm, mask=n_ok, other=0) != 0
            pair_b = qb & kb[:, None]
            p_b = tl.exp(tl.where(pair_b, s, FILL) - m_b) * inv_l_b
            dp_b = tl.sum(do_b * tl.where(kb[:, None], v_j, 0.0)[:, None, :], axis=2)
            ds += tl.where(pair_b, p_b * (dp_b - dd_b), 0.0)
            dv_j += tl.where(kb[:, None], tl.sum(p_b[:, :, None] * do_b, axis=1), 0.0)
            k_keep = ka | kb
        k_j = tl.where(k_keep[:, None], k_j, 0.0)
        ds = ds * inv_sqrt_d
        dk_j = tl.sum(ds[:, :, None] * q, axis=1)
        dq += ds[:, :, None] * k_j[:, None, :]
        row_ptrs = n64[:, None] * (M * D) + j * D + offs_d[None, :]
        tl.store(DK + row_ptrs, dk_j.to(DK.dtype.element_ty), mask=nd_ok)
        tl.store(DV + row_ptrs, dv_j.to(DV.dtype.element_ty), mask=nd_ok)
    dq_ptrs = n64[:, None, None] * (M * D) + offs_m[None, :, None] * D + offs_d[None, None, :]
    tl.store(DQ + dq_ptrs, dq.to(DQ.dtype.element_ty), mask=tile_ok)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *masks: torch.Tensor) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k, v must share one shape [B, H, M, Dh]; got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, _, set_size, head_dim = q.shape
    for mask in masks:
        if mask.dtype != torch.bool or tuple(mask.shape) != (batch, set_size):
            raise ValueError(
                f"mask must be bool [B, M] = [{batch}, {set_size}]; "
                f"got {mask.dtype} {tuple(mask.shape)}"
            )
        if mask.device != q.device or k.device != q.device or v.device != q.device:
            raise ValueError(
                f"q, k, v and masks must be on one device; got {q.device}, {k.device}, "
                f"{v.device}, {mask.device}"
            )
    if not set_attention_fits(set_size, head_dim):
        raise ValueError(
            f"the fused set attention handles M <= {MAX_SET_SIZE}, Dh <= {MAX_HEAD_DIM} and "
            f"next_power_of_2(M) * next_power_of_2(Dh) <= {MAX_SET_ELEMENTS}; "
            f"got M={set_size}, Dh={head_dim}: use the 'torch' kernel backend"
        )
    if q.device.type == "cpu" and not _INTERPRETED:
        raise ConfigError(
            "Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before "
            "mmtrain.kernels is imported (the CPU interpreter, for tests only)"
        )


def _compute_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_config(
    set_size: int, head_dim: int, phase: str, two_mask: bool
) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_M, BLOCK_D, num_warps) of a launch: a function of (M, Dh, phase,
    two_mask) only, never of the number of sets, so the launchers choose from a few
    configurations and `benchmarks/aot_kernels.py` compiles every one of them.

    M and Dh are padded to powers of two of at least 8 and 64: padding lanes cost
    arithmetic but no memory traffic, and the op stays memory-bound at M ≤ 8 (about
    BLOCK_M/2 FLOP per byte), while fewer tiles keep the compile check short. A program
    holds _TILE_ELEMENTS elements per tile tensor (whole sets, at least one) and enough
    warps for _ELEMENTS_PER_THREAD of them per thread (half under two masks, which carry
    twice the state), so no variant spills (the ahead-of-time check's table). The two-mask
    backward stops at 16 warps: at 32, the 64-register cap of a 1024-thread block spills.
    """
    block_m = max(_MIN_BLOCK_M, triton.next_power_of_2(set_size))
    block_d = max(_MIN_BLOCK_D, triton.next_power_of_2(head_dim))
    halve = 2 if two_mask else 1
    set_elements = block_m * block_d
    block_n = max(1, _TILE_ELEMENTS[phase] // halve // set_elements)
    tile = block_n * set_elements
    max_warps = _MAX_WARPS // (2 if two_mask and phase == "backward" else 1)
    num_warps = min(max_warps, max(1, tile * halve // (32 * _ELEMENTS_PER_THREAD[phase])))
    return block_n, block_m, block_d, num_warps


def _as_bytes(mask: torch.Tensor) -> torch.Tensor:
    return mask.view(torch.uint8)


def _forward_launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor | None,
    out_a: torch.Tensor,
    out_b: torch.Tensor | None,
    pooled: bool,
) -> KernelLaunch:
    """The forward launch for these tensors (run by `_forward`, compiled by the AOT check)."""
    batch, heads, set_size, head_dim = q.shape
    n_sets = batch * heads
    ma = _as_bytes(mask_a)
    mb = _as_bytes(mask_b) if mask_b is not None else ma
    block_n, block_m, block_d, num_warps = _launch_config(
        set_size, head_dim, "forward", mask_b is not None
    )
    args = (
        q,
        k,
        v,
        ma,
        mb,
        out_a,
        out_b if out_b is not None else out_a,
        n_sets,
        heads,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *ma.stride(),
        *mb.stride(),
        set_size,
        head_dim,
    )
    constexprs = {
        "BLOCK_N": block_n,
        "BLOCK_M": block_m,
        "BLOCK_D": block_d,
        "TWO_MASK": mask_b is not None,
        "POOLED": pooled,
        "COMPUTE": _compute_dtype(q.dtype),
        "FILL": _FILL,
    }
    grid = (triton.cdiv(n_sets, block_n),)
    return KernelLaunch(
        _masked_set_attention_forward_kernel,
        grid,
        args,
        {**constexprs, **launch_options(num_warps, register_ceiling=False)},
    )


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor | None,
    pooled: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    masks = (mask_a,) if mask_b is None else (mask_a, mask_b)
    _check_inputs(q, k, v, *masks)
    batch, heads, set_size, head_dim = q.shape
    shape = (batch, heads, head_dim) if pooled else (batch, heads, set_size, head_dim)
    out_a = torch.empty(shape, dtype=q.dtype, device=q.device)
    out_b = torch.empty(shape, dtype=q.dtype, device=q.device) if mask_b is not None else None
    if q.numel() == 0:  # no sets, no elements or no width: pooled sums are empty sums
        out_a.zero_()
        if out_b is not None:
            out_b.zero_()
        return out_a, out_b
    _forward_launch(q, k, v, mask_a, mask_b, out_a, out_b, pooled).run()
    return out_a, out_b


def _grad_strides(grad: torch.Tensor, pooled: bool) -> tuple[int, int, int, int]:
    if pooled:
        sb, sh, sd = grad.stride()
        return sb, sh, 0, sd
    sb, sh, sm, sd = grad.stride()
    return sb, sh, sm, sd


def _backward_launch(
    grad_a: torch.Tensor,
    grad_b: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor | None,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    pooled: bool,
) -> KernelLaunch:
    """The backward launch for these tensors (run by `_backward`, compiled by the AOT check)."""
    batch, heads, set_size, head_dim = q.shape
    n_sets = batch * heads
    ma = _as_bytes(mask_a)
    mb = _as_bytes(mask_b) if mask_b is not None else ma
    gb = grad_b if grad_b is not None else grad_a
    block_n, block_m, block_d, num_warps = _launch_config(
        set_size, head_dim, "backward", mask_b is not None
    )
    args = (
        q,
        k,
        v,
        ma,
        mb,
        grad_a,
        gb,
        dq,
        dk,
        dv,
        n_sets,
        heads,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *ma.stride(),
        *mb.stride(),
        *_grad_strides(grad_a, pooled),
        *_grad_strides(gb, pooled),
        set_size,
        head_dim,
    )
    constexprs = {
        "BLOCK_N": block_n,
        "BLOCK_M": block_m,
        "BLOCK_D": block_d,
        "TWO_MASK": mask_b is not None,
        "POOLED": pooled,
        "COMPUTE": _compute_dtype(q.dtype),
        "FILL": _FILL,
    }
    grid = (triton.cdiv(n_sets, block_n),)
    return KernelLaunch(
        _masked_set_attention_backward_kernel,
        grid,
        args,
        {**constexprs, **launch_options(num_warps, register_ceiling=True)},
    )


def _backward(
    grad_a: torch.Tensor,
    grad_b: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor | None,
    pooled: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dv = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if dq.numel() == 0:
        return dq, dk, dv
    _backward_launch(grad_a, grad_b, q, k, v, mask_a, mask_b, dq, dk, dv, pooled).run()
    return dq, dk, dv


# ---------------------------------------------------------------------------------------------
# Custom ops (opaque to torch.compile; fake implementations give shapes and dtypes)
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("mmtrain::masked_set_attention", mutates_args=())
def _masked_set_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    return _forward(q, k, v, mask, None, pooled=False)[0]


@torch.library.custom_op("mmtrain::masked_set_attention_pooled", mutates_args=())
def _masked_set_attention_pooled_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    return _forward(q, k, v, mask, None, pooled=True)[0]


@torch.library.custom_op("mmtrain::masked_set_attention_two_mask", mutates_args=())
def _masked_set_attention_two_mask_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    out_a, out_b = _forward(q, k, v, mask_a, mask_b, pooled=False)
    assert out_b is not None
    return out_a, out_b


@torch.library.custom_op("mmtrain::masked_set_attention_backward", mutates_args=())
def _masked_set_attention_backward_op(
    grad_a: torch.Tensor,
    grad_b: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor | None,
    pooled: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(grad_a, grad_b, q, k, v, mask_a, mask_b, pooled)


@_masked_set_attention_op.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return q.new_empty(q.shape)


@_masked_set_attention_pooled_op.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return q.new_empty((q.shape[0], q.shape[1], q.shape[3]))


@_masked_set_attention_two_mask_op.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), q.new_empty(q.shape)


@_masked_set_attention_backward_op.register_fake
def _(
    grad_a: torch.Tensor,
    grad_b: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor | None,
    pooled: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)


# ---------------------------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------------------------


def _dense(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


# The custom ops' autograd: what each forward saves, and its backward through the fused
# backward op.


def _save_qkv_mask(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(*inputs)


def _attention_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    q, k, v, mask = ctx.saved_tensors
    dq, dk, dv = torch.ops.mmtrain.masked_set_attention_backward(
        grad, None, q, k, v, mask, None, False
    )
    return dq, dk, dv, None


def _pooled_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    q, k, v, mask = ctx.saved_tensors
    dq, dk, dv = torch.ops.mmtrain.masked_set_attention_backward(
        grad, None, q, k, v, mask, None, True
    )
    return dq, dk, dv, None


def _two_mask_backward(
    ctx: Any, grad_a: torch.Tensor | None, grad_b: torch.Tensor | None
) -> tuple[torch.Tensor | None, ...]:
    q, k, v, mask_a, mask_b = ctx.saved_tensors
    dq, dk, dv = torch.ops.mmtrain.masked_set_attention_backward(
        _dense(grad_a, q), _dense(grad_b, q), q, k, v, mask_a, mask_b, False
    )
    return dq, dk, dv, None, None


torch.library.register_autograd(
    "mmtrain::masked_set_attention", _attention_backward, setup_context=_save_qkv_mask
)
torch.library.register_autograd(
    "mmtrain::masked_set_attention_pooled", _pooled_backward, setup_context=_save_qkv_mask
)
torch.library.register_autograd(
    "mmtrain::masked_set_attention_two_mask", _two_mask_backward, setup_context=_save_qkv_mask
)


# ---------------------------------------------------------------------------------------------
# Public entry points (the Triton implementations registered in OPS)
# ---------------------------------------------------------------------------------------------


def masked_set_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Fused `masked_set_attention_reference`: q, k, v [B, H, M, Dh], mask [B, M] bool."""
    return torch.ops.mmtrain.masked_set_attention(q, k, v, mask)


def masked_set_attention_pooled_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Fused `masked_set_attention_pooled_reference`: → [B, H, Dh]; all-false set → 0."""
    return torch.ops.mmtrain.masked_set_attention_pooled(q, k, v, mask)


def masked_set_attention_two_mask_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused `masked_set_attention_two_mask_reference`: both masks in one launch."""
    out_a, out_b = torch.ops.mmtrain.masked_set_attention_two_mask(q, k, v, mask_a, mask_b)
    return out_a, out_b
