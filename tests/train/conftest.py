"""Fixtures for the launcher tests: a tiny config, subprocesses that clean up after
themselves, and runs shared between tests (and between xdist workers) because each
distributed run costs tens of seconds on a 2-core machine.

The helpers reach the tests through the `tools` fixture (a namespace), not by importing this
module: `conftest` is not importable unambiguously from a folder without `__init__.py`.

Processes are only ever ended by the ids of those the tests started (and their
descendants): never `ray stop`, which would also stop Ray clusters that other people run
on the same machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
import torch
from filelock import FileLock
from safetensors.torch import load_file

#: the training config every launcher test runs: a small sum-pooling VAE on embedded data
TINY = """\
data: {{source: ivae-bimodal, batch_size: 250}}
model: {{aggregator: sum_pooling, latent_dim: 2, feature_dim: 32,
        aggregator_options: {{pooling_size: 32, hidden_size: 32}}}}
train: {{steps: {steps}, log_every: 4, checkpoint_every: {checkpoint_every}, keep_last: 3}}
output_dir: {output_dir}
"""

#: steps of the uninterrupted two-process run that the Ray runs must reproduce
REFERENCE_STEPS = 40
#: metrics that depend only on the numbers (not on timing) and must match across launchers
NUMERIC_METRICS = (
    "train/loss",
    "train/masked_objective",
    "train/elbo",
    "train/R_marg",
    "train/Q_SF",
    "data/examples",
)


def write_config(
    directory: Path, output_dir: Path, steps: int = 12, checkpoint_every: int = 4
) -> Path:
    """A tiny YAML config under `directory` training into `output_dir`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{output_dir.name}.yaml"
    path.write_text(
        TINY.format(steps=steps, checkpoint_every=checkpoint_every, output_dir=output_dir)
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test environment for child processes: offline, Ray without auth or usage stats,
    the virtualenv's scripts first on PATH, and no inherited RAY_ADDRESS."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
        PYTHONUNBUFFERED="1",
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    )
    env.update(extra)
    return env


def process_tree(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes `pids` and all their descendants, as they are now."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            found[pid] = process
            for child in process.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def end_processes(processes: list[psutil.Process], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds."""
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


class Launched:
    """A child process in its own session whose output goes to a log file; `stop()` ends it
    and every process it started."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None):
        self.command = command
        self.log = log
        self.handle = log.open("w")
        self.popen = subprocess.Popen(
            command,
            env=env or subprocess_env(),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.command[:4]}… ran past {timeout:.0f} s; log:\n{self.tail()}")

    def stop(self) -> None:
        end_processes(process_tree([self.popen.pid]))
        self.handle.close()

    def tail(self, lines: int = 60) -> str:
        self.handle.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def run_command(command: list[str], log: Path, timeout: float, **env: str) -> str:
    """Run to completion; fail the test with the log's tail on a non-zero exit."""
    launched = Launched(command, log, subprocess_env(**env))
    try:
        code = launched.wait(timeout)
    finally:
        launched.stop()
    output = log.read_text(errors="replace")
    if code != 0:
        pytest.fail(f"{' '.join(command[:6])}… exited with {code}; log:\n{launched.tail()}")
    return output


def mmtrain_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmtrain", *args]


def ray_train_command(config: Path, workers: int = 2, *extra: str) -> list[str]:
    return mmtrain_command(
        "train",
        str(config),
        "--ray",
        "--num-workers",
        str(workers),
        "--cpus-per-worker",
        "0.5",
        "--quiet",
        *extra,
    )


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    summary = json.loads((run / "summary.json").read_text())
    return load_file(str(Path(summary["checkpoint"]) / "model.safetensors"))


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def shared_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]
) -> Path:
    """`build(directory)` once per test session, even across xdist workers (they share the
    parent of their base temp directories); later callers wait for it and reuse it."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory = root / name
    done = directory / ".done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            directory.mkdir(parents=True, exist_ok=True)
            build(directory)
            done.write_text(str(time.time()))
    return directory


#: `python -m mmtrain`, plus a record of every rank's parameters after training: it wraps
#: `Accelerator.prepare` to keep the prepared model, runs the CLI exactly as `-m mmtrain`
#: does (runpy), then all-gathers each rank's flattened parameters over the still-open
#: process group; rank 0 saves them (safetensors, names in a JSON sidecar) to the path given as the first
#: argument.
PARAMETER_PROBE = """\
import json
import runpy
import sys

import torch
import torch.distributed as dist
from accelerate import Accelerator

prepared = {}
original_prepare = Accelerator.prepare


def prepare(self, *objects, **kwargs):
    out = original_prepare(self, *objects, **kwargs)
    # The prepared module is the objective wrapper; checkpoints hold its `model`.
    prepared["model"] = self.unwrap_model(out[0]).model
    return out


Accelerator.prepare = prepare
record = sys.argv.pop(1)
sys.argv[0] = "mmtrain"
code = 0
try:
    runpy.run_module("mmtrain", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code or 0
model = prepared["model"]
names = [name for name, _ in model.named_parameters()]
flat = torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])
world = dist.get_world_size() if dist.is_initialized() else 1
gathered = [torch.zeros_like(flat) for _ in range(world)]
if world > 1:
    dist.all_gather(gathered, flat)
else:
    gathered = [flat]
if not dist.is_initialized() or dist.get_rank() == 0:
    from safetensors.torch import save_file

    save_file({f"rank{index}": tensor for index, tensor in enumerate(gathered)}, record)
    with open(record + ".json", "w") as handle:
        json.dump({"names": names, "world": world}, handle)
if dist.is_initialized():
    dist.barrier()
sys.exit(code)
"""


@pytest.fixture(scope="session")
def accelerate_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`accelerate launch --multi_gpu --num_processes 2 -m mmtrain train` on the CPU
    (ACCELERATE_USE_CPU=true) for REFERENCE_STEPS uninterrupted steps: the directory holding
    `run/` (its output), `params.safetensors` + `.json` (every rank's final parameters) and `launch.log`.

    It is also the uninterrupted reference of the Ray tests: the same loop, config and world
    size, so Ray's runs must reach the same numbers."""

    def build(directory: Path) -> None:
        config = write_config(directory, directory / "run", REFERENCE_STEPS, checkpoint_every=4)
        probe = directory / "probe.py"
        probe.write_text(PARAMETER_PROBE)
        command = [
            str(Path(sys.executable).parent / "accelerate"),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--main_process_port",
            str(free_port()),
            str(probe),
            str(directory / "params.safetensors"),
            "train",
            str(config),
            "--quiet",
        ]
        run_command(command, directory / "launch.log", timeout=300, ACCELERATE_USE_CPU="true")

    return shared_run(tmp_path_factory, "accelerate-run", build)


def signal_name(code: int) -> str:
    return signal.Signals(-code).name if code < 0 else str(code)


@pytest.fixture
def tools() -> Iterator[SimpleNamespace]:
    """The helpers above. After the test, processes from `tools.launch(...)` (with all their
    descendants) are stopped together, and directories from `tools.short_temp_dir()` are
    removed."""
    started: list[Launched] = []
    temp_dirs: list[Path] = []

    def launch(command: list[str], log: Path, env: dict[str, str] | None = None) -> Launched:
        launched = Launched(command, log, env)
        started.append(launched)
        return launched

    def short_temp_dir() -> Path:
        # Ray puts Unix sockets under its temp dir; their paths must stay under 107 bytes,
        # which pytest's tmp_path does not guarantee.
        path = Path(tempfile.mkdtemp(prefix="mmray-", dir="/tmp"))
        temp_dirs.append(path)
        return path

    yield SimpleNamespace(
        write_config=write_config,
        free_port=free_port,
        subprocess_env=subprocess_env,
        process_tree=process_tree,
        end_processes=end_processes,
        launch=launch,
        short_temp_dir=short_temp_dir,
        run_command=run_command,
        mmtrain_command=mmtrain_command,
        ray_train_command=ray_train_command,
        final_weights=final_weights,
        max_weight_difference=max_weight_difference,
        signal_name=signal_name,
        reference_steps=REFERENCE_STEPS,
        numeric_metrics=NUMERIC_METRICS,
    )
    end_processes(process_tree([launched.popen.pid for launched in started]), grace=5.0)
    for launched in started:
        launched.handle.close()
    for path in temp_dirs:
        shutil.rmtree(path, ignore_errors=True)
