"""`mmtrain eval` end to end on tiny runs, and the pictures of every kind of modality
(`mmtrain compare`: tests/test_compare.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmtrain.batch import Batch
from mmtrain.cli import main
from mmtrain.config import load_config
from mmtrain.evaluation import pictures
from mmtrain.evaluation.subsets import enumerate_subsets
from mmtrain.model import MultiModalVAE
from mmtrain.priors import build_prior
from mmtrain.registry import AGGREGATORS, MODALITIES
from mmtrain.train.loop import train
from tests.helpers import FAST_EVAL

TINY = """
data: {source: ivae-bimodal, batch_size: 250}
model: {aggregator: sum_pooling, latent_dim: 2, feature_dim: 16,
        aggregator_options: {pooling_size: 16, hidden_size: 16}}
train: {steps: 8, log_every: 2, eval_every: 4, eval_batches: 1, eval_split: null}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval-run")
    (root / "tiny.yaml").write_text(TINY)
    train(load_config(root / "tiny.yaml", [f"output_dir={root / 'run'}"]), progress=False)
    return root / "run"


def test_eval_writes_metrics_report_and_pictures(tiny_run: Path, capsys) -> None:
    out = tiny_run.parent / "eval"
    assert main(["eval", str(tiny_run), "--out", str(out), *FAST_EVAL]) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert results["subsets"] == ["u", "x", "u+x"]
    assert results["data"]["rows"] == 300
    joint = results["log_likelihood"]["joint"]
    assert all(joint[s]["rows"] == 300 for s in results["subsets"])
    assert set(results["log_likelihood"]["conditional"]) == {"∅", "u", "x"}
    assert set(results["coherence"]) == {"u", "x", "u+x"}
    assert set(results["classifiers"]) == {"u", "x"}
    assert 0.0 <= results["classifiers"]["u"]["test_accuracy"] <= 1.0
    assert results["latent_probe"]["u"]["train_rows"] == 100
    assert 0.0 <= results["joint_coherence"] <= 1.0
    assert set(results["mcc"]) >= {"observed", "u", "x", "u+x"}
    assert "mcc_strong_out" in results["summary"] and "joint_ll" in results["summary"]
    report = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert set(linked) == {
        "cross_generation.png",
        "reconstructions.png",
        "prior_samples.png",
        "latent_projection.png",
        "training_curves.png",
        "coherence_by_size.png",
    }
    for name in linked:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 100
    assert "| u+x | 300 |" in report
    # M = 2: one modality given (u → x, x → u); no image modality, so no FID
    by_size = results["coherence_by_size"]
    assert [entry["given"] for entry in by_size["sizes"]] == [1]
    assert by_size["sizes"][0]["pairs"] == 2 and by_size["extra"] == {}
    cross = [results["coherence"]["u"]["x"]["accuracy"], results["coherence"]["x"]["u"]["accuracy"]]
    assert by_size["sizes"][0]["coherence"] == pytest.approx(sum(cross) / 2)
    assert "## Coherence by number of given modalities" in report
    assert "fid" not in results and "FID" not in report
    assert sorted(p.name for p in (out / "classifiers").iterdir()) == [
        "u.json",
        "u.safetensors",
        "x.json",
        "x.safetensors",
    ]
    assert "joint log-likelihood" in capsys.readouterr().out


def test_eval_reuses_cached_classifiers_and_skips_pictures(tiny_run: Path, capsys) -> None:
    first = tiny_run.parent / "eval-a"
    cache = tiny_run.parent / "classifiers"
    args = ["eval", str(tiny_run), "--classifiers", str(cache), "--no-pictures", *FAST_EVAL]
    assert main([*args, "--out", str(first)]) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    second = tiny_run.parent / "eval-b"
    assert main([*args, "--out", str(second)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == stamps
    assert "reused" in capsys.readouterr().err
    assert not list(second.glob("*.png"))
    a = json.loads((first / "metrics.json").read_text())
    b = json.loads((second / "metrics.json").read_text())
    assert a["summary"] == b["summary"]  # seeded: the same numbers twice


def test_eval_reads_bundles_and_other_sources(tiny_run: Path) -> None:
    """An exported bundle evaluates like its checkpoint (no training curves: a bundle has
    no logs), and --data points the evaluation at a copy of the data in local files."""
    from mmtrain.data.embedded import make_embedded

    bundle = tiny_run.parent / "bundle"
    assert main(["export", str(tiny_run), str(bundle)]) == 0
    files = tiny_run.parent / "files"
    make_embedded("ivae-bimodal", files, shards=2)
    out = tiny_run.parent / "eval-bundle"
    args = ["eval", str(bundle), "--data", str(files), "--out", str(out), *FAST_EVAL]
    assert main([*args, "--max-subset-modalities", "1"]) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert results["checkpoint"] == str(bundle) and results["step"] == 8
    assert results["data"]["source"] == str(files)
    assert results["subsets"] == ["u", "x", "u+x"]  # M = 2: the capped choice is every subset
    assert "training_curves" not in results["pictures"]


def test_eval_rejects_a_non_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def image_text_label_model() -> MultiModalVAE:
    """A small untrained model with an image, a text and a label modality."""
    torch.manual_seed(0)
    plugins = {
        "image": MODALITIES.get("image")(height=8, width=8, hidden_channels=(4,)),
        "text": MODALITIES.get("text")(length=6, hidden_channels=(8,)),
        "label": MODALITIES.get("label")(num_classes=3, hidden=(8,)),
    }
    modalities = {name: plugin.build(8, 3) for name, plugin in plugins.items()}
    aggregator = AGGREGATORS.get("sum_pooling")(
        8, 3, 1, "normal", 1e-3, pooling_size=8, hidden_size=8
    )
    return MultiModalVAE(modalities, aggregator, build_prior(3)).eval()


def test_pictures_draw_images_text_and_labels(tmp_path: Path) -> None:
    model = image_text_label_model()
    rows = 40
    text = MODALITIES.get("text")(length=6)
    words = ["one", "two", "three", "four"]
    batch = Batch(
        {
            "image": torch.rand(rows, 1, 8, 8),
            "text": torch.stack([text.decode_cell(words[i % 4]) for i in range(rows)]),
            "label": torch.nn.functional.one_hot(torch.arange(rows) % 3, 3).float()[:, None],
        },
        torch.rand(rows, 3) < 0.8,
        torch.arange(rows) % 3,
    )
    subsets = enumerate_subsets(model.modality_names)
    made = [
        pictures.cross_generation_figure(model, batch, subsets, tmp_path / "cross.png"),
        pictures.reconstructions_figure(model, batch, tmp_path / "recon.png"),
        pictures.prior_samples_figure(model, batch, tmp_path / "prior.png"),
        pictures.latent_projection_figure(model, batch, subsets, tmp_path / "latent.png"),
    ]
    for path in made:
        with Image.open(path) as image:
            assert image.width > 300 and image.height > 100
    strip = pictures.example_strip(model, "text", batch.x["text"][:3])
    assert strip.shape[0] == pictures.TILE and strip.shape[2] == 3
    assert pictures.categorical_text(model, "text", batch.x["text"][2]) == "three "
    assert pictures.categorical_text(model, "label", batch.x["label"][1]) == "1"
    shown, strength = pictures.text_glyphs(model, "text", batch.x["text"][2])
    assert shown == "three " and strength[:5] == [1.0] * 5  # padding: its best other symbol
    probabilities = 0.7 * batch.x["text"][2] + 0.3 / batch.x["text"].shape[-1]
    shown, strength = pictures.text_glyphs(model, "text", probabilities)
    assert shown.startswith("three") and 0.7 < strength[0] < 0.72
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "\n".join(json.dumps({"step": s, "train/masked_objective": -10.0 + s}) for s in range(5))
    )
    assert pictures.training_curves_figure(log, tmp_path / "curves.png") is not None
    log.write_text(json.dumps({"step": 1, "lr": 0.1}))
    assert pictures.training_curves_figure(log, tmp_path / "none.png") is None
