"""`mmtrain.load(PATH)` → `InferenceModel` (issue 13, item 5): raw rows decoded by the
plugins, encode / reconstruct / generate / sample / log_likelihood in batches, previews; the
README's example runs as written against a tiny digits run trained here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import mmtrain
from mmtrain.batch import Batch
from mmtrain.config import load_config
from mmtrain.data.embedded import ensure_embedded
from mmtrain.errors import ConfigError, DataError
from mmtrain.evaluation.likelihood import subset_importance_sampling
from mmtrain.evaluation.subsets import Subset
from mmtrain.train.loop import train

REPO = Path(__file__).resolve().parents[1]

#: configs/digits.yaml made small: narrow networks, a few steps, validation every 2 steps
TINY_DIGITS = [
    "train.steps=4",
    "train.log_every=2",
    "train.eval_every=2",
    "train.eval_batches=1",
    "train.eval_is_samples=2",
    "train.keep_best={metric: eval/is_ll}",
    "data.batch_size=32",
    "model.latent_dim=4",
    "model.feature_dim=16",
    "model.aggregator_options={pooling_size: 16, hidden_size: 16}",
    "data.modalities.mnist.options.hidden_channels=[8]",
    "data.modalities.optdigits.options.hidden_channels=[8]",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as the README assumes it: `data/digits` (the dataset's parquet files) and
    `runs/digits` (a tiny run that kept a best checkpoint)."""
    root = tmp_path_factory.mktemp("inference")
    shutil.copytree(ensure_embedded("digits"), root / "data" / "digits")
    config = load_config(
        REPO / "configs" / "digits.yaml", [f"output_dir={root / 'runs' / 'digits'}", *TINY_DIGITS]
    )
    torch.manual_seed(0)
    train(config, progress=False)
    return root


@pytest.fixture(scope="module")
def model(workspace: Path) -> mmtrain.InferenceModel:
    return mmtrain.load(workspace / "runs" / "digits")


@pytest.fixture(scope="module")
def rows(workspace: Path) -> list[dict]:
    """Ten test rows as dataset rows; three of them lack a modality (None, or no key)."""
    files = sorted((workspace / "data" / "digits").glob("test-*.parquet"))
    found = pq.read_table(files[0]).slice(0, 10).to_pylist()
    found[1]["mnist"] = None
    found[2]["text"] = None
    del found[3]["optdigits"]
    return found


def readme_example() -> str:
    """The Python block of README's "A trained model from Python"."""
    text = (REPO / "README.md").read_text()
    section = text.split("### A trained model from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README lost its inference example"
    return match.group(1)


def test_the_readme_example_runs_as_written(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(workspace)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)  # noqa: S102
    loaded = namespace["model"]
    assert loaded.source.checkpoint == Path("runs", "digits", "checkpoints", "best")
    assert namespace["posterior"].samples.shape == (10, 8, loaded.latent_dim)
    assert namespace["estimate"].log_likelihood.shape == (8,)
    assert namespace["words"]["text"].shape == (8, 8, loaded.plugin("text").num_symbols)
    width, height = Image.open(workspace / "prior-sample.png").size
    assert width == height >= 28
    printed = capsys.readouterr().out
    assert "torch.Size([8, 4])" in printed


def decoded_by_hand(model: mmtrain.InferenceModel, rows: list[dict]) -> Batch:
    """The rows decoded cell by cell with `decode_cell`: the reference for `to_batch`."""
    x, avail = {}, torch.zeros(len(rows), len(model.modality_names), dtype=torch.bool)
    for index, name in enumerate(model.modality_names):
        plugin = model.plugin(name)
        values = torch.zeros(len(rows), *plugin.event_shape)
        for i, row in enumerate(rows):
            if row.get(name) is not None:
                values[i] = plugin.decode_cell(row[name])
                avail[i, index] = True
        x[name] = values
    return Batch(x, avail)


def test_rows_columns_and_batches_are_decoded_alike(
    model: mmtrain.InferenceModel, rows: list[dict]
) -> None:
    reference = decoded_by_hand(model, rows)
    assert not bool(reference.avail.all()), "the example rows should miss some modality"
    columns = {key: [row.get(key) for row in rows] for key in rows[0]}
    for given in (rows, columns):
        batch = model.to_batch(given)
        assert torch.equal(batch.avail, reference.avail)
        assert all(torch.equal(batch.x[n], reference.x[n]) for n in model.modality_names)


def test_encode_is_q_of_the_given_subset_in_any_batching(
    model: mmtrain.InferenceModel, rows: list[dict]
) -> None:
    batch = decoded_by_hand(model, rows)
    only_text = batch.avail & torch.tensor([n == "text" for n in model.modality_names])
    with torch.no_grad():
        expected = model.model.encode(batch, only_text).mean
    for batch_size in (3, 256):
        posterior = model.encode(rows, given=["text"], batch_size=batch_size)
        torch.testing.assert_close(posterior.mean, expected)
        assert posterior.samples is None
    everything = model.encode(rows, samples=5, batch_size=4)
    with torch.no_grad():
        torch.testing.assert_close(everything.mean, model.model.encode(batch).mean)
    assert everything.samples is not None and everything.samples.shape == (5, len(rows), 4)


def test_generate_decodes_the_targets_from_the_posterior(
    model: mmtrain.InferenceModel, rows: list[dict]
) -> None:
    batch = decoded_by_hand(model, rows)
    with torch.no_grad():
        z = model.model.encode(batch).mean
        text = model.model.modalities["text"]
        expected = text.likelihood.mean(text.decode(z))
    got = model.generate(rows, targets=["text"], sample=False, batch_size=4)
    assert list(got) == ["text"]
    torch.testing.assert_close(got["text"], expected)
    torch.testing.assert_close(model.reconstruct(rows)["text"], expected)
    drawn = model.generate(rows, given=["mnist"], batch_size=4)
    assert set(drawn) == set(model.modality_names)
    assert drawn["mnist"].shape == (len(rows), 1, 28, 28)


def test_log_likelihood_is_the_evaluations_estimate(
    model: mmtrain.InferenceModel, rows: list[dict]
) -> None:
    """On rows observing the text, log p̂(x_text) equals `mmtrain eval`'s estimate with the
    same draws; rows observing nothing of S get exactly 0."""
    batch = decoded_by_hand(model, rows)
    index = model.modality_names.index("text")
    observed = torch.nonzero(batch.avail[:, index]).flatten()
    selected = [rows[i] for i in observed.tolist()]
    torch.manual_seed(3)
    got = model.log_likelihood(selected, samples=16, modalities=["text"], batch_size=1000)
    torch.manual_seed(3)
    subset = Subset((index,), ("text",))
    expected = subset_importance_sampling(model.model, batch.take(observed), subset, 16)
    torch.testing.assert_close(got.log_likelihood, expected.log_likelihood)
    torch.testing.assert_close(got.stderr, expected.stderr)
    nothing = [{"text": None, "mnist": None, "optdigits": None}]
    with pytest.raises(DataError, match="none of the model's modalities|no rows"):
        model.log_likelihood([{"label": 3}])
    assert model.log_likelihood(nothing + selected[:1]).log_likelihood[0] == 0.0


def test_sample_and_previews(model: mmtrain.InferenceModel) -> None:
    drawn = model.sample(5, batch_size=2)
    assert drawn["mnist"].shape == (5, 1, 28, 28) and drawn["optdigits"].shape == (5, 1, 8, 8)
    shown = model.preview(drawn)
    assert all(isinstance(image, Image.Image) for image in shown["mnist"])
    assert all(isinstance(text, str) and len(text) == 8 for text in shown["text"])
    assert len(shown["optdigits"]) == 5


def test_bad_input_is_a_clear_error(model: mmtrain.InferenceModel, rows: list[dict]) -> None:
    with pytest.raises(ConfigError, match="unknown modality 'mnits'; did you mean 'mnist'"):
        model.encode(rows, given=["mnits"])
    with pytest.raises(DataError, match="row 1, modality 'text'"):
        model.encode([{"text": "one"}, {"text": 7}])
    with pytest.raises(DataError, match="none of the model's modalities"):
        model.encode([{"picture": b""}])
    with pytest.raises(ConfigError, match="batch_size"):
        model.reconstruct(rows, batch_size=0)


def test_import_mmtrain_stays_light() -> None:
    code = "import sys, mmtrain; mmtrain.load; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr
