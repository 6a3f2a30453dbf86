"""Checkpoints without pickle: safetensors for tensors, JSON for everything else.

A checkpoint is a directory `step-00001234/` holding exactly
  model.safetensors       the model's state (safetensors' save_model handles shared tensors)
  optimizer.safetensors   the optimizer state flattened to tensors; its structure (param
                          groups, per-parameter keys, Python scalars) in the file's metadata
  state.json              step, epoch, data position, RNG states, resolved config, plugins
It is written under a temporary name and renamed, so a crash never leaves a half-written
checkpoint under a final name. A run may also keep `best/` beside them (`train.keep_best`),
written the same way and never pruned; `BEST_NAME`. Loading reads only these three files; anything else in the
directory (a planted `.pkl` or `.bin`) is ignored, and nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import errno
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
TEMPORARY_PREFIX = ".tmp-"
#: temporary folders of a checkpoint being written, or of a replaced one being removed
_TEMPORARY = re.compile(r"^\.tmp-(?:old-)?(?:step-\d{8}|best)-(\d+)$")
#: the folder of a run's best checkpoint, beside the `step-…` ones
BEST_NAME = "best"


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
    name: str | None = None,
) -> Path:
    """Write `directory/step-XXXXXXXX` (or `directory/name`, e.g. `best`) atomically; keep
    the newest `keep_last` step checkpoints.

    A failed write (a full disk, above all) removes the temporary folder, leaves every
    earlier checkpoint as it was and raises a one-line `CheckpointError` naming the
    directory and the bytes the checkpoint needs."""
    directory.mkdir(parents=True, exist_ok=True)
    name = name or checkpoint_name(step)
    final = directory / name
    temporary = directory / f"{TEMPORARY_PREFIX}{name}-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    optimizer_parts = None
    if optimizer is not None:
        optimizer_parts = _flatten_optimizer(optimizer.state_dict())
    state_text = json.dumps({"step": step, **state}, indent=1)
    try:
        temporary.mkdir()
        save_model(model, str(temporary / MODEL_FILE))
        if optimizer_parts is not None:
            tensors, structure = optimizer_parts
            save_file(
                tensors, str(temporary / OPTIMIZER_FILE), {"structure": json.dumps(structure)}
            )
        (temporary / STATE_FILE).write_text(state_text)
        for name in os.listdir(temporary):
            with open(temporary / name, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(temporary)
    except BaseException as error:  # safetensors reports I/O failures as its own error type
        shutil.rmtree(temporary, ignore_errors=True)
        if not isinstance(error, Exception):
            raise
        needed = checkpoint_bytes(model, optimizer_parts, state_text)
        raise _write_error(directory, step, needed, error) from None
    # A folder cannot be renamed over a non-empty one: the old one goes aside first, so the
    # final name only ever holds a whole checkpoint.
    replaced = directory / f"{TEMPORARY_PREFIX}old-{name}-{os.getpid()}"
    if final.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(temporary, final)
    _fsync_dir(directory)
    shutil.rmtree(replaced, ignore_errors=True)
    for old in list_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_bytes(
    model: nn.Module,
    optimizer_parts: tuple[dict[str, torch.Tensor], dict[str, Any]] | None,
    state_text: str,
) -> int:
    """About the size of a checkpoint on disk: the tensors' bytes plus the JSON."""
    tensors = list(model.state_dict().values())
    if optimizer_parts is not None:
        tensors += list(optimizer_parts[0].values())
    return sum(t.numel() * t.element_size() for t in tensors) + len(state_text.encode())


def _no_space(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return any(s in text for s in ("No space left", "os error 28", "Disk quota exceeded"))


def _write_error(directory: Path, step: int, needed: int, error: BaseException) -> CheckpointError:
    try:
        free = f", {shutil.disk_usage(directory).free / 1e6:.1f} MB are free"
    except OSError:
        free = ""
    size = f"needs about {needed / 1e6:.1f} MB ({needed:,} bytes){free}"
    previous = list_checkpoints(directory)
    kept = f"; the previous checkpoint {previous[-1].name} is intact" if previous else ""
    name = checkpoint_name(step)
    if _no_space(error):
        return CheckpointError(
            f"no space left on device while writing checkpoint {name} to {directory}: it "
            f"{size}{kept}. Free some space or set output_dir to a disk with room"
        )
    reason = " ".join(str(error).split()) or type(error).__name__
    return CheckpointError(
        f"cannot write checkpoint {name} to {directory} ({reason}); it {size}{kept}"
    )


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove the temporary checkpoint folders (`.tmp-step-N-PID`) left behind by processes
    that no longer run on this machine (killed while writing); a folder whose PID is alive
    is left alone, since that process may still be writing it. Returns what was removed."""
    if not directory.is_dir():
        return []
    removed = []
    for path in directory.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / STATE_FILE).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no {STATE_FILE}; not a checkpoint") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path / STATE_FILE} is corrupt: {error}") from None


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_weights(model: nn.Module, path: Path, device: str | torch.device = "cpu") -> None:
    """Load `path` (a model.safetensors) into `model`; a missing, truncated or foreign file
    is a one-line `CheckpointError` naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    except Exception as error:  # safetensors and torch raise several types for bad files
        raise CheckpointError(
            f"{path} is not a readable model file for this model: {_one_line(error)}"
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the described model: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load weights (and optimizer state) in place; return the JSON state."""
    state = read_state(path)
    load_weights(model, path / MODEL_FILE)
    if optimizer is not None:
        optimizer_file = path / OPTIMIZER_FILE
        if not optimizer_file.is_file():
            raise CheckpointError(f"{path} has no {OPTIMIZER_FILE} to resume the optimizer")
        try:
            with safe_open(str(optimizer_file), framework="pt") as handle:
                structure = json.loads(handle.metadata()["structure"])
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            optimizer.load_state_dict(_unflatten_optimizer(tensors, structure))
        except Exception as error:  # safetensors, JSON and torch errors alike
            raise CheckpointError(
                f"{optimizer_file} is not a readable optimizer state: {_one_line(error)}"
            ) from None
    return state


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint `path` cannot be loaded, or None when its files are whole: its
    state.json parses and each safetensors file's header matches the file's length."""
    try:
        read_state(path)
        for name in (MODEL_FILE, OPTIMIZER_FILE):
            with safe_open(str(path / name), framework="pt") as handle:
                handle.keys()
    except CheckpointError as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        return _one_line(error)
    return None


def previous_valid_checkpoint(path: Path) -> Path | None:
    """The newest checkpoint older than `path` in the same folder whose files are whole."""
    older = [p for p in list_checkpoints(path.parent) if p.name < path.name]
    return next((p for p in reversed(older) if checkpoint_problem(p) is None), None)


def with_fallback(error: CheckpointError, path: Path) -> CheckpointError:
    """`error` about the checkpoint `path`, plus the previous valid checkpoint to resume
    from instead (when there is one)."""
    previous = previous_valid_checkpoint(path)
    if previous is None:
        return CheckpointError(f"{error}; no earlier checkpoint in {path.parent} is whole")
    return CheckpointError(
        f"{error}; the previous valid checkpoint is {previous.name}: resume from it with "
        f"--resume {previous}"
    )
