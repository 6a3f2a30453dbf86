"""The optimiser factory and the gradient post-processing against their plain references."""

from __future__ import annotations

import copy

import pytest
import torch

from mmtrain.errors import ConfigError
from mmtrain.optim import build_optimizer, postprocess_gradients
from tests.helpers import build_small_model, random_batch


def _gradients(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)


@pytest.mark.parametrize(("name", "weight_decay"), [("adam", 0.0), ("adam", 0.01), ("adamw", 0.1)])
def test_the_factory_optimizer_follows_one_tensor_at_a_time_adam(
    name: str, weight_decay: float
) -> None:
    model = build_small_model("sum_pooling")
    reference_model = copy.deepcopy(model)
    optimizer = build_optimizer(model.parameters(), name, 1e-2, weight_decay)
    assert optimizer.defaults["fused"] or optimizer.defaults["foreach"]
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    reference = cls(reference_model.parameters(), lr=1e-2, weight_decay=weight_decay, foreach=False)
    for step in range(5):
        # The loop changes the learning rate between steps (warm-up, decay).
        for opt in (optimizer, reference):
            opt.param_groups[0]["lr"] = 1e-2 * (step + 1) / 5
        _gradients(model, step)
        _gradients(reference_model, step)
        optimizer.step()
        reference.step()
    for (key, p), q in zip(model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=key)


def test_the_factory_optimizer_checkpoints_like_plain_adam() -> None:
    model = build_small_model("poe")
    optimizer = build_optimizer(model.parameters(), "adam", 1e-3)
    _gradients(model, 0)
    optimizer.step()
    plain = torch.optim.Adam(copy.deepcopy(model).parameters(), lr=1e-3, foreach=False)
    plain.load_state_dict(optimizer.state_dict())
    state = plain.state_dict()["state"]
    assert set(state) == set(optimizer.state_dict()["state"])
    assert all(float(s["step"]) == 1.0 for s in state.values())


def test_unknown_optimizer_is_refused() -> None:
    model = build_small_model("poe")
    with pytest.raises(ConfigError, match="unknown optimiser"):
        build_optimizer(model.parameters(), "sgd")


def _reference_postprocess(grads: list[torch.Tensor], clip: float) -> int:
    """The per-parameter form the single-read check replaced."""
    count = sum(int(torch.isnan(g).sum()) for g in grads)
    for g in grads:
        torch.nan_to_num_(g, nan=0.0, posinf=float("inf"), neginf=float("-inf"))
        g.clamp_(-clip, clip)
    return count


@pytest.mark.parametrize(
    "poison", ["none", "nan", "inf", "nan_and_inf", "all_nan", "huge"], ids=str
)
def test_elementwise_postprocessing_matches_the_per_parameter_reference(poison: str) -> None:
    model = build_small_model("sum_pooling")
    _gradients(model, 3)
    grads = [p.grad for p in model.parameters()]
    if poison in ("nan", "nan_and_inf"):
        grads[0][0] = float("nan")
        grads[-1].view(-1)[-1] = float("nan")
    if poison in ("inf", "nan_and_inf"):
        grads[1].view(-1)[0] = float("inf")
        grads[2].view(-1)[0] = float("-inf")
    if poison == "all_nan":
        grads[4].fill_(float("nan"))
    if poison == "huge":
        grads[0].mul_(1e38)  # squares overflow: the norm is inf, not NaN
    expected = [g.clone() for g in grads]
    expected_count = _reference_postprocess(expected, 2.0)
    count = postprocess_gradients(model.parameters(), "elementwise", 2.0)
    assert count == expected_count
    assert (count > 0) == (poison in ("nan", "nan_and_inf", "all_nan"))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_norm_postprocessing_zeroes_nan_then_clips_the_global_norm() -> None:
    model = build_small_model("poe")
    _gradients(model, 5)
    grads = [p.grad for p in model.parameters()]
    grads[0].view(-1)[0] = float("nan")
    assert postprocess_gradients(model.parameters(), "norm", 1.0) == 1
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert torch.isfinite(total) and float(total) == pytest.approx(1.0, rel=1e-5)


def test_a_training_step_with_the_factory_optimizer_matches_plain_adam() -> None:
    model = build_small_model("sum_pooling")
    reference_model = copy.deepcopy(model)
    batch = random_batch(model, 16)
    optimizer = build_optimizer(model.parameters(), "adam", 1e-3)
    reference = torch.optim.Adam(reference_model.parameters(), lr=1e-3, foreach=False)
    for m, opt in ((model, optimizer), (reference_model, reference)):
        for _ in range(3):
            h = m.encode_features(m.clean(batch))
            loss = m.posterior(h, batch.avail).mean.square().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            postprocess_gradients(m.parameters(), "elementwise", 100.0)
            opt.step()
    for (key, p), q in zip(model.named_parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=key)
