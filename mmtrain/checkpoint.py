"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a directory `step-00001234/` holding exactly
  model.safetensors       the model's state (safetensors' save_model handles shared tensors)
  optimizer.safetensors   the optimizer state flattened to tensors; its structure (param
                          groups, per-parameter keys, Python scalars) in the file's metadata
  state.json              step, epoch, data position, RNG states, resolved config, plugins
It is written under a temporary name and renamed, so a crash never leaves a half-written
checkpoint under a final name. Loading reads only these three files; anything else in the
directory (a planted `.pkl` or `.bin`) is ignored, and nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from mmtrain.errors import CheckpointError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CHECKPOINT_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [
        path
        for path in directory.iterdir()
        if _NAME.match(path.name) and (path / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def resolve_checkpoint(path: str | Path, search_dir: Path | None = None) -> Path:
    """A checkpoint directory from a path, a run directory, or `latest`."""
    if str(path) == "latest":
        if search_dir is None:
            raise CheckpointError("--resume latest needs the run's output directory")
        found = list_checkpoints(search_dir / "checkpoints")
        if not found:
            raise CheckpointError(f"no checkpoint to resume from in {search_dir / 'checkpoints'}")
        return found[-1]
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    for candidate in (path / "checkpoints", path):
        found = list_checkpoints(candidate)
        if found:
            return found[-1]
    raise CheckpointError(f"{path} is not a checkpoint (no {STATE_FILE}) and holds none")


# ----------------------------------------------------------------------------- optimizer


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    structure: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param_id, entries in state["state"].items():
        scalars: dict[str, Any] = {}
        tensor_keys: list[str] = []
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value.detach().cpu().contiguous()
                tensor_keys.append(key)
            else:
                scalars[key] = value
        structure["state"][str(param_id)] = {"tensors": tensor_keys, "scalars": scalars}
    return tensors, structure


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for param_id, entry in structure["state"].items():
        values: dict[str, Any] = dict(entry["scalars"])
        for key in entry["tensors"]:
            values[key] = tensors[f"state.{param_id}.{key}"]
        state[int(param_id)] = values
    return {"state": state, "param_groups": structure["param_groups"]}


# ----------------------------------------------------------------------------- RNG


def _encode_bytes(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _decode_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as JSON-safe values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": _encode_bytes(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_encode_bytes(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_decode_bytes(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode_bytes(s) for s in state["cuda"]])


# ----------------------------------------------------------------------------- save / load


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    directory: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep_last: int = 3,
) -> Path:
    """Write `directory/step-XXXXXXXX` atomically; keep the newest `keep_last`."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    temporary = directory / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    save_model(model, str(temporary / MODEL_FILE))
    if optimizer is not None:
        tensors, structure = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(temporary / OPTIMIZER_FILE), {"structure": json.dumps(structure)})
    (temporary / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=1))
    for name in os.listdir(temporary):
        with open(temporary / name, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(temporary)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / STATE_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no {STATE_FILE}; not a checkpoint") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path / STATE_FILE} is corrupt: {error}") from None


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load weights (and optimizer state) in place; return the JSON state."""
    state = read_state(path)
    model_file = path / MODEL_FILE
    if not model_file.is_file():
        raise CheckpointError(f"{path} has no {MODEL_FILE}")
    try:
        missing, unexpected = load_model(model, str(model_file), strict=False)
    except Exception as error:  # safetensors raises several types for corrupt files
        raise CheckpointError(f"cannot load {model_file}: {error}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{model_file} does not fit this model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    if optimizer is not None:
        optimizer_file = path / OPTIMIZER_FILE
        if not optimizer_file.is_file():
            raise CheckpointError(f"{path} has no {OPTIMIZER_FILE} to resume the optimizer")
        with safe_open(str(optimizer_file), framework="pt") as handle:
            structure = json.loads(handle.metadata()["structure"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        optimizer.load_state_dict(_unflatten_optimizer(tensors, structure))
    return state
