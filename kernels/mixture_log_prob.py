"""Fused log density of a diagonal Normal or Laplace mixture with masked components, in Triton.

Math, per sample l and example b, over components c with presence mask m_bc:

    w_bc     = log_softmax_c(logits_bc, masked to -inf)            (-inf for absent c)
    f_lbc    = Σ_j log p(z_lbj; loc_bcj, σ_bcj),   σ = min_scale + exp(log_scale)
    out_lb   = logsumexp_c (w_bc + f_lbc)

with log p = -½u² - log σ - ½log 2π, u = (z - loc)/σ (Normal) or -|z - loc|/σ - log 2σ
(Laplace). A row with no present component has density 0: out = -inf and zero gradients.
Absent components contribute exactly nothing, even with non-finite parameters.

What is fused and why: the eager version materialises [L, B, C, d] densities and several
[L, B, C] intermediates; here one program reads z once and each component's parameters
once, reduces over the latent dimensions in registers and runs an online logsumexp over the
components, writing only [L, B].

Tiling: forward programs own a [BLOCK_L, BLOCK_B, BLOCK_D] tile of z (d padded to a power of
four, see `_launch_config`) and loop over the components, also for the log-normaliser of the
weights, so no tile dimension grows with the number of components. d is a runtime argument,
not a constexpr: one compiled kernel serves every d of a tile. Backward programs own BLOCK_B examples and loop over all
samples in BLOCK_L chunks, so the sums over samples that the parameter gradients need stay
inside one program: no atomics. Backward saves nothing but the inputs: for each chunk, pass 1
over the components recomputes out_lb at full precision (the stored output may be fp16/bf16,
too coarse for exp(· - out)), pass 2 forms the responsibilities r_lbc = exp(w_bc + f_lbc -
out_lb) and, with g the upstream gradient,

    dz_lbj      =  Σ_c g r ∂_u log p / σ               (summed over c in registers)
    dloc_bcj    = -Σ_l g r ∂_u log p / σ
    dlogscale   =  Σ_l g r ∂_σ log p · exp(log_scale)
    dlogits_bc  =  Σ_l g (r_lbc - softmax_bc)

When L spans several chunks the parameter gradients are accumulated in place by the
program that owns them (read-add-write after a block barrier). Computation is in fp32 for
fp16/bf16/fp32 inputs and in fp64 for fp64; `min_scale` is passed as an fp32 scalar.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from mmtrain.errors import ConfigError

from .launch import KernelLaunch, launch_options
from .limits import MAX_LATENT_DIM

FAMILIES = ("normal", "laplace")

_HALF_LOG_2PI = tl.constexpr(0.9189385332046727)  # ½ log 2π
_LOG_2 = tl.constexpr(0.6931471805599453)

# Tile policy (see `_launch_config`); tests lower these to exercise several programs.
_TILE_ELEMENTS = {"forward": 2048, "backward": 1024}
_ELEMENTS_PER_THREAD = {"forward": 8, "backward": 4}
_MAX_BLOCK_L = 16
_MIN_BLOCK_D = 16
_MAX_WARPS = 16


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _mixture_log_weight_norm(
    LOGITS, CMASK, offs_b, b_ok, C, sgb, sgc, smb, smc, BLOCK_B: tl.constexpr, COMPUTE: tl.constexpr
):
    """logsumexp of the present logits per example ([BLOCK_B]; -inf when none is present),
    one component at a time, so no tile dimension grows with the number of components."""
    run_max = tl.full([BLOCK_B], float("-inf"), COMPUTE)
    run_sum = tl.zeros([BLOCK_B], COMPUTE)
    for c in range(C):
        present = tl.load(CMASK + offs_b * smb + c * smc, mask=b_ok, other=0) != 0
        logit = tl.load(LOGITS + offs_b * sgb + c * sgc, mask=b_ok & present, other=0.0)
        term = tl.where(present, logit.to(COMPUTE), float("-inf"))
        run_max, run_sum = _online_logsumexp(run_max, run_sum, term)
    return _finish_logsumexp(run_max, run_sum)


@triton.jit
def _component(
    z,
    LOC,
    LOG_SCALE,
    LOGITS,
    CMASK,
    c,
    offs_b,
    offs_d,
    b_ok,
    bd_ok,
    d_ok,
    slb,
    slc,
    sld,
    ssb,
    ssc,
    ssd,
    sgb,
    sgc,
    smb,
    smc,
    log_norm,
    min_scale,
    D,
    BLOCK_B: tl.constexpr,
    LAPLACE: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """Component c against a [BLOCK_L, BLOCK_B, BLOCK_D] tile of z: log-weight + log density
    ([BLOCK_L, BLOCK_B], -inf where absent), u = (z - loc)/σ, 1/σ, exp(log_scale), presence
    and log-weight. Absent components' parameters are never loaded."""
    present = tl.load(CMASK + offs_b * smb + c * smc, mask=b_ok, other=0) != 0
    logit = tl.load(LOGITS + offs_b * sgb + c * sgc, mask=b_ok & present, other=0.0)
    p_ok = bd_ok & present[:, None]
    loc = tl.load(
        LOC + offs_b[:, None] * slb + c * slc + offs_d[None, :] * sld, mask=p_ok, other=0.0
    )
    log_scale = tl.load(
        LOG_SCALE + offs_b[:, None] * ssb + c * ssc + offs_d[None, :] * ssd, mask=p_ok, other=0.0
    )
    exp_ls = tl.exp(log_scale.to(COMPUTE))
    scale = min_scale + exp_ls
    inv_scale = 1.0 / scale
    log_det = tl.sum(tl.where(d_ok[None, :], tl.log(scale), 0.0), axis=1)
    u = (z - loc.to(COMPUTE)[None, :, :]) * inv_scale[None, :, :]
    if LAPLACE:
        quad = tl.sum(tl.abs(u), axis=2)
        const = tl.full([BLOCK_B], D, COMPUTE) * _LOG_2
    else:
        quad = 0.5 * tl.sum(u * u, axis=2)
        const = tl.full([BLOCK_B], D, COMPUTE) * _HALF_LOG_2PI
    log_w = logit.to(COMPUTE) - log_norm
    term = tl.where(present[None, :], (log_w - log_det - const)[None, :] - quad, float("-inf"))
    return term, u, inv_scale, exp_ls, present, log_w


@triton.jit
def _online_logsumexp(run_max, run_sum, term):
    new_max = tl.maximum(run_max, term)
    shift = tl.where(new_max == float("-inf"), 0.0, new_max)
    run_sum = run_sum * tl.exp(run_max - shift) + tl.exp(term - shift)
    return new_max, run_sum


@triton.jit
def _finish_logsumexp(run_max, run_sum):
    has_mass = run_sum > 0
    return tl.where(has_mass, run_max + tl.log(tl.where(has_mass, run_sum, 1.0)), float("-inf"))


@triton.jit
def _masked_mixture_log_prob_forward_kernel(
    Z,
    LOC,
    LOG_SCALE,
    LOGITS,
    CMASK,
    OUT,
    L,
    B,
    C,
    szl,
    szb,
    szd,
    slb,
    slc,
    sld,
    ssb,
    ssc,
    ssd,
    sgb,
    sgc,
    smb,
    smc,
    min_scale,
    D,
    BLOCK_L: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
    LAPLACE: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_d = tl.arange(0, BLOCK_D)
    b_ok = offs_b < B
    d_ok = offs_d < D
    bd_ok = b_ok[:, None] & d_ok[None, :]
    lb_ok = (offs_l < L)[:, None] & b_ok[None, :]
    offs_b = offs_b.to(tl.int64)
    offs_l = offs_l.to(tl.int64)

    log_norm = _mixture_log_weight_norm(
        LOGITS, CMASK, offs_b, b_ok, C, sgb, sgc, smb, smc, BLOCK_B, COMPUTE
    )
    z_ptrs = (
        Z + offs_l[:, None, None] * szl + offs_b[None, :, None] * szb + offs_d[None, None, :] * szd
    )
    z = tl.load(z_ptrs, mask=lb_ok[:, :, None] & d_ok[None, None, :], other=0.0).to(COMPUTE)

    # -- online logsumexp over components -------------------------------------------------
    run_max = tl.full([BLOCK_L, BLOCK_B], float("-inf"), COMPUTE)
    run_sum = tl.zeros([BLOCK_L, BLOCK_B], COMPUTE)
    for c in range(C):
        term, u, inv_scale, exp_ls, present, log_w = _component(
            z, LOC, LOG_SCALE, LOGITS, CMASK, c, offs_b, offs_d, b_ok, bd_ok, d_ok,
            slb, slc, sld, ssb, ssc, ssd, sgb, sgc, smb, smc, log_norm, min_scale,
            D, BLOCK_B, LAPLACE, COMPUTE,
        )  # fmt: skip
        run_max, run_sum = _online_logsumexp(run_max, run_sum, term)

    out = _finish_logsumexp(run_max, run_sum)
    tl.store(OUT + offs_l[:, None] * B + offs_b[None, :], out.to(OUT.dtype.element_ty), mask=lb_ok)


@triton.jit
def _masked_mixture_log_prob_backward_kernel(
    GRAD,
    Z,
    LOC,
    LOG_SCALE,
    LOGITS,
    CMASK,
    DZ,
    DLOC,
    DLOG_SCALE,
    DLOGITS,
    L,
    B,
    C,
    sgrl,
    sgrb,
    szl,
    szb,
    szd,
    slb,
    slc,
    sld,
    ssb,
    ssc,
    ssd,
    sgb,
    sgc,
    smb,
    smc,
    min_scale,
    D,
    BLOCK_L: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_D: tl.constexpr,
    LAPLACE: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_d = tl.arange(0, BLOCK_D)
    b_ok = offs_b < B
    d_ok = offs_d < D
    bd_ok = b_ok[:, None] & d_ok[None, :]
    offs_b = offs_b.to(tl.int64)
    param_offs = offs_b[:, None] * (C * D) + offs_d[None, :]

    log_norm = _mixture_log_weight_norm(
        LOGITS, CMASK, offs_b, b_ok, C, sgb, sgc, smb, smc, BLOCK_B, COMPUTE
    )

    for l_start in range(0, L, BLOCK_L):
        offs_l = l_start + tl.arange(0, BLOCK_L)
        lb_ok = (offs_l < L)[:, None] & b_ok[None, :]
        lbd_ok = lb_ok[:, :, None] & d_ok[None, None, :]
        offs_l = offs_l.to(tl.int64)
        z_ptrs = (
            Z
            + offs_l[:, None, None] * szl
            + offs_b[None, :, None] * szb
            + offs_d[None, None, :] * szd
        )
        z = tl.load(z_ptrs, mask=lbd_ok, other=0.0).to(COMPUTE)
        grad = tl.load(
            GRAD + offs_l[:, None] * sgrl + offs_b[None, :] * sgrb, mask=lb_ok, other=0.0
        ).to(COMPUTE)

        # -- pass 1: the log density, recomputed at full precision ------------------------
        run_max = tl.full([BLOCK_L, BLOCK_B], float("-inf"), COMPUTE)
        run_sum = tl.zeros([BLOCK_L, BLOCK_B], COMPUTE)
        for c in range(C):
            term, u, inv_scale, exp_ls, present, log_w = _component(
                z, LOC, LOG_SCALE, LOGITS, CMASK, c, offs_b, offs_d, b_ok, bd_ok, d_ok,
                slb, slc, sld, ssb, ssc, ssd, sgb, sgc, smb, smc, log_norm, min_scale,
                D, BLOCK_B, LAPLACE, COMPUTE,
            )  # fmt: skip
            run_max, run_sum = _online_logsumexp(run_max, run_sum, term)
        out = _finish_logsumexp(run_max, run_sum)
        row_ok = lb_ok & (out > float("-inf"))
        out = tl.where(row_ok, out, 0.0)
        later = l_start > 0

        # -- pass 2: responsibilities and gradients ----------------------------------------
        dz = tl.zeros([BLOCK_L, BLOCK_B, BLOCK_D], COMPUTE)
        for c in range(C):
            term, u, inv_scale, exp_ls, present, log_w = _component(
                z, LOC, LOG_SCALE, LOGITS, CMASK, c, offs_b, offs_d, b_ok, bd_ok, d_ok,
                slb, slc, sld, ssb, ssc, ssd, sgb, sgc, smb, smc, log_norm, min_scale,
                D, BLOCK_B, LAPLACE, COMPUTE,
            )  # fmt: skip
            if LAPLACE:
                du = tl.where(u > 0, 1.0, tl.where(u < 0, -1.0, 0.0))  # -∂ log p / ∂u
                dsig = tl.abs(u) - 1.0  # σ ∂ log p / ∂σ
            else:
                du = u
                dsig = u * u - 1.0
            resp = tl.exp(tl.where(row_ok & present[None, :], term - out, float("-inf")))
            gr = grad * resp  # [BLOCK_L, BLOCK_B]
            weight = tl.exp(tl.where(present, log_w, float("-inf")))
            dlogit = tl.sum(gr - tl.where(row_ok, grad, 0.0) * weight[None, :], axis=0)
            g_du = gr[:, :, None] * du * inv_scale[None, :, :]
            dz -= g_du
            dloc = tl.sum(g_du, axis=0)
            dls = tl.sum(gr[:, :, None] * dsig, axis=0) * exp_ls * inv_scale

            # this program owns examples b: sum the parameter gradients over chunks of L
            dloc_ptrs = DLOC + param_offs + c * D
            dls_ptrs = DLOG_SCALE + param_offs + c * D
            dlogit_ptrs = DLOGITS + offs_b * C + c
            dloc += tl.load(dloc_ptrs, mask=bd_ok & later, other=0.0).to(COMPUTE)
            dls += tl.load(dls_ptrs, mask=bd_ok & later, other=0.0).to(COMPUTE)
            dlogit += tl.load(dlogit_ptrs, mask=b_ok & later, other=0.0).to(COMPUTE)
            tl.store(dloc_ptrs, dloc.to(DLOC.dtype.element_ty), mask=bd_ok)
            tl.store(dls_ptrs, dls.to(DLOG_SCALE.dtype.element_ty), mask=bd_ok)
            tl.store(dlogit_ptrs, dlogit.to(DLOGITS.dtype.element_ty), mask=b_ok)

        dz_ptrs = (
            offs_l[:, None, None] * (B * D) + offs_b[None, :, None] * D + offs_d[None, None, :]
        )
        tl.store(DZ + dz_ptrs, dz.to(DZ.dtype.element_ty), mask=lbd_ok)
        tl.debug_barrier()


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------

_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _check_inputs(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str,
) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose 'normal' or 'laplace'")
    if z.dim() != 3 or loc.dim() != 3:
        raise ValueError(
            f"z must be [L, B, d] and loc [B, C, d]; got {tuple(z.shape)}, {tuple(loc.shape)}"
        )
    _, batch, dim = z.shape
    n_comp = loc.shape[1]
    if tuple(loc.shape) != (batch, n_comp, dim) or log_scale.shape != loc.shape:
        raise ValueError(
            f"loc and log_scale must be [B, C, d] = [{batch}, C, {dim}]; "
            f"got {tuple(loc.shape)}, {tuple(log_scale.shape)}"
        )
    if tuple(logits.shape) != (batch, n_comp) or tuple(component_mask.shape) != (batch, n_comp):
        raise ValueError(
            f"logits and component_mask must be [B, C] = [{batch}, {n_comp}]; "
            f"got {tuple(logits.shape)}, {tuple(component_mask.shape)}"
        )
    if component_mask.dtype != torch.bool:
        raise ValueError(f"component_mask must be bool; got {component_mask.dtype}")
    if any(t.device != z.device for t in (loc, log_scale, logits, component_mask)):
        raise ValueError("z, the component parameters and the mask must be on one device")
    if dim > MAX_LATENT_DIM:
        raise ValueError(f"the fused mixture handles d <= {MAX_LATENT_DIM}; got {dim}")
    if z.device.type == "cpu" and not _INTERPRETED:
        raise ConfigError(
            "Triton kernels need CUDA tensors, or TRITON_INTERPRET=1 set before "
            "mmtrain.kernels is imported (the CPU interpreter, for tests only)"
        )


def _compute_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch_config(n_samples: int, dim: int, phase: str) -> tuple[int, int, int, int]:
    """(BLOCK_L, BLOCK_B, BLOCK_D, num_warps) for L samples of a d-dimensional mixture: a
    function of (L, d, phase) only, never of the batch or the number of components, so the
    launchers choose from a few configurations and `benchmarks/aot_kernels.py` compiles
    every one of them.

    d is padded to a power of four of at least 16 (16, 64, 256, 1024) and L to 1 (a single
    sample, the training default) or a chunk of up to _MAX_BLOCK_L: padding lanes cost
    arithmetic but no memory traffic, and with one sample the op is memory-bound by far
    (about one FLOP per byte). A program holds _TILE_ELEMENTS elements of its z tile (at
    least one example) with enough warps for _ELEMENTS_PER_THREAD of them per thread, so no
    variant spills (the ahead-of-time check's table).
    """
    bits = (dim - 1).bit_length()
    block_d = max(_MIN_BLOCK_D, 1 << (bits + bits % 2))
    budget = _TILE_ELEMENTS[phase]
    block_l = 1 if n_samples <= 1 else min(_MAX_BLOCK_L, max(1, budget // block_d))
    block_b = max(1, budget // (block_l * block_d))
    tile = block_l * block_b * block_d
    per_thread = _ELEMENTS_PER_THREAD[phase]
    if phase == "backward" and block_l > 1:
        per_thread //= 2  # sums over the chunk's samples: more live state per element
    num_warps = min(_MAX_WARPS, max(1, tile // (32 * per_thread)))
    return block_l, block_b, block_d, num_warps


def _forward_launch(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    out: torch.Tensor,
    family: str,
    min_scale: float,
) -> KernelLaunch:
    """The forward launch for these tensors (run by `_forward`, compiled by the AOT check)."""
    n_samples, batch, dim = z.shape
    n_comp = loc.shape[1]
    block_l, block_b, block_d, num_warps = _launch_config(n_samples, dim, "forward")
    mask = component_mask.view(torch.uint8)
    args = (
        z,
        loc,
        log_scale,
        logits,
        mask,
        out,
        n_samples,
        batch,
        n_comp,
        *z.stride(),
        *loc.stride(),
        *log_scale.stride(),
        *logits.stride(),
        *mask.stride(),
        float(min_scale),
        dim,
    )
    constexprs = {
        "BLOCK_L": block_l,
        "BLOCK_B": block_b,
        "BLOCK_D": block_d,
        "LAPLACE": family == "laplace",
        "COMPUTE": _compute_dtype(z.dtype),
    }
    grid = (triton.cdiv(batch, block_b), triton.cdiv(n_samples, block_l))
    return KernelLaunch(
        _masked_mixture_log_prob_forward_kernel,
        grid,
        args,
        {**constexprs, **launch_options(num_warps, register_ceiling=False)},
    )


def _forward(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str,
    min_scale: float,
) -> torch.Tensor:
    _check_inputs(z, loc, log_scale, logits, component_mask, family)
    n_samples, batch, _ = z.shape
    out = torch.empty((n_samples, batch), dtype=z.dtype, device=z.device)
    if out.numel() == 0:
        return out
    _forward_launch(z, loc, log_scale, logits, component_mask, out, family, min_scale).run()
    return out


def _backward_launch(
    grad: torch.Tensor,
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    family: str,
    min_scale: float,
) -> KernelLaunch:
    """The backward launch writing `grads` = (dz, dloc, dlog_scale, dlogits), all contiguous
    (run by `_backward`, compiled by the AOT check)."""
    n_samples, batch, dim = z.shape
    n_comp = loc.shape[1]
    block_l, block_b, block_d, num_warps = _launch_config(n_samples, dim, "backward")
    mask = component_mask.view(torch.uint8)
    args = (
        grad,
        z,
        loc,
        log_scale,
        logits,
        mask,
        *grads,
        n_samples,
        batch,
        n_comp,
        *grad.stride(),
        *z.stride(),
        *loc.stride(),
        *log_scale.stride(),
        *logits.stride(),
        *mask.stride(),
        float(min_scale),
        dim,
    )
    constexprs = {
        "BLOCK_L": block_l,
        "BLOCK_B": block_b,
        "BLOCK_D": block_d,
        "LAPLACE": family == "laplace",
        "COMPUTE": _compute_dtype(z.dtype),
    }
    grid = (triton.cdiv(batch, block_b),)
    return KernelLaunch(
        _masked_mixture_log_prob_backward_kernel,
        grid,
        args,
        {**constexprs, **launch_options(num_warps, register_ceiling=True)},
    )


def _backward(
    grad: torch.Tensor,
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str,
    min_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n_samples, batch, dim = z.shape
    n_comp = loc.shape[1]
    dz = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    dloc = torch.empty(loc.shape, dtype=loc.dtype, device=loc.device)
    dls = torch.empty(log_scale.shape, dtype=log_scale.dtype, device=log_scale.device)
    dlogits = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    if n_samples == 0 or batch == 0 or n_comp == 0 or dim == 0:
        for t in (dz, dloc, dls, dlogits):
            t.zero_()
        return dz, dloc, dls, dlogits
    grads = (dz, dloc, dls, dlogits)
    launch = _backward_launch(
        grad, z, loc, log_scale, logits, component_mask, grads, family, min_scale
    )
    launch.run()
    return dz, dloc, dls, dlogits


# ---------------------------------------------------------------------------------------------
# Custom ops (opaque to torch.compile; fake implementations give shapes and dtypes)
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("mmtrain::masked_mixture_log_prob", mutates_args=())
def _masked_mixture_log_prob_op(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str,
    min_scale: float,
) -> torch.Tensor:
    return _forward(z, loc, log_scale, logits, component_mask, family, min_scale)


@torch.library.custom_op("mmtrain::masked_mixture_log_prob_backward", mutates_args=())
def _masked_mixture_log_prob_backward_op(
    grad: torch.Tensor,
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str,
    min_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(grad, z, loc, log_scale, logits, component_mask, family, min_scale)


@_masked_mixture_log_prob_op.register_fake
def _(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str,
    min_scale: float,
) -> torch.Tensor:
    return z.new_empty(z.shape[:2])


@_masked_mixture_log_prob_backward_op.register_fake
def _(
    grad: torch.Tensor,
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str,
    min_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        z.new_empty(z.shape),
        loc.new_empty(loc.shape),
        log_scale.new_empty(log_scale.shape),
        logits.new_empty(logits.shape),
    )


# ---------------------------------------------------------------------------------------------
# Autograd
# ---------------------------------------------------------------------------------------------


def _save_mixture_inputs(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    z, loc, log_scale, logits, component_mask, family, min_scale = inputs
    ctx.save_for_backward(z, loc, log_scale, logits, component_mask)
    ctx.family = family
    ctx.min_scale = min_scale


def _mixture_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    z, loc, log_scale, logits, component_mask = ctx.saved_tensors
    dz, dloc, dls, dlogits = torch.ops.mmtrain.masked_mixture_log_prob_backward(
        grad, z, loc, log_scale, logits, component_mask, ctx.family, ctx.min_scale
    )
    return dz, dloc, dls, dlogits, None, None, None


torch.library.register_autograd(
    "mmtrain::masked_mixture_log_prob", _mixture_backward, setup_context=_save_mixture_inputs
)


# ---------------------------------------------------------------------------------------------
# Public entry point (the Triton implementation registered in OPS)
# ---------------------------------------------------------------------------------------------


def masked_mixture_log_prob_triton(
    z: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    logits: torch.Tensor,
    component_mask: torch.Tensor,
    family: str = "normal",
    min_scale: float = 0.0,
) -> torch.Tensor:
    """Fused `masked_mixture_log_prob_reference`.

    z: [..., B, d] (leading sample axes are flattened); loc, log_scale: [B, C, d] or [C, d];
    logits, component_mask: [B, C] or [C] (shared components broadcast over B) → [..., B].
    """
    if z.dim() < 2:
        raise ValueError(f"z must be [..., B, d]; got {tuple(z.shape)}")
    lead, (batch, dim) = z.shape[:-2], z.shape[-2:]
    n_comp = loc.shape[-2]
    loc = loc.expand(batch, n_comp, dim)
    log_scale = log_scale.expand(batch, n_comp, dim)
    logits = logits.expand(batch, n_comp)
    component_mask = component_mask.expand(batch, n_comp)
    out = torch.ops.mmtrain.masked_mixture_log_prob(
        z.reshape(-1, batch, dim), loc, log_scale, logits, component_mask, family, float(min_scale)
    )
    return out.reshape(*lead, batch)
