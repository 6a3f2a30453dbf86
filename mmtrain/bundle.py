"""Inference bundles: `mmtrain export CKPT OUT` writes weights and a JSON config;
`mmtrain.load(PATH)` rebuilds the model from them without the training data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_model

from mmtrain.checkpoint import MODEL_FILE, read_state, resolve_checkpoint
from mmtrain.config import config_from_dict
from mmtrain.errors import CheckpointError, PluginError
from mmtrain.model import MultiModalVAE
from mmtrain.registry import MODALITIES

BUNDLE_CONFIG = "config.json"


def export_bundle(checkpoint: str | Path, out: str | Path) -> Path:
    """Copy a checkpoint's weights and write the config needed to rebuild the model."""
    source = resolve_checkpoint(checkpoint)
    state = read_state(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / MODEL_FILE, out / MODEL_FILE)
    bundle = {
        "format": "mmtrain-bundle/1",
        "step": state["step"],
        "config": state["config"],
        "model_signature": state["model_signature"],
        "plugins": state.get("plugins", {}),
    }
    (out / BUNDLE_CONFIG).write_text(json.dumps(bundle, indent=1))
    return out


def _check_plugins(bundle: dict[str, Any]) -> None:
    try:
        from mmtrain.registry import check_provenance
    except ImportError:
        return
    if bundle.get("plugins"):
        check_provenance(bundle["plugins"])


def load(path: str | Path, device: str = "cpu") -> MultiModalVAE:
    """Rebuild a model for inference from a bundle (or a checkpoint directory)."""
    from mmtrain.train.loop import build_model

    path = Path(path)
    if (path / BUNDLE_CONFIG).is_file():
        bundle = json.loads((path / BUNDLE_CONFIG).read_text())
        weights = path / MODEL_FILE
    else:
        checkpoint = resolve_checkpoint(path)
        bundle = read_state(checkpoint)
        weights = checkpoint / MODEL_FILE
    if "model_signature" not in bundle:
        raise CheckpointError(f"{path} holds no model description (model_signature)")
    _check_plugins(bundle)
    config = config_from_dict(bundle["config"])
    signature = bundle["model_signature"]
    plugins = {}
    for name, spec in signature["modalities"].items():
        if spec["kind"] not in MODALITIES:
            raise PluginError(f"modality plugin {spec['kind']!r} (for {name!r}) is not installed")
        plugins[name] = MODALITIES.get(spec["kind"])(**spec["options"])
    model = build_model(config, plugins)
    missing, unexpected = load_model(model, str(weights), strict=False, device=device)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not fit the described model: {missing or unexpected}"
        )
    return model.to(device).eval()
