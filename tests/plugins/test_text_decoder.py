"""The text plugin's autoregressive decoder against brute-force enumeration of all strings."""

from __future__ import annotations

import itertools

import pytest
import torch

from mmtrain.errors import ConfigError
from mmtrain.likelihoods import AutoregressiveCategoricalLikelihood
from mmtrain.modality import create_modality
from mmtrain.testing import check_modality

LENGTH, SYMBOLS, HIDDEN = 3, 3, 5


def _all_strings() -> torch.Tensor:
    """Every one-hot string of LENGTH symbols, `[SYMBOLS**LENGTH, LENGTH, SYMBOLS]`."""
    rows = list(itertools.product(range(SYMBOLS), repeat=LENGTH))
    return torch.nn.functional.one_hot(torch.tensor(rows), SYMBOLS).double()


def _likelihood() -> AutoregressiveCategoricalLikelihood:
    torch.manual_seed(0)
    return AutoregressiveCategoricalLikelihood((LENGTH, SYMBOLS), hidden_size=HIDDEN).double()


def test_probabilities_of_all_strings_sum_to_one() -> None:
    likelihood = _likelihood()
    strings = _all_strings()
    params = torch.randn(4, HIDDEN, dtype=torch.float64)
    for context in params:
        log_p = likelihood.log_prob(context.expand(len(strings), HIDDEN), strings)
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def test_greedy_distributions_are_the_conditionals_of_the_joint() -> None:
    likelihood = _likelihood()
    strings = _all_strings()
    context = torch.randn(HIDDEN, dtype=torch.float64)
    joint = likelihood.log_prob(context.expand(len(strings), HIDDEN), strings).exp()
    steps = likelihood.mean(context[None])[0]
    symbols = strings.argmax(-1)
    prefix = torch.ones(len(strings), dtype=torch.bool)
    for t in range(LENGTH):
        conditional = torch.stack(
            [joint[prefix & (symbols[:, t] == c)].sum() for c in range(SYMBOLS)]
        )
        torch.testing.assert_close(steps[t], conditional / conditional.sum())
        prefix &= symbols[:, t] == steps[t].argmax()


def test_sample_axes_broadcast_like_one_sample_at_a_time() -> None:
    likelihood = _likelihood()
    strings = _all_strings()[:6]
    params = torch.randn(2, 6, HIDDEN, dtype=torch.float64)
    many = likelihood.log_prob(params, strings)
    assert many.shape == (2, 6)
    for sample in range(2):
        torch.testing.assert_close(many[sample], likelihood.log_prob(params[sample], strings))
    assert likelihood.mean(params).shape == (2, 6, LENGTH, SYMBOLS)


def test_text_plugin_with_the_autoregressive_decoder_passes_the_conformance_kit() -> None:
    plugin = create_modality("text", {"length": 6, "decoder": "autoregressive"})
    report = check_modality(plugin, ["five", "two", ""], [3, "much too long"])
    assert {"decoder", "log_prob", "gradients", "safetensors round trip"} <= set(report.passed)


def test_bad_decoder_size_fails_clearly() -> None:
    with pytest.raises(ConfigError, match="decoder_hidden"):
        create_modality("text", {"decoder": "autoregressive", "decoder_hidden": 0})


def test_conformance_kit_enumerates_small_sequences() -> None:
    plugin = create_modality(
        "text", {"length": 3, "alphabet": "ab ", "decoder": "autoregressive", "decoder_hidden": 4}
    )
    report = check_modality(plugin, ["ab", "b"], ["abc"])
    assert "normalisation" in report.passed
