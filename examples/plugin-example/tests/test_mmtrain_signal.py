"""The plugin author's own tests: mmtrain's conformance kit, and a short training run of the
`signal` modality and `gated_attention` aggregator next to mmtrain's built-in `label`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mmtrain_signal import SignalPlugin

from mmtrain.batch import Batch
from mmtrain.model import MultiModalVAE
from mmtrain.objectives import masked_objective
from mmtrain.priors import build_prior
from mmtrain.registry import AGGREGATORS, MODALITIES, check_provenance, plugins_of, provenance
from mmtrain.testing import check_aggregator, check_modality

BAD_CELLS = ["a string", None, [1.0, 2.0], [[0.0] * 16] * 2, [float("nan")] * 16]


def test_registered_through_the_entry_point() -> None:
    assert MODALITIES.get("signal") is SignalPlugin
    entry = AGGREGATORS.entry("gated_attention")
    assert (entry.package, entry.version) == ("mmtrain-signal", "0.1.0")


@pytest.mark.parametrize("scale_mode", ["learned", "network"])
def test_signal_passes_the_kit(scale_mode: str) -> None:
    plugin = SignalPlugin(length=16, hidden_channels=(4, 8), scale_mode=scale_mode)
    good = [np.sin(np.linspace(0, 6, 16)), [0.0] * 16, torch.ones(1, 16)]
    check_modality(plugin, good_cells=good, bad_cells=BAD_CELLS)


def test_one_sample_signal_density_is_normalised() -> None:
    report = check_modality(SignalPlugin(length=1, hidden_channels=(4,)), [[0.3]], ["x"])
    assert "normalisation" in report.passed


@pytest.mark.parametrize(
    "name,components", [("gated_attention", 1), ("gated_attention_mixture", 3)]
)
def test_gated_attention_passes_the_kit(name: str, components: int) -> None:
    check_aggregator(
        name,
        num_components=components,
        hidden_size=8,
        attention_size=4,
    )


def test_trains_next_to_a_builtin_modality() -> None:
    torch.manual_seed(0)
    n, length, latent = 128, 16, 2
    label = torch.randint(0, 4, (n,))
    t = torch.linspace(0, 2 * math.pi, length)
    series = torch.sin((label[:, None] + 1) * t) + 0.1 * torch.randn(n, length)
    signal = MODALITIES.get("signal")(length=length, hidden_channels=(8, 8))
    classes = MODALITIES.get("label")(num_classes=4, hidden=(16,))
    x = {
        "signal": torch.stack([signal.decode_cell(row.tolist()) for row in series]),
        "label": torch.stack([classes.decode_cell(int(c)) for c in label]),
    }
    avail = torch.rand(n, 2) < 0.8
    model = MultiModalVAE(
        {"signal": signal.build(16, latent), "label": classes.build(16, latent)},
        AGGREGATORS.get("gated_attention")(16, latent, hidden_size=16, attention_size=8),
        build_prior(latent),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = masked_objective(model, Batch(x, avail))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item() / n)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0
    record = provenance(plugins_of(model))
    assert record["modality"]["signal"]["package"] == "mmtrain-signal"
    assert record["modality"]["label"]["package"] == "mmtrain"
    assert check_provenance(record) == []
