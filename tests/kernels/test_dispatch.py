"""Kernel dispatch (`MMTRAIN_KERNELS`, `set_backend`), the torch custom ops and torch.compile."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from mmtrain import kernels, ops
from mmtrain.errors import ConfigError
from mmtrain.ops import KernelOp
from mmtrain.registry import OPS

reference = kernels.reference
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

OP_NAMES = [
    "masked_set_attention",
    "masked_set_attention_pooled",
    "masked_set_attention_two_mask",
    "masked_mixture_log_prob",
]


@pytest.fixture(autouse=True)
def _restore_backend() -> Iterator[None]:
    yield
    ops.set_backend(None)


def _attention_inputs(
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(3, 2, 5, 4, generator=gen, dtype=dtype).to(DEVICE).requires_grad_()
        for _ in range(3)
    )
    mask = torch.tensor([[0, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 1, 0, 1, 1]], dtype=torch.bool)
    sub = mask & torch.tensor([1, 0, 1, 0, 1], dtype=torch.bool)
    return q, k, v, mask.to(DEVICE), sub.to(DEVICE)


def _mixture_inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    z, loc, log_scale, logits = (
        (scale * torch.randn(*shape, generator=gen)).to(DEVICE).requires_grad_()
        for shape, scale in [((2, 3, 4), 1.0), ((3, 5, 4), 1.0), ((3, 5, 4), 0.5), ((3, 5), 1.0)]
    )
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    return z, loc, log_scale, logits, mask.to(DEVICE)


def test_every_op_is_registered_with_its_reference() -> None:
    for name in OP_NAMES:
        op = OPS.get(name)
        assert isinstance(op, KernelOp) and op.name == name
        assert op.reference is getattr(reference, f"{name}_reference")
    assert set(OP_NAMES) <= set(OPS.names())


def test_triton_registered_when_importable() -> None:
    pytest.importorskip("triton")
    for name in OP_NAMES:
        assert OPS.get(name).triton is not None


def test_registers_references_without_triton() -> None:
    """Triton is optional: without it every op keeps its reference and says why."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import mmtrain.kernels\n"
        "from mmtrain.registry import OPS\n"
        f"for name in {OP_NAMES!r}:\n"
        "    op = OPS._entries[name].obj\n"
        "    assert op.triton is None and op.reference is not None, name\n"
        "    assert 'mmtrain[kernels]' in op.triton_unavailable_reason, op\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_torch_backend_returns_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMTRAIN_KERNELS", "torch")
    for name in OP_NAMES:
        assert ops.resolve(name, torch.device("cpu")) is OPS.get(name).reference
    q, k, v, mask, _ = _attention_inputs()
    torch.testing.assert_close(
        ops.masked_set_attention(q, k, v, mask),
        reference.masked_set_attention_reference(q, k, v, mask),
        rtol=0,
        atol=0,
    )


def test_set_backend_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMTRAIN_KERNELS", "triton")
    ops.set_backend("torch")
    assert ops.current_backend() == "torch"
    ops.set_backend(None)
    assert ops.current_backend() == "triton"


def test_auto_uses_the_reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMTRAIN_KERNELS", "auto")
    for name in OP_NAMES:
        assert ops.resolve(name, torch.device("cpu")) is OPS.get(name).reference


@pytest.mark.skipif(bool(kernels.TRITON_UNAVAILABLE_REASON), reason="triton not importable")
def test_auto_takes_the_reference_for_shapes_the_kernels_do_not_handle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On CUDA, `auto` picks Triton for sets up to MAX_SET_SIZE and the reference beyond (the
    fused set attention refuses larger sets); an explicit `triton` keeps the kernel, whose
    error names the limit. Dispatch only looks at shapes, so CPU tensors stand in."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("MMTRAIN_KERNELS", "auto")
    cuda = torch.device("cuda")
    op = OPS.get("masked_set_attention")
    for size, expected in (
        (kernels.MAX_SET_SIZE, op.triton),
        (kernels.MAX_SET_SIZE + 1, op.reference),
    ):
        q = torch.zeros(1, 1, size, 8)
        mask = torch.ones(1, size, dtype=torch.bool)
        assert ops.resolve("masked_set_attention", cuda, q, q, q, mask) is expected, size
    # Sets wider than MAX_SET_ELEMENTS once padded (M > 16 with Dh > 128) go to the reference.
    pooled = OPS.get("masked_set_attention_pooled")
    for size, width, expected in (
        (32, 128, pooled.triton),
        (16, 256, pooled.triton),
        (17, 129, pooled.reference),
        (kernels.MAX_SET_SIZE, kernels.MAX_HEAD_DIM, pooled.reference),
    ):
        q = torch.zeros(1, 1, size, width)
        mask = torch.ones(1, size, dtype=torch.bool)
        got = ops.resolve("masked_set_attention_pooled", cuda, q, q, q, mask)
        assert got is expected, (size, width)
    wide = torch.zeros(1, 1, 4, kernels.MAX_HEAD_DIM + 1)
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert ops.resolve("masked_set_attention_pooled", cuda, wide, wide, wide, mask) is (
        OPS.get("masked_set_attention_pooled").reference
    )
    z = torch.zeros(1, 2, kernels.MAX_LATENT_DIM + 1)
    mixture = OPS.get("masked_mixture_log_prob")
    assert ops.resolve("masked_mixture_log_prob", cuda, z) is mixture.reference
    assert ops.resolve("masked_mixture_log_prob", cuda, z[..., :4]) is mixture.triton
    monkeypatch.setenv("MMTRAIN_KERNELS", "triton")
    big = torch.zeros(1, 1, kernels.MAX_SET_SIZE + 1, 8)
    assert ops.resolve("masked_set_attention", cuda, big) is op.triton


def test_auto_never_raises_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = KernelOp("fake", reference.masked_set_attention_reference, None, "no triton here")
    monkeypatch.setattr(OPS._entries["masked_set_attention"], "obj", missing)
    monkeypatch.setenv("MMTRAIN_KERNELS", "auto")
    assert ops.resolve("masked_set_attention", torch.device("cuda")) is missing.reference


def test_explicit_triton_without_implementation_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = KernelOp("fake", reference.masked_set_attention_reference, None, "no triton here")
    monkeypatch.setattr(OPS._entries["masked_set_attention"], "obj", missing)
    ops.set_backend("triton")
    with pytest.raises(ConfigError, match="no triton here"):
        ops.resolve("masked_set_attention", torch.device("cuda"))


def test_explicit_triton_on_cpu_outside_the_interpreter_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ops.set_backend("triton")
    with pytest.raises(ConfigError, match="CUDA"):
        ops.resolve("masked_mixture_log_prob", torch.device("cpu"))


def test_invalid_backend_values_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown kernel backend"):
        ops.set_backend("cuda")
    monkeypatch.setenv("MMTRAIN_KERNELS", "fast")
    with pytest.raises(ConfigError, match="MMTRAIN_KERNELS"):
        ops.current_backend()
    with pytest.raises(ConfigError):
        q, k, v, mask, _ = _attention_inputs()
        ops.masked_set_attention(q, k, v, mask)


def test_both_backends_train_the_same() -> None:
    """A few SGD steps through every op give the same parameters with either backend."""
    pytest.importorskip("triton")

    def train(backend: str) -> list[torch.Tensor]:
        ops.set_backend(backend)
        gen = torch.Generator().manual_seed(7)
        w = torch.nn.Parameter(0.3 * torch.randn(6, 3 * 2 * 4, generator=gen).to(DEVICE))
        head = torch.nn.Parameter(0.1 * torch.randn(2 * 4, 2 * 2 * 3 + 2, generator=gen).to(DEVICE))
        x = torch.randn(4, 5, 6, generator=gen).to(DEVICE)
        mask = torch.rand(4, 5, generator=gen) < 0.6
        mask[0] = False
        sub = (mask & (torch.rand(4, 5, generator=gen) < 0.5)).to(DEVICE)
        mask = mask.to(DEVICE)
        z = torch.randn(1, 4, 3, generator=gen).to(DEVICE)
        all_present = torch.ones(4, 2, dtype=torch.bool, device=DEVICE)
        opt = torch.optim.SGD([w, head], lr=0.005)
        w_init = w.detach().clone()
        for _ in range(3):
            q, k, v = (t.reshape(4, 5, 2, 4).transpose(1, 2) for t in (x @ w).chunk(3, -1))
            full, part = ops.masked_set_attention_two_mask(q, k, v, mask, sub)
            pooled = ops.masked_set_attention_pooled(q, k, v, mask)
            elem = ops.masked_set_attention(q, k, v, sub)
            u = pooled.flatten(1) + torch.where(
                mask[:, :, None], full.transpose(1, 2).flatten(2), 0
            ).sum(1)
            u = u + torch.where(sub[:, :, None], (part + elem).transpose(1, 2).flatten(2), 0).sum(1)
            o = u @ head
            loc, log_scale = o[:, :12].reshape(4, 2, 6).chunk(2, -1)
            log_q = ops.masked_mixture_log_prob(
                z, loc, log_scale, o[:, 12:], all_present, "normal", 0.1
            )
            loss = -log_q.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert not torch.equal(w.detach(), w_init)
        return [w.detach().clone(), head.detach().clone()]

    for a, b in zip(train("torch"), train("triton"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -- torch custom ops and torch.compile ---------------------------------------------------


def test_custom_ops_pass_opcheck() -> None:
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch."""
    pytest.importorskip("triton")
    q, k, v, mask, sub = _attention_inputs()
    mm = torch.ops.mmtrain
    torch.library.opcheck(mm.masked_set_attention.default, (q, k, v, mask))
    torch.library.opcheck(mm.masked_set_attention_pooled.default, (q, k, v, mask))
    torch.library.opcheck(mm.masked_set_attention_two_mask.default, (q, k, v, mask, sub))
    mixture = _mixture_inputs()
    torch.library.opcheck(mm.masked_mixture_log_prob.default, (*mixture, "laplace", 0.25))


def test_fake_implementations_give_shapes_and_dtypes() -> None:
    pytest.importorskip("triton")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(7, 3, 5, 16, dtype=torch.float64)
        mask = torch.empty(7, 5, dtype=torch.bool)
        mm = torch.ops.mmtrain
        out = mm.masked_set_attention(q, q, q, mask)
        assert out.shape == (7, 3, 5, 16) and out.dtype == torch.float64
        pooled = mm.masked_set_attention_pooled(q, q, q, mask)
        assert pooled.shape == (7, 3, 16) and pooled.dtype == torch.float64
        a, b = mm.masked_set_attention_two_mask(q, q, q, mask, mask)
        assert a.shape == b.shape == (7, 3, 5, 16)
        z = torch.empty(4, 7, 6, dtype=torch.float32)
        loc = torch.empty(7, 3, 6, dtype=torch.float32)
        logits = torch.empty(7, 3, dtype=torch.float32)
        cmask = torch.empty(7, 3, dtype=torch.bool)
        lp = mm.masked_mixture_log_prob(z, loc, loc, logits, cmask, "normal", 0.0)
        assert lp.shape == (4, 7) and lp.dtype == torch.float32


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_torch_compile_around_the_ops(backend: str) -> None:
    """The ops are opaque nodes: the model around them compiles, forward and backward."""
    pytest.importorskip("triton")
    torch._dynamo.reset()
    ops.set_backend("triton")
    q, k, v, mask, sub = _attention_inputs()
    mixture = _mixture_inputs()

    def model(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, z: torch.Tensor, loc: torch.Tensor
    ) -> torch.Tensor:
        full, part = ops.masked_set_attention_two_mask(q.tanh(), k, v, mask, sub)
        pooled = ops.masked_set_attention_pooled(q, k * 2, v, mask)
        elem = ops.masked_set_attention(q, k, v.sin(), mask)
        log_q = ops.masked_mixture_log_prob(z, loc, *mixture[2:], "normal", 0.1)
        attention = torch.where(mask[:, None, :, None], full + part + elem, 0).sum() + pooled.sum()
        return attention + log_q.sum()

    args = (q, k, v, mixture[0], mixture[1])
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    got = compiled(*args)
    got_grads = torch.autograd.grad(got, args)
    ops.set_backend("torch")
    want = model(*args)
    want_grads = torch.autograd.grad(want, args)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
