"""Inference bundles: `mmtrain export CKPT OUT` writes weights and a JSON config;
`mmtrain.load(PATH)` rebuilds the model from them without the training data (as an
`mmtrain.inference.InferenceModel`; `load` here returns the bare `MultiModalVAE`).

`resolve_model` is the one place that decides where a trained model is: `mmtrain.load`,
`mmtrain export` and `mmtrain eval` all go through it. It accepts an exported bundle, a
checkpoint directory, a run directory (its `checkpoints/best` when there is one, else its
newest checkpoint), a folder of checkpoints, or a bundle on the Hugging Face Hub
(`"hf://ORG/NAME[@REVISION]"`, downloaded into the Hugging Face cache by `mmtrain.hub`).

A bundle holds `model.safetensors`, `config.json` and a model card, `README.md`
(`mmtrain.card`), with the evaluation's pictures under `pictures/`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmtrain.checkpoint import MODEL_FILE, load_weights, read_state, resolve_checkpoint
from mmtrain.errors import CheckpointError, PluginError
from mmtrain.model import MultiModalVAE
from mmtrain.registry import MODALITIES, check_provenance

BUNDLE_CONFIG = "config.json"
BUNDLE_FORMAT = "mmtrain-bundle/1"
#: a run's preferred checkpoint for inference, when its training picked one
BEST_CHECKPOINT = "best"


@dataclass(frozen=True)
class ModelSource:
    """Where a trained model is: its weights file and its description (the bundle's
    `config.json` or the checkpoint's `state.json`: config, model_signature, plugins,
    step)."""

    path: Path
    weights: Path
    description: dict[str, Any]
    checkpoint: Path | None = None

    @property
    def is_bundle(self) -> bool:
        return self.checkpoint is None

    @property
    def step(self) -> int | None:
        return self.description.get("step")

    @property
    def run_dir(self) -> Path | None:
        """The run directory of a checkpoint under `RUN/checkpoints/`, else None."""
        if self.checkpoint is not None and self.checkpoint.parent.name == "checkpoints":
            return self.checkpoint.parent.parent
        return None


def read_bundle(path: Path) -> dict[str, Any] | None:
    """The description of an exported bundle at `path`, or None when it is not one (a run
    directory also holds a `config.json`, without the bundle format)."""
    file = path / BUNDLE_CONFIG
    if not file.is_file():
        return None
    try:
        bundle = json.loads(file.read_text())
    except ValueError as error:
        if (path / MODEL_FILE).is_file():
            raise CheckpointError(f"{file} is corrupt: {error}") from None
        return None
    if not isinstance(bundle, dict) or not str(bundle.get("format", "")).startswith(
        "mmtrain-bundle"
    ):
        return None
    return bundle


def resolve_model(path: str | Path) -> ModelSource:
    """The trained model at `path`: a bundle, a checkpoint, a run directory (its best
    checkpoint, else its newest), a folder of checkpoints, or `"hf://ORG/NAME[@REVISION]"`,
    a bundle on the Hugging Face Hub (then `path` of the result is its folder in the cache)."""
    from mmtrain.card import CARD_FILE
    from mmtrain.hub import download_bundle, is_hub_uri

    if is_hub_uri(path):
        folder = download_bundle(str(path), [MODEL_FILE, BUNDLE_CONFIG, CARD_FILE])
        bundle = read_bundle(folder)
        if bundle is None:
            raise CheckpointError(f"{path} is not an mmtrain bundle (its config.json is not one)")
        return ModelSource(folder, folder / MODEL_FILE, bundle)
    if str(path).startswith("hf:/") and not Path(path).exists():
        raise CheckpointError(
            f"{str(path)!r} looks like a Hub URI with one slash (pathlib folds '//'); pass "
            "the string hf://ORG/NAME, not a Path"
        )
    path = Path(path)
    bundle = read_bundle(path)
    if bundle is not None:
        return ModelSource(path, path / MODEL_FILE, bundle)
    best = path / "checkpoints" / BEST_CHECKPOINT
    checkpoint = best if (best / "state.json").is_file() else resolve_checkpoint(path)
    return ModelSource(path, checkpoint / MODEL_FILE, read_state(checkpoint), checkpoint)


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    repo_id: str | None = None,
    license_id: str | None = None,
    eval_dir: Path | None = None,
) -> Path:
    """Write an inference bundle (weights, the config that rebuilds the model, and a model
    card: `mmtrain.card.write_model_card`) to `out`.

    The weights are loaded into the described model first, so a truncated or foreign
    file fails before anything is written; the bundle is assembled in a temporary sibling
    folder and renamed into place. `out` may be new, empty, or an earlier bundle (which is
    replaced); any other folder is refused. `repo_id` (the Hub repository it will be pushed
    to), `license_id` and `eval_dir` (default: the run's `eval/`) go into the card."""
    from mmtrain.card import write_model_card

    source = resolve_model(checkpoint)
    build_and_load(source)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and read_bundle(out) is None:
        raise CheckpointError(
            f"{out} exists and is not an mmtrain bundle; export to a new or empty folder"
        )
    bundle = {
        "format": BUNDLE_FORMAT,
        "step": source.step,
        "config": source.description["config"],
        "model_signature": source.description["model_signature"],
        "plugins": source.description.get("plugins", {}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir()
        shutil.copyfile(source.weights, temporary / MODEL_FILE)
        (temporary / BUNDLE_CONFIG).write_text(json.dumps(bundle, indent=1))
        write_model_card(
            temporary, source, repo_id=repo_id, license_id=license_id, eval_dir=eval_dir
        )
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise CheckpointError(f"cannot write the bundle {out}: {error}") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(temporary, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _check_plugins(bundle: dict[str, Any]) -> None:
    if bundle.get("plugins"):
        check_provenance(bundle["plugins"])


def build_and_load(source: ModelSource, device: str = "cpu") -> MultiModalVAE:
    """The model a `ModelSource` describes, with its weights, in eval mode."""
    from mmtrain.config import config_from_dict
    from mmtrain.factory import build_model

    description = source.description
    if "model_signature" not in description or "config" not in description:
        raise CheckpointError(
            f"{source.path} holds no model description (model_signature and config)"
        )
    _check_plugins(description)
    config = config_from_dict(description["config"])
    signature = description["model_signature"]
    plugins = {}
    for name, spec in signature["modalities"].items():
        if spec["kind"] not in MODALITIES:
            raise PluginError(f"modality plugin {spec['kind']!r} (for {name!r}) is not installed")
        plugins[name] = MODALITIES.get(spec["kind"])(**spec["options"])
    model = build_model(config.model, plugins)
    load_weights(model, source.weights, device)
    return model.to(device).eval()


def load(path: str | Path, device: str = "cpu") -> MultiModalVAE:
    """Rebuild a model for inference from a bundle, a checkpoint or a run directory."""
    return build_and_load(resolve_model(path), device)
