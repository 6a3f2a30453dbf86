"""`mmtrain sweep` on a two-raylet Ray cluster on this machine: the three demos of
docs/results/sweep.md (run through benchmarks/sweep_demo.sh).

1. A grid of 2 aggregators × 2 seeds, `--address` the cluster, 2 trials at a time, each
   trial's one worker holding 2 CPUs (so the two running trials sit on different raylets);
   once a trial's Ray Train run has registered a checkpoint, its worker is SIGKILLed: Ray
   Train restarts it from that checkpoint (`--max-failures`) and the sweep completes.
2. The same sweep in a new folder; once two trials have ended and a third has registered a
   checkpoint, the `mmtrain sweep` process (the Tune driver) is SIGKILLed; the same command
   with `--resume` (Tuner.restore) runs only the unfinished trials.

Every raylet is started with `ray start --block` and its own temp dir and ports, and is
stopped at the end by ending its own process tree (never `ray stop`, which stops every Ray
on the machine). Writes OUT/demo.json and OUT/demo.md; `--doc FILE` also puts demo.md
between the `<!-- sweep-demo:begin -->` and `<!-- sweep-demo:end -->` lines of FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from mmtrain.sweep import overlapping, trial_events, trial_rows

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- sweep-demo:begin -->", "<!-- sweep-demo:end -->"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        # A cluster of several raylets refuses the loopback-only mode (0).
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1",
        PYTHONUNBUFFERED="1",
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
    )
    return env


class Cluster:
    """A head raylet and a second one, each `ray start --block` with 2 CPUs."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.env, self.logs = env, logs
        self.gcs = free_port()
        self.address = f"127.0.0.1:{self.gcs}"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.temps: list[Path] = []
        self.cpu: dict[tuple[int, float], float] = {}
        self.stopping = threading.Event()
        threading.Thread(target=self._sampler, daemon=True).start()

    def _start(self, marker: str, *extra: str) -> None:
        # Ray's Unix sockets live under the temp dir: keep its path short.
        temp = Path(tempfile.mkdtemp(prefix="mmsweep-", dir="/tmp"))
        self.temps.append(temp)
        ports = [free_port() for _ in range(6)]
        command = [
            "ray", "start", "--block", *extra, "--num-cpus", "2", "--num-gpus", "0",
            "--resources", json.dumps({marker: 1}), "--temp-dir", str(temp),
            "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
            "--dashboard-agent-listen-port", str(ports[2]),
            "--dashboard-agent-grpc-port", str(ports[3]),
            "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5]),
        ]  # fmt: skip
        log = (self.logs / f"raylet-{marker}.log").open("wb")
        self.processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        )

    def nodes(self) -> dict[str, str]:
        """{marker resource: node id} of the alive raylets."""
        probe = (
            f"import json, ray; ray.init(address={self.address!r}, logging_level='error'); "
            "print(json.dumps({m: n['NodeID'] for n in ray.nodes() if n['Alive'] "
            "for m in n['Resources'] if m.startswith('raylet_')}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe], env=self.env, capture_output=True, text=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}

    def start(self) -> dict[str, str]:
        # The dashboard serves Ray's State API, which Ray Train's PlacementGroupCleaner
        # polls to see whether a run's controller is alive. In a run without it, killing
        # one trial's worker also ended the other trial's worker group ("its placement
        # group was removed"); see docs/results/sweep.md.
        self._start(
            "raylet_head", "--head", "--port", str(self.gcs), "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
        )  # fmt: skip
        self._wait(1)
        self._start("raylet_second", "--address", self.address)
        return self._wait(2)

    def _wait(self, count: int) -> dict[str, str]:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a raylet exited; see {self.logs}/raylet-*.log")
            time.sleep(2)
            found = self.nodes()
            if len(found) >= count:
                return found
        raise RuntimeError(f"{count} raylet(s) not up in 180 s")

    def sample_cpu(self) -> None:
        """Record every process of both raylets' trees with its CPU seconds so far: Ray's
        workers come and go and a raylet does not collect their CPU times when they end,
        so `cpu_seconds` sums the last sample of every process ever seen."""
        for root in self.processes:
            try:
                tree = [psutil.Process(root.pid)]
                tree += tree[0].children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for process in tree:
                try:
                    t = process.cpu_times()
                    key = (process.pid, process.create_time())
                    self.cpu[key] = t.user + t.system + t.children_user + t.children_system
                except psutil.NoSuchProcess:
                    pass

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of both raylets' process trees, sampled every 0.5 s
        (a process's last half second before it ends is missed)."""
        self.sample_cpu()
        return sum(self.cpu.values())

    def _sampler(self) -> None:
        while not self.stopping.wait(0.5):
            self.sample_cpu()

    def stop(self) -> None:
        self.stopping.set()
        tree: list[psutil.Process] = []
        for root in self.processes:
            try:
                tree += [psutil.Process(root.pid)]
                tree += tree[-1].children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        for process in reversed(tree):
            try:
                process.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=15)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for temp in self.temps:
            shutil.rmtree(temp, ignore_errors=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def registered_steps(out: Path) -> dict[str, list[int]]:
    """{cell: steps of the checkpoints its Ray Train run registered} of the sweep in `out`."""
    try:
        experiment = Path(json.loads((out / "sweep.json").read_text())["path"])
    except (OSError, json.JSONDecodeError, KeyError):
        return {}
    found: dict[str, list[int]] = {}
    for snapshot in (experiment / "train").glob("*/checkpoint_manager_snapshot.json"):
        try:
            data = json.loads(snapshot.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        found[snapshot.parent.name] = [
            int(r["metrics"]["step"]) for r in data.get("checkpoint_results", [])
        ]
    return found


def ended(out: Path) -> list[str]:
    return [k for k, records in trial_events(out).items() if records[-1]["event"] == "end"]


def wait_until(check: Any, process: subprocess.Popen[bytes], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if process.poll() is not None:
            raise RuntimeError(f"the sweep exited ({process.returncode}) before {what}")
        time.sleep(0.2)
    raise RuntimeError(f"no {what} in {timeout:.0f} s")


def sweep_command(config: Path, address: str, out: Path, steps: int, *extra: str) -> list[str]:
    every = max(steps // 3, 1)
    return [
        "mmtrain", "sweep", str(config),
        "--grid", "model.aggregator=sum_pooling,poe", "--seeds", "0", "1",
        "--steps", str(steps),
        "--set", f"train.eval_every={every}", "--set", f"train.checkpoint_every={every}",
        "--set", "train.eval_batches=1", "--set", "train.eval_is_samples=2",
        "--set", "train.log_every=10",
        "--address", address, "--max-concurrent-trials", "2", "--cpus-per-trial", "2",
        "--max-failures", "2",
        "--is-samples", "2", "--max-examples", "200", "--classifier-epochs", "1",
        "--out", str(out), "--quiet", *extra,
    ]  # fmt: skip


def run_phase(
    name: str, command: list[str], log: Path, env: dict[str, str], cluster: Cluster
) -> tuple[subprocess.Popen[bytes], dict[str, float]]:
    print(f"[{name}] {' '.join(command)}", flush=True)
    handle = log.open("ab")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    return process, {"wall": time.monotonic(), "driver_cpu": children_cpu(),
                     "cluster_cpu": cluster.cpu_seconds()}  # fmt: skip


def finish_phase(marks: dict[str, float], cluster: Cluster) -> dict[str, float]:
    return {
        "wall_s": round(time.monotonic() - marks["wall"], 1),
        "driver_cpu_s": round(children_cpu() - marks["driver_cpu"], 1),
        "cluster_cpu_s": round(cluster.cpu_seconds() - marks["cluster_cpu"], 1),
    }


def table(out: Path, nodes: dict[str, str]) -> list[dict[str, Any]]:
    names = {node: marker.removeprefix("raylet_") for marker, node in nodes.items()}
    rows = trial_rows(trial_events(out))
    origin = min((r["start"] for r in rows), default=0.0)
    for row in rows:
        row["worker_node"] = names.get(row["worker_node"], row["worker_node"])
        row["start_s"] = round(row.pop("start") - origin, 1)
        end = row.pop("end")
        row["end_s"] = None if end is None else round(end - origin, 1)
    return rows


def demo_worker_kill(
    args: argparse.Namespace, cluster: Cluster, env: dict[str, str]
) -> dict[str, Any]:
    out = args.out / "sweep"
    command = sweep_command(args.config, cluster.address, out, args.steps)
    process, marks = run_phase("sweep + worker kill", command, args.out / "sweep.log", env, cluster)
    registered = wait_until(
        lambda: {k: v for k, v in registered_steps(out).items() if v}, process, 900, "checkpoint"
    )
    victim_cell = sorted(registered)[0]
    rank0 = out / "runs" / victim_cell / "ray-workers" / "rank-0.json"
    pid = json.loads(rank0.read_text())["pid"]
    cmdline = " ".join(psutil.Process(pid).cmdline())
    assert "RayTrainWorker" in cmdline, cmdline
    killed_after = max(registered_steps(out)[victim_cell])
    os.kill(pid, signal.SIGKILL)
    print(f"[sweep + worker kill] SIGKILL worker {pid} of {victim_cell} after step "
          f"{killed_after} was registered", flush=True)  # fmt: skip
    code = process.wait()
    timing = finish_phase(marks, cluster)
    rows = table(out, cluster_nodes)
    return {
        "command": command,
        "exit_code": code,
        **timing,
        "killed": {"cell": victim_cell, "pid": pid, "registered_step_at_kill": killed_after},
        "trials": rows,
        "overlap": [
            {"a": a, "b": b, "seconds": round(s, 1)} for a, b, s in overlapping(trial_events(out))
        ],
        "compare_md": (out / "compare.md").read_text() if (out / "compare.md").is_file() else None,
    }


def demo_driver_kill(
    args: argparse.Namespace, cluster: Cluster, env: dict[str, str]
) -> dict[str, Any]:
    out = args.out / "resume"
    command = sweep_command(args.config, cluster.address, out, args.steps)
    process, marks = run_phase("driver kill", command, args.out / "resume.log", env, cluster)

    def two_ended_and_a_third_checkpointed() -> str | None:
        done = ended(out)
        if len(done) < 2:
            return None
        running = {k: v for k, v in registered_steps(out).items() if v and k not in done}
        return sorted(running)[0] if running else None

    cell = wait_until(two_ended_and_a_third_checkpointed, process, 1200, "third trial checkpoint")
    finished_before = ended(out)
    driver_pid = process.pid
    os.kill(driver_pid, signal.SIGKILL)
    process.wait()
    first = finish_phase(marks, cluster)
    print(f"[driver kill] SIGKILL the sweep driver {driver_pid}; ended: {finished_before}; "
          f"{cell} had registered {registered_steps(out).get(cell)}", flush=True)  # fmt: skip
    # Ray ends the dead driver's trials (its job's actors); give it a moment.
    time.sleep(10)
    resume = [*command, "--resume"]
    process, marks = run_phase("resume", resume, args.out / "resume.log", env, cluster)
    code = process.wait()
    second = finish_phase(marks, cluster)
    rows = table(out, cluster_nodes)
    return {
        "command": command,
        "killed_driver": {
            "pid": driver_pid,
            "trials_ended_before": finished_before,
            "checkpointed_cell": cell,
        },  # fmt: skip
        "before_kill": first,
        "resume_command": resume,
        "resume_exit_code": code,
        "resume": second,
        "trials": rows,
        "compare_md": (out / "compare.md").read_text() if (out / "compare.md").is_file() else None,
    }


cluster_nodes: dict[str, str] = {}


def markdown(result: dict[str, Any]) -> str:
    def trials_table(rows: list[dict[str, Any]]) -> list[str]:
        lines = [
            "| cell | attempt | Tune trial | worker on | start (s) | end (s) | steps | "
            "continues Ray Train run | resumed from step |",
            "|---|---:|---|---|---:|---:|---:|---|---:|",
        ]
        for r in rows:
            end = "(driver killed)" if r["end_s"] is None else f"{r['end_s']:.1f}"
            lines.append(
                f"| {r['cell']} | {r['attempt']} | {r['trial_id']} | {r['worker_node'] or '-'} "
                f"| {r['start_s']:.1f} | {end} | {r['steps'] if r['steps'] is not None else '-'} "
                f"| {r['continues_ray_train_run']} | "
                f"{r['resumed_from_step'] if r['resumed_from_step'] is not None else '-'} |"
            )
        return lines

    a, b = result["worker_kill"], result["driver_kill"]
    lines = [
        f"Machine: {result['machine']}. Cluster: {result['cluster']}.",
        "",
        "### 1-2. Two-raylet sweep, one trial's worker SIGKILLed",
        "",
        "```bash",
        " ".join(a["command"]),
        "```",
        "",
        f"Exit code {a['exit_code']}; wall {a['wall_s']} s; CPU: driver {a['driver_cpu_s']} s "
        f"(it also evaluates every trial), cluster {a['cluster_cpu_s']} s (both raylets' "
        "process trees, sampled every 0.5 s).",
        f"Killed: worker pid {a['killed']['pid']} of `{a['killed']['cell']}` once its run had "
        f"registered the checkpoint of step {a['killed']['registered_step_at_kill']}.",
        "",
        *trials_table(a["trials"]),
        "",
        "Overlap of the trials' first attempts (seconds both ran):",
        "",
        *[f"- {o['a']} ∥ {o['b']}: {o['seconds']} s" for o in a["overlap"]],
        "",
        "The sweep's compare table (`compare.md`; 60 steps, so the coherences sit near the "
        "10 % of chance; this shows the plumbing, not the models):",
        "",
        *[line for line in (a["compare_md"] or "").splitlines() if line.startswith("|")],
        "",
        "![compare.png of this sweep](sweep-demo/compare.png)",
        "",
        "### 3. Driver SIGKILLed, then `--resume`",
        "",
        f"Killed the driver once {', '.join(b['killed_driver']['trials_ended_before'])} had "
        f"ended and `{b['killed_driver']['checkpointed_cell']}` had a registered checkpoint: "
        f"wall {b['before_kill']['wall_s']} s before the kill. `--resume`: exit code "
        f"{b['resume_exit_code']}, wall {b['resume']['wall_s']} s, CPU driver "
        f"{b['resume']['driver_cpu_s']} s, cluster {b['resume']['cluster_cpu_s']} s.",
        "",
        *trials_table(b["trials"]),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    global cluster_nodes
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "quickstart.yaml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sweep-demo")
    parser.add_argument("--doc", type=Path, help="a markdown file with the demo markers")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    env = environment()
    cluster = Cluster(args.out, env)
    started = time.monotonic()
    try:
        cluster_nodes = cluster.start()
        print(f"cluster up at {cluster.address}: {cluster_nodes}", flush=True)
        result = {
            "machine": f"{os.cpu_count()} CPU cores, shared with other jobs, no GPU",
            "cluster": "two raylets on this machine (`ray start --head --num-cpus 2` and "
            "`ray start --address … --num-cpus 2`)",
            "nodes": cluster_nodes,
            "worker_kill": demo_worker_kill(args, cluster, env),
            "driver_kill": demo_driver_kill(args, cluster, env),
        }
    finally:
        cluster.stop()
    result["total_wall_s"] = round(time.monotonic() - started, 1)
    (args.out / "demo.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (args.out / "demo.md").write_text(text)
    print(text)
    if args.doc is not None:
        # The sweep's own files beside the doc: its plot, tables and trial records.
        files = args.doc.parent / "sweep-demo"
        files.mkdir(exist_ok=True)
        for demo, names in (("sweep", ("compare.png", "compare.md", "trials.csv")),
                            ("resume", ("trials.csv",))):  # fmt: skip
            for name in names:
                if (args.out / demo / name).is_file():
                    prefix = "" if demo == "sweep" else "resume-"
                    shutil.copy(args.out / demo / name, files / f"{prefix}{name}")
        shutil.copy(args.out / "demo.json", files / "demo.json")
        doc = args.doc.read_text()
        head, _, rest = doc.partition(BEGIN)
        _, _, tail = rest.partition(END)
        args.doc.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
