"""Fused masked mixture log density against its PyTorch reference: forward and backward.

On CPU these run in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from mmtrain import kernels, ops  # noqa: E402
from mmtrain.registry import OPS  # noqa: E402

mixture_log_prob = kernels.mixture_log_prob
masked_mixture_log_prob_reference = kernels.reference.masked_mixture_log_prob_reference

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
pytestmark = pytest.mark.usefixtures("triton_backend")

TOL = {torch.float32: {"rtol": 2e-4, "atol": 2e-5}, torch.float64: {"rtol": 1e-9, "atol": 1e-11}}

# (L, B, C, d, min_scale): C = 1, non-powers of two, min_scale exactly representable in fp32.
SHAPES = [
    (1, 3, 1, 4, 0.0),
    (2, 5, 3, 6, 0.25),
    (3, 4, 5, 8, 0.0),
    (1, 8, 7, 16, 0.125),
    (5, 2, 2, 3, 0.0),
]
MASKS = ["random", "all_false", "all_true"]
FAMILIES = ["normal", "laplace"]
Params = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _mask(kind: str, batch: int, n_comp: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "all_false":
        return torch.zeros(batch, n_comp, dtype=torch.bool, device=DEVICE)
    if kind == "all_true":
        return torch.ones(batch, n_comp, dtype=torch.bool, device=DEVICE)
    mask = torch.rand(batch, n_comp, generator=gen) < 0.5
    mask[0] = False  # no present component: density 0
    if batch > 1:
        mask[1] = False
        mask[1, n_comp // 2] = True  # a single present component
    if batch > 2:
        mask[2] = True
    return mask.to(DEVICE)


def _inputs(
    n_samples: int, batch: int, n_comp: int, dim: int, dtype: torch.dtype, seed: int = 0
) -> tuple[Params, torch.Generator]:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_samples, batch, dim, generator=gen, dtype=dtype)
    loc = torch.randn(batch, n_comp, dim, generator=gen, dtype=dtype)
    log_scale = 0.5 * torch.randn(batch, n_comp, dim, generator=gen, dtype=dtype)
    logits = torch.randn(batch, n_comp, generator=gen, dtype=dtype)
    return tuple(t.to(DEVICE).requires_grad_() for t in (z, loc, log_scale, logits)), gen  # type: ignore[return-value]


def _compare(
    params: Params,
    mask: torch.Tensor,
    family: str,
    min_scale: float,
    gen: torch.Generator,
) -> None:
    tol = TOL[params[0].dtype]
    got = ops.masked_mixture_log_prob(*params, mask, family, min_scale)
    want = masked_mixture_log_prob_reference(*params, mask, family, min_scale)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert not torch.isnan(got).any()
    empty_rows = ~mask.any(-1)
    assert torch.equal(torch.isneginf(got), empty_rows.expand_as(got))
    torch.testing.assert_close(got, want, **tol)
    grad = torch.randn(want.shape, generator=gen, dtype=want.dtype).to(DEVICE)
    got_grads = torch.autograd.grad(got, params, grad)
    want_grads = torch.autograd.grad(want, params, grad)
    for name, g, w in zip(("z", "loc", "log_scale", "logits"), got_grads, want_grads, strict=True):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g, w, **tol, msg=lambda m, n=name: f"d{n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L{}B{}C{}d{}s{}".format(*s))
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_reference(
    family: str,
    shape: tuple[int, int, int, int, float],
    mask_kind: str,
    dtype: torch.dtype,
) -> None:
    n_samples, batch, n_comp, dim, min_scale = shape
    params, gen = _inputs(n_samples, batch, n_comp, dim, dtype)
    mask = _mask(mask_kind, batch, n_comp, gen)
    # The comparison means something only if dispatch reaches the kernel, not the reference.
    op = OPS.get("masked_mixture_log_prob")
    assert ops.resolve(op.name, params[0].device, params[0]) is op.triton is not None
    _compare(params, mask, family, min_scale, gen)


@pytest.mark.parametrize("family", FAMILIES)
def test_many_samples_accumulate_across_chunks(
    family: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """L = 11 over chunks of 4 samples and tiles of 2 examples: the parameter gradients are
    summed across chunks inside one program, and the forward spans a 2-D grid."""
    monkeypatch.setattr(mixture_log_prob, "_TILE_ELEMENTS", {"forward": 64, "backward": 64})
    monkeypatch.setattr(mixture_log_prob, "_MAX_BLOCK_L", 4)
    assert mixture_log_prob._launch_config(11, 5, "backward")[:2] == (4, 1)
    params, gen = _inputs(11, 5, 3, 5, torch.float64, seed=1)
    mask = _mask("random", 5, 3, gen)
    _compare(params, mask, family, 0.25, gen)


def test_empty_rows_are_minus_inf_with_zero_gradients() -> None:
    params, _ = _inputs(3, 4, 3, 5, torch.float32)
    mask = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    mask = mask.to(DEVICE)
    out = ops.masked_mixture_log_prob(*params, mask)
    assert torch.isneginf(out[:, 0]).all() and torch.isfinite(out[:, 1:]).all()
    grads = torch.autograd.grad(out.sum(), params)
    z_grad, loc_grad, scale_grad, logit_grad = grads
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.equal(z_grad[:, 0], torch.zeros_like(z_grad[:, 0]))
    for g in (loc_grad, scale_grad, logit_grad):
        assert torch.equal(g[0], torch.zeros_like(g[0]))
    # the reference does the same
    ref_grads = torch.autograd.grad(masked_mixture_log_prob_reference(*params, mask).sum(), params)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, **TOL[torch.float32])


@pytest.mark.parametrize("family", FAMILIES)
def test_absent_components_contribute_nothing_even_if_non_finite(family: str) -> None:
    params, gen = _inputs(2, 4, 4, 6, torch.float64)
    mask = _mask("random", 4, 4, gen)
    z, loc, log_scale, logits = params
    poison = ~mask
    with torch.no_grad():
        loc[poison] = float("nan")
        log_scale[poison] = float("inf")
        logits[poison] = float("nan")
    _compare(params, mask, family, 0.0, gen)
    # row 1 has one present component: dropping the absent ones gives the same density
    keep = mask[1]
    sub = ops.masked_mixture_log_prob(
        z[:, 1:2], loc[1:2, keep], log_scale[1:2, keep], logits[1:2, keep], mask[1:2, keep], family
    )
    full = ops.masked_mixture_log_prob(*params, mask, family)
    torch.testing.assert_close(sub[:, 0], full[:, 1], **TOL[torch.float64])


def test_shared_components_broadcast_and_leading_sample_axes() -> None:
    """Prior-style components [C, d] shared over the batch; z [B, d] and [S, L, B, d]."""
    gen = torch.Generator().manual_seed(5)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        t = scale * torch.randn(*shape, generator=gen, dtype=torch.float64)
        return t.to(DEVICE).requires_grad_()

    loc, log_scale, logits = randn(3, 4), randn(3, 4, scale=0.3), randn(3)
    mask = torch.tensor([True, False, True], device=DEVICE)
    for z_shape in [(6, 4), (2, 3, 6, 4)]:
        z = randn(*z_shape)
        args = (z, loc, log_scale, logits, mask, "normal", 0.125)
        got = ops.masked_mixture_log_prob(*args)
        want = masked_mixture_log_prob_reference(*args)
        assert got.shape == z_shape[:-1]
        torch.testing.assert_close(got, want, **TOL[torch.float64])
        gg = torch.autograd.grad(got.sum(), (z, loc, log_scale, logits))
        gw = torch.autograd.grad(want.sum(), (z, loc, log_scale, logits))
        for a, b in zip(gg, gw, strict=True):
            torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_fp64(family: str) -> None:
    params, _ = _inputs(2, 2, 3, 2, torch.float64, seed=3)
    mask = torch.tensor([[True, False, True], [False, True, False]], device=DEVICE)

    def fn(*p: torch.Tensor) -> torch.Tensor:
        return ops.masked_mixture_log_prob(*p, mask, family, 0.25)

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_rejects_bad_inputs() -> None:
    params, _ = _inputs(1, 2, 3, 4, torch.float32)
    mask = torch.ones(2, 3, dtype=torch.bool, device=DEVICE)
    with pytest.raises(ValueError, match="family"):
        ops.masked_mixture_log_prob(*params, mask, "cauchy")
    with pytest.raises(ValueError, match="bool"):
        ops.masked_mixture_log_prob(*params, mask.float())


# -- low precision: GPU only (bf16 is broken in the interpreter) ---------------------------


@pytest.mark.skipif(not CUDA, reason="fp16/bf16 kernels are checked on a GPU only")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 512, 5, 32), (8, 97, 16, 64)])
def test_low_precision_error_within_twice_torch(
    family: str, dtype: torch.dtype, shape: tuple[int, int, int, int]
) -> None:
    """flash-attention's rule: error vs an fp32 reference ≤ 2× PyTorch's own in `dtype`."""
    params, gen = _inputs(*shape, torch.float32, seed=4)
    mask = _mask("all_true", shape[1], shape[2], gen)
    low = [t.detach().to(dtype).requires_grad_() for t in params]
    exact = [t.detach().to(dtype).float().requires_grad_() for t in params]
    want = masked_mixture_log_prob_reference(*exact, mask, family)
    torch_low = masked_mixture_log_prob_reference(*low, mask, family)
    kernel = ops.masked_mixture_log_prob(*low, mask, family)
    grad = torch.randn(want.shape, generator=gen).to(DEVICE)
    want_g = torch.autograd.grad(want, exact, grad)
    torch_g = torch.autograd.grad(torch_low, low, grad.to(dtype))
    kernel_g = torch.autograd.grad(kernel, low, grad.to(dtype))
    for w, t, k in zip((want, *want_g), (torch_low, *torch_g), (kernel, *kernel_g), strict=True):
        torch_err = (t.float() - w).abs().max().item()
        kernel_err = (k.float() - w).abs().max().item()
        assert kernel_err <= 2 * torch_err + 1e-6, (kernel_err, torch_err)
