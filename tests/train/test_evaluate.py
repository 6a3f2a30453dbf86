"""The training loop's held-out evaluation: the model's subset sampler, reconstruction
weight 1, the objective under its own name, the ELBO and the IS standard error."""

from __future__ import annotations

import pytest
import torch

from mmtrain import objectives
from mmtrain.config import config_from_dict
from mmtrain.model import MultiModalVAE
from mmtrain.train.loop import evaluate
from tests.helpers import build_small_model, random_batch


def _config(**model: object):
    return config_from_dict(
        {"model": {"latent_dim": 3, **model}, "train": {"eval_batches": 2, "eval_is_samples": 8}}
    )


def _batches(model: MultiModalVAE) -> list:
    return [random_batch(model, 12, seed=s, avail_prob=0.8) for s in (1, 2)]


@pytest.mark.parametrize("subset_mode", ["faithful", "uniform-size"])
def test_evaluation_samples_subsets_with_the_models_mode(
    subset_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = objectives.sample_subset_mask

    def spy(avail: torch.Tensor, mask_prob: float | None, mode: str) -> torch.Tensor:
        seen.append(mode)
        return original(avail, mask_prob, mode)

    monkeypatch.setattr(objectives, "sample_subset_mask", spy)
    model = build_small_model()
    config = _config(subset_mode=subset_mode)
    out = evaluate(model, _batches(model), config, torch.device("cpu"))  # type: ignore[arg-type]
    assert seen == [subset_mode, subset_mode]
    assert set(out) == {
        "eval/masked_objective",
        "eval/elbo",
        "eval/is_ll",
        "eval/is_ll_se",
        "eval/examples",
    }
    assert out["eval/is_ll_se"] > 0 and out["eval/examples"] == 24


@pytest.mark.parametrize("objective", ["masked", "mixture"])
def test_evaluation_uses_reconstruction_weight_one(objective: str) -> None:
    """A model trained with reconstruction weights evaluates exactly as the same network
    with weights 1; the weighted objective differs."""
    base = build_small_model()
    weighted = MultiModalVAE(
        dict(base.modalities), base.aggregator, base.prior, {"m0": 0.0, "m2": 4.0}
    )
    config = _config(objective=objective)
    batches = _batches(base)
    results = []
    for model in (base, weighted):
        torch.manual_seed(0)
        results.append(evaluate(model, batches, config, torch.device("cpu")))  # type: ignore[arg-type]
    assert results[0] == results[1]
    key = f"eval/{objective}_objective"
    assert key in results[0] and "eval/elbo" in results[0]
    torch.manual_seed(0)
    with torch.no_grad():
        trained_value = objectives.ObjectiveModule(weighted, objective)(batches[0])
        torch.manual_seed(0)
        unit_value = objectives.ObjectiveModule(base, objective)(batches[0])
    trained_value = trained_value.per_example.mean()
    unit_value = unit_value.per_example.mean()
    assert not torch.isclose(trained_value, unit_value)
