"""Models on the Hub (issue 13, item 6): `mmtrain export RUN DIR --push-to-hub ORG/NAME`
writes a model card and uploads the bundle through `huggingface_hub`; `mmtrain.load(
"hf://ORG/NAME[@REVISION]")` reads it back through `snapshot_download`.

No test reaches the network. The upload goes through `HfApi.create_repo`, `create_branch`
and `upload_folder` replaced by recorders that copy into a local "remote" folder; the
download through the real `snapshot_download` under `HF_HUB_OFFLINE=1`, from a cache laid
out as huggingface_hub lays it out, filled from that remote folder."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load_file

import mmtrain
from mmtrain.bundle import export_bundle
from mmtrain.card import hub_dataset
from mmtrain.checkpoint import list_checkpoints
from mmtrain.cli import main
from mmtrain.config import load_config
from mmtrain.errors import CheckpointError, HubError
from mmtrain.train.loop import train
from tests.helpers import FAST_EVAL

TINY = """
data: {source: ivae-bimodal, batch_size: 250}
model: {aggregator: sum_pooling, latent_dim: 2, feature_dim: 16,
        aggregator_options: {pooling_size: 16, hidden_size: 16}}
train: {steps: 8, log_every: 2, eval_every: 4, eval_batches: 1, eval_split: null,
        checkpoint_every: 4, keep_last: 5}
"""


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with checkpoints at steps 4 and 8 and `mmtrain eval`'s output in RUN/eval."""
    root = tmp_path_factory.mktemp("hub-run")
    (root / "tiny.yaml").write_text(TINY)
    run = root / "run"
    train(load_config(root / "tiny.yaml", [f"output_dir={run}"]), progress=False)
    assert main(["eval", str(run), "--out", str(run / "eval"), *FAST_EVAL]) == 0
    return run


class FakeHub:
    """`HfApi`'s write methods, recording their calls and committing into `remote/REPO/REV`."""

    def __init__(self, remote: Path) -> None:
        self.remote = remote
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hub = self

        def create_repo(api: HfApi, repo_id: str, **options: Any) -> str:
            hub.calls.append(("create_repo", {"repo_id": repo_id, **options}))
            return f"https://huggingface.co/{repo_id}"

        def create_branch(api: HfApi, repo_id: str, **options: Any) -> None:
            hub.calls.append(("create_branch", {"repo_id": repo_id, **options}))

        def upload_folder(api: HfApi, **options: Any) -> SimpleNamespace:
            hub.calls.append(("upload_folder", options))
            target = hub.remote / options["repo_id"] / (options.get("revision") or "main")
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(options["folder_path"], target)
            commit = hashlib.sha1(str(sorted(files(target).items())).encode()).hexdigest()
            url = f"https://huggingface.co/{options['repo_id']}/commit/{commit}"
            return SimpleNamespace(commit_url=url, oid=commit)

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def download_into(self, cache: Path, repo_id: str, revision: str = "main") -> str:
        """What a download of `repo_id@revision` leaves in huggingface_hub's cache:
        `models--ORG--NAME/refs/REVISION` naming a commit, and `snapshots/COMMIT/` its files."""
        source = self.remote / repo_id / revision
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / revision).write_text(commit)
        shutil.copytree(source, repo / "snapshots" / commit)
        return commit


@contextlib.contextmanager
def refusing_server() -> Iterator[str]:
    """The endpoint of a local HTTP server that answers every request with 401."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def refuse(self) -> None:
            body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = refuse

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def table_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of every markdown table in `markdown`: first cell → the other cells."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| :"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """A logged-in user, a recording Hub, and an empty offline cache."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    fake = FakeHub(tmp_path / "remote")
    fake.install(monkeypatch)
    return fake


def test_the_card_holds_the_runs_config_metrics_plugins_and_pictures(
    evaluated_run: Path, tmp_path: Path
) -> None:
    bundle = export_bundle(evaluated_run, tmp_path / "bundle", repo_id="org/name", license_id="mit")
    card = ModelCard.load(bundle / "README.md")
    assert card.data.library_name == "mmtrain" and card.data.license == "mit"
    assert {"mmtrain", "sum_pooling", "masked", "label", "vector"} <= set(card.data.tags)
    assert card.data.datasets is None  # ivae-bimodal is embedded, not a Hub dataset
    text = card.text
    assert 'mmtrain.load("hf://org/name")' in text

    config_block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    assert yaml.safe_load(config_block) == json.loads((evaluated_run / "config.json").read_text())

    rows = table_rows(text)
    summary = json.loads((evaluated_run / "summary.json").read_text())
    assert rows["optimiser steps"] == [str(summary["steps"])] == ["8"]
    for label, key in [
        ("train masked objective (last window)", "train/masked_objective"),
        ("train ELBO (last window)", "train/elbo"),
        ("examples per second", "train/examples_per_second"),
    ]:
        assert float(rows[label][0]) == pytest.approx(summary[key], abs=5e-5), label

    results = json.loads((evaluated_run / "eval" / "metrics.json").read_text())
    headline = results["summary"]
    joint = rows["joint log-likelihood log p̂(x), all modalities"][0]
    assert joint == f"{headline['joint_ll']:.3f}"
    probe = rows[r"latent classification, q(z \| all)"][0]
    assert probe == f"{100 * headline['latent_probe_all']:.1f}%"
    assert rows["MCC weak, out-of-sample"][0] == f"{headline['mcc_weak_out']:.3f}"

    assert results["pictures"]
    for picture in results["pictures"].values():
        copied = bundle / "pictures" / picture
        assert copied.read_bytes() == (evaluated_run / "eval" / picture).read_bytes()
        assert f"(pictures/{picture})" in text

    state = json.loads(
        (list_checkpoints(evaluated_run / "checkpoints")[-1] / "state.json").read_text()
    )
    for kind, names in state["plugins"].items():
        for name, record in names.items():
            assert f"| {kind} | {name} | {record['package']} | {record['version']} |" in text
    assert f"mmtrain {mmtrain.__version__}" in text


def test_a_checkpoint_without_an_evaluation_gets_a_card_without_one(
    evaluated_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run, ignore=shutil.ignore_patterns("eval"))
    bundle = export_bundle(run, tmp_path / "bundle")
    text = (bundle / "README.md").read_text()
    assert "## Training" in text and "## Evaluation" not in text
    assert 'mmtrain.load("path/to/this/folder")' in text and "hf://org" not in text
    assert sorted(files(bundle)) == ["README.md", "config.json", "model.safetensors"]

    # the evaluation can live elsewhere; a folder without one is an error, nothing written
    elsewhere = export_bundle(run, tmp_path / "with-eval", eval_dir=evaluated_run / "eval")
    assert "## Evaluation" in (elsewhere / "README.md").read_text()
    with pytest.raises(CheckpointError, match="holds no metrics.json"):
        export_bundle(run, tmp_path / "bad", eval_dir=tmp_path)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]


def test_push_uploads_the_bundle_and_hf_uri_loads_it_bit_for_bit(
    evaluated_run: Path, tmp_path: Path, hub: FakeHub, capsys: pytest.CaptureFixture
) -> None:
    bundle = tmp_path / "bundle"
    argv = ["export", str(evaluated_run), str(bundle), "--push-to-hub", "org/name", "--private"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "hf://org/name" in capsys.readouterr().out
    assert hub.names() == ["create_repo", "upload_folder"]
    assert hub.calls[0][1] == {"repo_id": "org/name", "private": True, "exist_ok": True}
    upload = hub.calls[1][1]
    assert upload["repo_id"] == "org/name" and Path(upload["folder_path"]) == bundle
    uploaded = files(hub.remote / "org/name" / "main")
    assert uploaded == files(bundle)
    assert {"model.safetensors", "config.json", "README.md"} <= set(uploaded)
    assert any(name.startswith("pictures/") for name in uploaded)
    assert b'mmtrain.load("hf://org/name")' in uploaded["README.md"]

    commit = hub.download_into(tmp_path / "hf-cache", "org/name")
    model = mmtrain.load("hf://org/name")
    assert model.source.path == tmp_path / "hf-cache" / "models--org--name" / "snapshots" / commit
    newest = list_checkpoints(evaluated_run / "checkpoints")[-1]
    saved = load_file(str(newest / "model.safetensors"))
    mine = model.model.state_dict()
    assert saved and all(torch.equal(mine[k], saved[k]) for k in saved)

    original = mmtrain.load(evaluated_run)
    torch.manual_seed(0)
    expected = original.sample(5)
    torch.manual_seed(0)
    drawn = model.sample(5)
    assert expected.keys() == drawn.keys()
    assert all(torch.equal(expected[name], drawn[name]) for name in expected)


def test_a_revision_is_a_branch_on_push_and_after_the_at_sign_on_load(
    evaluated_run: Path, tmp_path: Path, hub: FakeHub
) -> None:
    step4, step8 = list_checkpoints(evaluated_run / "checkpoints")
    assert main(["export", str(step8), str(tmp_path / "b8"), "--push-to-hub", "org/name"]) == 0
    argv = ["export", str(step4), str(tmp_path / "b4"), "--push-to-hub", "org/name"]
    assert main([*argv, "--revision", "v1", "--commit-message", "step 4"]) == 0
    assert hub.names() == [
        *("create_repo", "upload_folder"),
        *("create_repo", "create_branch", "upload_folder"),
    ]
    branch = [options for name, options in hub.calls if name == "create_branch"]
    assert branch == [{"repo_id": "org/name", "branch": "v1", "exist_ok": True}]
    last = hub.calls[-1][1]
    assert last["revision"] == "v1" and last["commit_message"] == "step 4"

    cache = tmp_path / "hf-cache"
    hub.download_into(cache, "org/name", "main")
    hub.download_into(cache, "org/name", "v1")
    for uri, checkpoint in [("hf://org/name", step8), ("hf://org/name@v1", step4)]:
        loaded = mmtrain.load(uri)
        saved = load_file(str(checkpoint / "model.safetensors"))
        mine = loaded.model.state_dict()
        assert all(torch.equal(mine[k], saved[k]) for k in saved), uri
        assert loaded.source.step == int(checkpoint.name.split("-")[-1])


def test_offline_and_uncached_or_malformed_uris_are_clear_errors(hub: FakeHub) -> None:
    with pytest.raises(HubError, match="not in the Hugging Face cache"):
        mmtrain.load("hf://org/missing")
    for uri, message in [
        ("hf://", "ORG/NAME"),
        ("hf://just-a-name", "ORG/NAME"),
        ("hf://org/name/extra", "ORG/NAME"),
        ("hf://org/name@", "empty revision"),
        ("hf://org/bad name", "not a valid repository id"),
    ]:
        with pytest.raises(HubError, match=message) as error:
            mmtrain.load(uri)
        assert "\n" not in str(error.value)
    with pytest.raises(CheckpointError, match="one slash"):
        mmtrain.load(Path("hf://org/name"))


def test_a_failed_push_says_what_to_do_and_keeps_the_bundle(
    evaluated_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    bundle = tmp_path / "bundle"
    argv = ["export", str(evaluated_run), str(bundle), "--push-to-hub", "org/name"]

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "hf auth login" in err and str(bundle) in err and "Traceback" not in err
    assert {"model.safetensors", "config.json", "README.md"} <= set(files(bundle))

    # logged in, offline: the real HfApi refuses before any request leaves the machine
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    shutil.rmtree(bundle)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE=1" in err and str(bundle) in err
    assert (bundle / "model.safetensors").is_file()

    # online, but the Hub cannot be reached (a closed local port stands in for it)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot upload org/name" in err and str(bundle) in err and "Traceback" not in err

    # a Hub that refuses the token: a local server answering 401, as huggingface.co does
    with refusing_server() as endpoint:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "refused to write org/name (HTTP 401)" in err and "hf auth login" in err
    assert str(bundle) in err and (bundle / "model.safetensors").is_file()

    shutil.rmtree(bundle)
    assert main([*argv[:-1], "no-organisation"]) == 2
    assert "ORG/NAME" in capsys.readouterr().err
    assert main([*argv[:-2], "--revision", "v1"]) == 2
    assert "only apply with --push-to-hub" in capsys.readouterr().err
    assert not bundle.exists()  # the options are checked before anything is written


def test_the_card_names_a_hub_dataset_but_not_embedded_or_local_data(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    assert hub_dataset({"source": "ylecun/mnist"}) == "ylecun/mnist"
    assert hub_dataset({"source": "ivae-bimodal"}) is None
    assert hub_dataset({"source": str(tmp_path / "data")}) is None
    assert hub_dataset({"source": "./data/train-*.parquet"}) is None
