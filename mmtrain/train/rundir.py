"""A run's output directory: whether it already holds a run, moving an old run aside, and
cutting its logs back to the step a resumed run starts from.

A directory *holds a run* when it contains any of `RUN_MARKERS`, the files and folders that
`mmtrain train` writes (config, logs, summary, checkpoints). Anything else in it (notes, a
config file the user keeps there) does not count. Each run writes its id to `RUN_ID_FILE`,
so that a Ray worker group restarted before its first checkpoint recognises the directory
as its own run rather than another one.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from mmtrain.errors import ConfigError

#: what `mmtrain train` writes into `output_dir`; any of them means the folder holds a run
RUN_MARKERS = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "tensorboard")
#: the id of the run that last wrote the directory
RUN_ID_FILE = ".mmtrain-run-id"
METRICS_FILE = "metrics.jsonl"
OVERWRITE_AND_RESUME = "--overwrite starts afresh and --resume continues a run; give one of them"


def run_markers(output: Path) -> list[str]:
    """The `RUN_MARKERS` present in `output` (empty when it holds no run)."""
    return [name for name in RUN_MARKERS if (output / name).exists()]


def is_own_run(output: Path, run_id: str | None) -> bool:
    """Whether `output` was last written by the run `run_id`."""
    if run_id is None:
        return False
    try:
        return (output / RUN_ID_FILE).read_text().strip() == run_id
    except OSError:
        return False


def clash(output: Path, resume: object, run_id: str | None) -> list[str]:
    """The markers of another run in `output` that a new run would mix with; empty when
    there is none, when resuming (`resume` given), or when it is `run_id`'s own."""
    if resume is not None:
        return []
    markers = run_markers(output)
    if markers and is_own_run(output, run_id):
        return []
    return markers


def check_or_move_aside(output: Path, resume: object, overwrite: bool) -> Path | None:
    """One process's check before a run starts (the Ray driver's): another run in `output`
    is refused (`ConfigError`) or, with `overwrite`, moved aside; returns where it went."""
    if resume is not None and overwrite:
        raise ConfigError(OVERWRITE_AND_RESUME)
    markers = clash(output, resume, None)
    if not markers:
        return None
    if not overwrite:
        raise refusal(output, markers)
    return move_aside(output)


def refusal(output: Path, markers: list[str]) -> ConfigError:
    return ConfigError(
        f"output_dir {output} holds another run ({', '.join(markers)}); continue it with "
        "--resume latest, start afresh with --overwrite (moves the old run aside to a "
        "sibling folder), or set output_dir to a new folder"
    )


def aside_name(output: Path) -> Path:
    """A free sibling name for an old run: `NAME.previous-YYYYmmdd-HHMMSS[-k]`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = output.with_name(f"{output.name}.previous-{stamp}")
    k = 1
    while candidate.exists():
        k += 1
        candidate = output.with_name(f"{output.name}.previous-{stamp}-{k}")
    return candidate


def move_aside(output: Path) -> Path:
    """Rename `output` (the whole folder) to a free sibling name; returns the new path."""
    target = aside_name(output)
    os.replace(output, target)
    return target


def claim(output: Path, run_id: str | None) -> str:
    """Record `run_id` (a fresh one when None) as the run writing `output`."""
    run_id = run_id or uuid.uuid4().hex
    output.mkdir(parents=True, exist_ok=True)
    (output / RUN_ID_FILE).write_text(run_id + "\n")
    return run_id


def truncate_metrics(output: Path, last_step: int) -> int:
    """Keep the lines of `metrics.jsonl` up to `last_step` (written before the checkpoint a
    run resumes from) and drop the rest, including a half-written last line; returns the
    number of lines dropped. The file is replaced atomically."""
    path = output / METRICS_FILE
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text("".join(f"{line}\n" for line in kept))
        os.replace(temporary, path)
    return dropped
