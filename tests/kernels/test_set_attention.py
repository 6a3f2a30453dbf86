"""Fused masked set attention against its PyTorch reference: forward and backward.

On CPU these run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the
shapes are small: at most 8 sets per case.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from mmtrain import kernels, ops  # noqa: E402
from mmtrain.registry import OPS  # noqa: E402

set_attention = kernels.set_attention
masked_set_attention_reference = kernels.reference.masked_set_attention_reference
masked_set_attention_pooled_reference = kernels.reference.masked_set_attention_pooled_reference
masked_set_attention_two_mask_reference = kernels.reference.masked_set_attention_two_mask_reference

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
pytestmark = pytest.mark.usefixtures("triton_backend")

TOL = {torch.float32: {"rtol": 1e-4, "atol": 2e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}

# (B, H, M, Dh): M = 1, non-powers of two, Dh not a power of two, up to 8 sets per case.
SHAPES = [(2, 1, 1, 4), (3, 2, 2, 8), (4, 2, 3, 16), (5, 1, 5, 8), (8, 1, 7, 4), (3, 2, 7, 6)]
MASKS = ["random", "all_false", "all_true"]
VARIANTS = ["plain", "pooled", "two_mask"]
OP_OF_VARIANT = {
    "plain": "masked_set_attention",
    "pooled": "masked_set_attention_pooled",
    "two_mask": "masked_set_attention_two_mask",
}


def _mask(kind: str, batch: int, set_size: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "all_false":
        return torch.zeros(batch, set_size, dtype=torch.bool, device=DEVICE)
    if kind == "all_true":
        return torch.ones(batch, set_size, dtype=torch.bool, device=DEVICE)
    mask = torch.rand(batch, set_size, generator=gen) < 0.5
    mask[0] = False  # an empty set
    if batch > 1:
        mask[1] = False
        mask[1, set_size // 2] = True  # a single present element
    if batch > 2:
        mask[2] = True
    return mask.to(DEVICE)


def _inputs(
    shape: tuple[int, int, int, int], dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]:
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (
        (2 * torch.randn(shape, generator=gen, dtype=dtype)).to(DEVICE).requires_grad_()
        for _ in range(3)
    )
    return q, k, v, gen


def _run(
    variant: str,
    impl: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    mask_b: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    if variant == "plain":
        fn = ops.masked_set_attention if impl == "triton" else masked_set_attention_reference
        return (fn(q, k, v, mask),)
    if variant == "pooled":
        fn = (
            ops.masked_set_attention_pooled
            if impl == "triton"
            else masked_set_attention_pooled_reference
        )
        return (fn(q, k, v, mask),)
    fn2 = (
        ops.masked_set_attention_two_mask
        if impl == "triton"
        else masked_set_attention_two_mask_reference
    )
    return tuple(fn2(q, k, v, mask, mask_b))


def _compare(
    variant: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    mask_b: torch.Tensor,
    gen: torch.Generator,
) -> None:
    tol = TOL[q.dtype]
    got = _run(variant, "triton", q, k, v, mask, mask_b)
    want = _run(variant, "reference", q, k, v, mask, mask_b)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, **tol)
    grads = [torch.randn(w.shape, generator=gen, dtype=w.dtype).to(DEVICE) for w in want]
    got_grads = torch.autograd.grad(got, (q, k, v), grads)
    want_grads = torch.autograd.grad(want, (q, k, v), grads)
    for name, g, w in zip("qkv", got_grads, want_grads, strict=True):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, w, **tol, msg=lambda m, n=name: f"d{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}M{}D{}".format(*s))
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_reference(
    variant: str, shape: tuple[int, int, int, int], mask_kind: str, dtype: torch.dtype
) -> None:
    q, k, v, gen = _inputs(shape, dtype)
    mask = _mask(mask_kind, shape[0], shape[2], gen)
    mask_b = mask & (torch.rand(mask.shape, generator=gen) < 0.5).to(DEVICE)
    # The comparison means something only if dispatch reaches the kernel, not the reference.
    op = OPS.get(OP_OF_VARIANT[variant])
    assert ops.resolve(op.name, q.device, q, k, v, mask) is op.triton is not None
    _compare(variant, q, k, v, mask, mask_b, gen)


@pytest.mark.parametrize("variant", VARIANTS)
def test_several_programs_and_ragged_tail(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of 2 sets over 7 (set, head) pairs: several programs and a partial last one."""
    two_mask = variant == "two_mask"
    # Two (8 × 64)-padded sets per tile, forward and backward (two masks halve the budget).
    budget = 2 * 2 * 8 * 64 if two_mask else 2 * 8 * 64
    monkeypatch.setattr(set_attention, "_TILE_ELEMENTS", {"forward": budget, "backward": budget})
    q, k, v, gen = _inputs((7, 1, 3, 8), torch.float32, seed=1)
    mask = _mask("random", 7, 3, gen)
    for phase in ("forward", "backward"):
        assert set_attention._launch_config(3, 8, phase, two_mask)[0] == 2
    _compare(variant, q, k, v, mask, mask & ~mask.roll(1, dims=1), gen)


def test_strided_inputs() -> None:
    """q, k, v as views of a [B, M, 3·H·Dh] projection, as an attention layer produces them."""
    gen = torch.Generator().manual_seed(2)
    batch, heads, set_size, head_dim = 3, 2, 5, 4
    proj = torch.randn(batch, set_size, 3 * heads * head_dim, generator=gen).to(DEVICE)
    proj.requires_grad_()
    q, k, v = (
        t.reshape(batch, set_size, heads, head_dim).transpose(1, 2) for t in proj.chunk(3, -1)
    )
    assert not q.is_contiguous()
    mask = _mask("random", batch, set_size, gen)
    got = ops.masked_set_attention(q, k, v, mask)
    want = masked_set_attention_reference(q, k, v, mask)
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    grad = torch.randn(got.shape, generator=gen).to(DEVICE).transpose(-1, -2).contiguous()
    grad = grad.transpose(-1, -2)  # a non-contiguous upstream gradient too
    (got_g,) = torch.autograd.grad(got, proj, grad)
    (want_g,) = torch.autograd.grad(want, proj, grad)
    torch.testing.assert_close(got_g, want_g, **TOL[torch.float32])


def test_all_false_sets_are_finite_and_pool_to_zero() -> None:
    q, k, v, _ = _inputs((3, 2, 4, 8), torch.float32)
    mask = torch.zeros(3, 4, dtype=torch.bool, device=DEVICE)
    out = ops.masked_set_attention(q, k, v, mask)
    assert torch.isfinite(out).all()
    # uniform attention over all M keys, whose values are absent and read as zeros
    assert torch.equal(out, torch.zeros_like(out))
    pooled = ops.masked_set_attention_pooled(q, k, v, mask)
    assert torch.equal(pooled, torch.zeros_like(pooled))
    pooled.sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.equal(t.grad, torch.zeros_like(t.grad))


def test_present_queries_ignore_absent_elements() -> None:
    """Changing absent elements' q, k, v changes nothing a present query sees."""
    q, k, v, gen = _inputs((4, 2, 5, 8), torch.float32)
    mask = _mask("random", 4, 5, gen)
    out = ops.masked_set_attention_pooled(q, k, v, mask)
    absent = ~mask[:, None, :, None]
    noise = 100 * torch.randn(q.shape, generator=gen).to(DEVICE)
    q2, k2, v2 = (torch.where(absent, t + noise, t) for t in (q, k, v))
    torch.testing.assert_close(ops.masked_set_attention_pooled(q2, k2, v2, mask), out)


FILLS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _fill_absent(t: torch.Tensor, mask: torch.Tensor, value: float) -> torch.Tensor:
    """`t` with the rows of absent elements set to `value`, as a new leaf."""
    absent = ~mask[:, None, :, None]
    return torch.where(absent, torch.full_like(t, value), t).detach().requires_grad_()


@pytest.mark.parametrize("fill", FILLS)
def test_reference_blind_to_nonfinite_absent_rows(fill: str) -> None:
    """NaN or ±inf in the q, k, v rows of absent elements: the same outputs as zeros there,
    finite, and exactly zero gradient into those rows (0 · NaN would be NaN)."""
    q, k, v, gen = _inputs((5, 2, 5, 4), torch.float64)
    mask = _mask("random", 5, 5, gen)
    clean = [_fill_absent(t, mask, 0.0) for t in (q, k, v)]
    dirty = [_fill_absent(t, mask, FILLS[fill]) for t in (q, k, v)]
    want = masked_set_attention_reference(*clean, mask)
    got = masked_set_attention_reference(*dirty, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    upstream = torch.randn(got.shape, generator=gen, dtype=got.dtype).to(got.device)
    for d, c in zip(
        torch.autograd.grad(got, dirty, upstream),
        torch.autograd.grad(want, clean, upstream),
        strict=True,
    ):
        assert torch.isfinite(d).all()
        torch.testing.assert_close(d, c, rtol=0, atol=0)
        absent = ~mask[:, None, :].expand(-1, d.shape[1], -1)
        assert absent.any() and (d[absent] == 0).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_reference_with_nonfinite_absent_rows(
    variant: str, fill: str, dtype: torch.dtype
) -> None:
    """The Triton kernels read absent rows as zeros too: forward and backward agree with the
    reference when those rows hold NaN or ±inf (for two masks: rows absent under both)."""
    q, k, v, gen = _inputs((6, 2, 5, 8), dtype, seed=4)
    mask = _mask("random", 6, 5, gen)
    mask_b = mask & (torch.rand(mask.shape, generator=gen) < 0.5).to(DEVICE)
    q, k, v = (_fill_absent(t, mask, FILLS[fill]) for t in (q, k, v))
    op = OPS.get(OP_OF_VARIANT[variant])
    assert ops.resolve(op.name, q.device, q, k, v, mask) is op.triton is not None
    _compare(variant, q, k, v, mask, mask_b, gen)


def test_permutation_equivariant_and_pooled_invariant() -> None:
    q, k, v, gen = _inputs((4, 2, 7, 8), torch.float32)
    mask = _mask("random", 4, 7, gen)
    perm = torch.randperm(7, generator=gen).to(DEVICE)
    out = ops.masked_set_attention(q, k, v, mask)
    out_p = ops.masked_set_attention(q[:, :, perm], k[:, :, perm], v[:, :, perm], mask[:, perm])
    torch.testing.assert_close(out_p, out[:, :, perm], **TOL[torch.float32])
    pooled = ops.masked_set_attention_pooled(q, k, v, mask)
    pooled_p = ops.masked_set_attention_pooled(
        q[:, :, perm], k[:, :, perm], v[:, :, perm], mask[:, perm]
    )
    torch.testing.assert_close(pooled_p, pooled, **TOL[torch.float32])


def test_two_mask_reads_once_and_equals_two_single_calls() -> None:
    q, k, v, gen = _inputs((5, 2, 5, 8), torch.float64)
    mask = _mask("random", 5, 5, gen)
    mask_b = mask & (torch.rand(mask.shape, generator=gen) < 0.5).to(DEVICE)
    out_a, out_b = ops.masked_set_attention_two_mask(q, k, v, mask, mask_b)
    torch.testing.assert_close(out_a, ops.masked_set_attention(q, k, v, mask), rtol=0, atol=1e-15)
    torch.testing.assert_close(out_b, ops.masked_set_attention(q, k, v, mask_b), rtol=0, atol=1e-15)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_fp64(variant: str) -> None:
    q, k, v, gen = _inputs((2, 1, 3, 2), torch.float64, seed=3)
    mask = torch.tensor([[True, False, True], [False, False, False]], device=DEVICE)
    mask_b = torch.tensor([[True, False, False], [False, False, False]], device=DEVICE)

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _run(variant, "triton", q, k, v, mask, mask_b)

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_rejects_bad_inputs() -> None:
    q, k, v, _ = _inputs((2, 1, 3, 4), torch.float32)
    with pytest.raises(ValueError, match="bool"):
        ops.masked_set_attention(q, k, v, torch.ones(2, 3, device=DEVICE))
    with pytest.raises(ValueError, match="share one shape"):
        ops.masked_set_attention(q, k[:, :, :2], v, torch.ones(2, 3, dtype=torch.bool))
    big = torch.zeros(1, 1, set_attention.MAX_SET_SIZE + 1, 4, device=DEVICE)
    with pytest.raises(ValueError, match="torch"):
        ops.masked_set_attention(
            big, big, big, torch.ones(1, big.shape[2], dtype=torch.bool, device=DEVICE)
        )
    wide = torch.zeros(1, 1, 17, 129, device=DEVICE)  # padded 32 × 256 > MAX_SET_ELEMENTS
    with pytest.raises(ValueError, match="next_power_of_2"):
        ops.masked_set_attention(
            wide, wide, wide, torch.ones(1, 17, dtype=torch.bool, device=DEVICE)
        )


def test_empty_batch() -> None:
    q = torch.zeros(0, 2, 3, 4, device=DEVICE)
    mask = torch.zeros(0, 3, dtype=torch.bool, device=DEVICE)
    assert ops.masked_set_attention(q, q, q, mask).shape == (0, 2, 3, 4)
    assert ops.masked_set_attention_pooled(q, q, q, mask).shape == (0, 2, 4)


# -- low precision: GPU only (bf16 is broken in the interpreter) ---------------------------


@pytest.mark.skipif(not CUDA, reason="fp16/bf16 kernels are checked on a GPU only")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("shape", [(64, 4, 5, 32), (33, 1, 16, 128), (16, 4, 32, 64)])
def test_low_precision_error_within_twice_torch(
    variant: str, dtype: torch.dtype, shape: tuple[int, int, int, int]
) -> None:
    """flash-attention's rule: error vs an fp32 reference ≤ 2× PyTorch's own in `dtype`."""
    q, k, v, gen = _inputs(shape, torch.float32, seed=4)
    mask = _mask("random", shape[0], shape[2], gen)
    mask_b = mask & (torch.rand(mask.shape, generator=gen) < 0.5).to(DEVICE)
    low = [t.detach().to(dtype).requires_grad_() for t in (q, k, v)]
    exact = [t.detach().to(dtype).float().requires_grad_() for t in (q, k, v)]
    want = _run(variant, "reference", *exact, mask, mask_b)
    torch_low = _run(variant, "reference", *low, mask, mask_b)
    kernel = _run(variant, "triton", *low, mask, mask_b)
    grads = [torch.randn(w.shape, generator=gen).to(DEVICE) for w in want]
    want_g = torch.autograd.grad(want, exact, grads)
    torch_g = torch.autograd.grad(torch_low, low, [g.to(dtype) for g in grads])
    kernel_g = torch.autograd.grad(kernel, low, [g.to(dtype) for g in grads])
    for w, t, kk in zip(
        (*want, *want_g), (*torch_low, *torch_g), (*kernel, *kernel_g), strict=True
    ):
        torch_err = (t.float() - w).abs().max().item()
        kernel_err = (kk.float() - w).abs().max().item()
        assert kernel_err <= 2 * torch_err + 1e-6, (kernel_err, torch_err)
