"""`mmtrain train CONFIG --ray`: Ray Train's TorchTrainer runs the one loop.

- two workers on a local cluster (world size 2: one Accelerate process per worker), one of
  them SIGKILLed mid-run: Ray restarts the group from the last reported checkpoint and the
  run ends where an uninterrupted one does;
- a two-node cluster simulated with two raylets on this machine, the job sent with
  `ray job submit`, one worker forced onto each raylet by a custom resource;
- the launcher's option handling, without a cluster.

The uninterrupted reference is the two-process `accelerate launch` run of the same config
(`accelerate_run`): same loop, same world size, same gloo all-reduce, so Ray's runs must
reach its numbers. Measured difference: 0 (bitwise equal weights and metrics), for the
killed-and-restarted run and for the two-raylet run alike. Why exact: resuming restores
weights, optimizer, every rank's RNG streams and the data position; both launchers give
each process one intra-op thread; and with two ranks DDP's all-reduce is one IEEE addition
a + b, which is commutative, so no reduction order can change a bit. The tolerances
(`WEIGHT_ATOL`, `METRIC_RTOL`) leave room for what is not guaranteed elsewhere: with more
ranks ring all-reduce sums in chunk-dependent orders (float addition is not associative),
and a different thread count changes CPU kernels' summation order. Both are far below one
optimizer step's change to the weights (~1e-3).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from safetensors.torch import load_file

from mmtrain.cli import build_parser
from mmtrain.config import load_config
from mmtrain.errors import ConfigError, MMTrainError
from mmtrain.train import ray_launcher

WEIGHT_ATOL = 1e-5
METRIC_RTOL = 1e-5


def parse_train(*argv: str) -> argparse.Namespace:
    parser, _ = build_parser()
    return parser.parse_args(["train", "config.yaml", *argv])


# ----------------------------------------------------------------------------- no cluster


def test_worker_resources_from_the_cli_options() -> None:
    args = parse_train("--ray", "--cpus-per-worker", "0.5", "--gpus-per-worker", "1")
    assert ray_launcher.worker_resources(args) == {"CPU": 0.5, "GPU": 1.0}
    args = parse_train("--ray", "--resources-per-worker", '{"worker_slot": 1}')
    assert ray_launcher.worker_resources(args) == {"CPU": 1.0, "worker_slot": 1.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{worker_slot: 1}", "JSON object"),
        ('["a"]', "map resource names"),
        ('{"slot": "one"}', "map resource names"),
        ('{"GPU": 1}', "--gpus-per-worker"),
    ],
)
def test_bad_resources_per_worker_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ray_launcher.worker_resources(parse_train("--ray", "--resources-per-worker", text))


def test_storage_and_address_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = tmp_path / "c.yaml"
    config_path.write_text("data: {source: ivae-bimodal}\noutput_dir: runs/x\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(config_path)
    assert ray_launcher.storage_path(config, None) == str(tmp_path / "runs" / "x" / "ray")
    assert ray_launcher.storage_path(config, "s3://bucket/runs") == "s3://bucket/runs"
    assert ray_launcher.storage_path(config, "store") == str(tmp_path / "store")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_launcher.cluster_address(None) == "local"
    assert ray_launcher.cluster_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_launcher.cluster_address(None) == "10.0.0.1:6379"


def test_local_capacity_check_names_the_fix() -> None:
    ray_launcher._check_local_capacity({"CPU": 2.0}, {"CPU": 0.5}, 4)
    with pytest.raises(ConfigError, match="--cpus-per-worker 0.5"):
        ray_launcher._check_local_capacity({"CPU": 2.0}, {"CPU": 1.0}, 3)
    with pytest.raises(ConfigError, match="worker_slot"):
        ray_launcher._check_local_capacity({"CPU": 2.0}, {"CPU": 0.5, "worker_slot": 1.0}, 2)


def test_worker_failures_become_one_line_errors() -> None:
    class Failed(Exception):
        worker_failures = {1: RuntimeError("Traceback…\nDataError: row 7 of shard 0 is bad")}

    message = ray_launcher._failure_summary(Failed(), 2, "run-1")
    assert "run-1" in message and "rank 1: DataError: row 7 of shard 0 is bad" in message
    assert issubclass(ray_launcher.RayTrainingFailed, MMTrainError)


# ----------------------------------------------------------------------------- local Ray


def _registered_steps(run: Path) -> list[int]:
    """Steps of the checkpoints Ray's controller has registered (its snapshot file)."""
    steps: list[int] = []
    for snapshot in (run / "ray").glob("*/checkpoint_manager_snapshot.json"):
        try:
            data = json.loads(snapshot.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being written
        steps += [int(r["metrics"]["step"]) for r in data.get("checkpoint_results", [])]
    return steps


def assert_same_numbers(run: Path, reference: Path, tools: SimpleNamespace) -> float:
    """Final metrics and weights of `run` match the uninterrupted `reference` run; returns
    the largest weight difference."""
    result = json.loads((run / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    for key in tools.numeric_metrics:
        assert result[key] == pytest.approx(expected[key], rel=METRIC_RTOL, abs=1e-9), key
    difference = tools.max_weight_difference(
        tools.final_weights(run), tools.final_weights(reference)
    )
    assert difference <= WEIGHT_ATOL, difference
    return difference


@pytest.mark.slow
def test_ray_two_workers_restart_after_sigkill(
    tmp_path: Path, accelerate_run: Path, tools: SimpleNamespace
) -> None:
    """Two workers on a local cluster; once Ray has registered a checkpoint, SIGKILL rank 1.
    Ray restarts the group from that checkpoint and the run ends where the uninterrupted
    two-process run (same loop under `accelerate launch`) ends."""
    run = tmp_path / "run"
    steps = tools.reference_steps
    config = tools.write_config(tmp_path, run, steps=steps, checkpoint_every=4)
    job = tools.launch(tools.ray_train_command(config, 2, "--max-failures", "2"), tmp_path / "log")

    deadline = time.monotonic() + 240
    while not _registered_steps(run):
        if job.popen.poll() is not None:
            pytest.fail(f"the run ended before its first checkpoint:\n{job.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no checkpoint registered in 240 s:\n{job.tail()}")
        time.sleep(0.05)
    victim = json.loads((run / ray_launcher.WORKER_FILES_DIR / "rank-1.json").read_text())
    assert "RayTrainWorker" in " ".join(psutil.Process(victim["pid"]).cmdline())
    os.kill(victim["pid"], signal.SIGKILL)
    killed_after = max(_registered_steps(run))
    assert killed_after < steps, "the run finished before the kill; lengthen it"

    code = job.wait(300)
    assert code == 0, f"exit {tools.signal_name(code)}:\n{job.tail()}"
    summary = json.loads((run / "summary.json").read_text())
    result = json.loads((run / ray_launcher.RESULT_FILE).read_text())
    assert summary["world_size"] == 2  # accelerator.num_processes inside the workers
    assert result["steps"] == summary["steps"] == steps
    assert result["is_main"] is True
    assert [w["rank"] for w in result["workers"]] == [0, 1]
    assert len({w["pid"] for w in result["workers"]}) == 2
    # The second worker group started from a reported checkpoint, not from scratch.
    resumed = result["resumed_from_ray_checkpoint"]
    assert resumed is not None and killed_after <= resumed < steps, (resumed, killed_after)
    assert result["workers"][1]["pid"] != victim["pid"]

    # Ray keeps the newest keep_last (3) registered checkpoints (a checkpoint uploaded by the
    # killed group but never registered may stay behind as an untracked directory); the
    # latest is the last step and holds the loop's own final checkpoint.
    storage = Path(result["ray"]["path"])
    assert storage.parent == run / "ray"
    assert _registered_steps(run) == [steps - 8, steps - 4, steps]
    latest = Path(result["ray"]["checkpoint"])
    assert json.loads((latest / "state.json").read_text())["step"] == steps
    assert (
        tools.max_weight_difference(
            load_file(str(latest / "model.safetensors")), tools.final_weights(run)
        )
        == 0.0
    )
    assert_same_numbers(run, accelerate_run / "run", tools)


# ----------------------------------------------------------------------------- two raylets


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=3) as response:
        return json.load(response)


def _alive_nodes(dashboard: str) -> list[dict[str, Any]]:
    data = _get_json(f"{dashboard}/api/v0/nodes?limit=100")
    return [n for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"]


def _wait_for(predicate: Any, timeout: float, what: str, logs: list[Any]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} not ready in {timeout:.0f} s:\n" + "\n".join(l.tail() for l in logs))


@pytest.mark.slow
def test_two_raylet_cluster_with_ray_job_submit(
    tmp_path: Path, accelerate_run: Path, tools: SimpleNamespace
) -> None:
    """`ray start --head` and `ray start --address` on one machine, each with one CPU, its
    own marker resource (node_a / node_b) and one `worker_slot`; a job that asks for one
    `worker_slot` per worker must put one worker on each raylet, and (uninterrupted, two
    ranks) reach the same numbers as the two-process Accelerate run."""
    # A multi-node cluster refuses RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the loopback-only
    # mode); with 1, Ray registers both raylets on this machine's own address.
    env = tools.subprocess_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
    gcs, dashboard_port = tools.free_port(), tools.free_port()
    dashboard = f"http://127.0.0.1:{dashboard_port}"

    def node(name: str, *head: str) -> list[str]:
        # Own temp dirs and explicit ports, so two raylets on one machine (and any other
        # Ray on it) do not fight over the defaults.
        temp = str(tools.short_temp_dir())
        ports = [tools.free_port() for _ in range(6)]
        return [
            "ray", "start", "--block", *head,
            "--num-cpus", "1", "--num-gpus", "0",
            "--resources", json.dumps({name: 1, "worker_slot": 1}),
            "--temp-dir", temp,
            "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
            "--dashboard-agent-listen-port", str(ports[2]),
            "--dashboard-agent-grpc-port", str(ports[3]),
            "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5]),
        ]  # fmt: skip

    head = tools.launch(
        node(
            "node_a", "--head", "--port", str(gcs), "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
        ),
        tmp_path / "head.log",
        env,
    )  # fmt: skip
    _wait_for(lambda: _alive_nodes(dashboard), 120, "head raylet", [head])
    worker = tools.launch(
        node("node_b", "--address", f"127.0.0.1:{gcs}"), tmp_path / "worker.log", env
    )
    nodes = _wait_for(
        lambda: (found := _alive_nodes(dashboard)) and len(found) == 2 and found,
        120,
        "second raylet",
        [head, worker],
    )
    node_of = {
        marker: next(n["node_id"] for n in nodes if marker in n["resources_total"])
        for marker in ("node_a", "node_b")
    }

    run = tmp_path / "run"
    config = tools.write_config(tmp_path, run, steps=tools.reference_steps, checkpoint_every=4)
    submit = [
        "ray", "job", "submit", "--address", dashboard, "--",
        "mmtrain", "train", str(config), "--ray", "--address", "auto",
        "--num-workers", "2", "--cpus-per-worker", "0.5",
        "--resources-per-worker", json.dumps({"worker_slot": 1}), "--quiet",
    ]  # fmt: skip
    output = tools.run_command(submit, tmp_path / "submit.log", timeout=300, **env)
    assert "succeeded" in output, output[-3000:]

    result = json.loads((run / ray_launcher.RESULT_FILE).read_text())
    assert result["steps"] == tools.reference_steps and result["world_size"] == 2
    placed = {w["node_id"] for w in result["workers"]}
    assert placed == set(node_of.values()), (placed, node_of)
    assert len(placed) == 2
    assert_same_numbers(run, accelerate_run / "run", tools)


def test_workers_get_absolute_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "part-0.parquet").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for source, expected in [
        ("rows", str(tmp_path / "rows")),
        ("rows/*.parquet", str(tmp_path / "rows" / "*.parquet")),
        ("ivae-bimodal", "ivae-bimodal"),
    ]:
        config = load_config(None, [f"data.source={source}", "output_dir=out"])
        resolved = ray_launcher.resolved_config(config)
        assert resolved["data"]["source"] == expected
        assert resolved["output_dir"] == str(tmp_path / "out")
