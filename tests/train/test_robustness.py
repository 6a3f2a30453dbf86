"""Nothing lost, nothing misleading (issue 15): an output directory that holds another run,
logs after kill -9 and resume, Ctrl-C, a full disk during a checkpoint write, and the main
job run twice."""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from mmtrain.checkpoint import list_checkpoints, load_checkpoint
from mmtrain.cli import main
from mmtrain.config import load_config
from mmtrain.errors import ConfigError
from mmtrain.factory import build_model
from mmtrain.train.loop import train

REPO = Path(__file__).resolve().parents[2]

TINY = """\
data: {{source: ivae-bimodal, batch_size: 250, num_workers: {workers}}}
model: {{aggregator: sum_pooling, latent_dim: 2, feature_dim: 32,
        aggregator_options: {{pooling_size: 32, hidden_size: 32}}}}
train: {{steps: {steps}, log_every: {log_every}, checkpoint_every: {checkpoint_every},
        keep_last: 3}}
output_dir: {output_dir}
"""


def write_tiny(
    directory: Path,
    output_dir: Path,
    steps: int = 8,
    checkpoint_every: int = 4,
    log_every: int = 4,
    workers: int = 0,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{output_dir.name}.yaml"
    path.write_text(
        TINY.format(
            steps=steps,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            output_dir=output_dir,
            workers=workers,
        )
    )
    return path


def logged_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "train/loss" in json.loads(line)]


def tensorboard_steps(run: Path, tag: str = "train/loss") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Accelerate writes TensorBoard events under tensorboard/<project>, the run folder by default.
    accumulator = EventAccumulator(
        str(run / "tensorboard" / run.name), size_guidance={"scalars": 0}
    )
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


def weights(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(checkpoint) / "model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- 1. another run


def test_training_into_a_directory_holding_another_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = write_tiny(tmp_path, run, steps=8)
    train(load_config(config), progress=False)
    before = {
        p.name: (p / "state.json").read_bytes() for p in list_checkpoints(run / "checkpoints")
    }
    metrics = (run / "metrics.jsonl").read_bytes()

    with pytest.raises(ConfigError, match="holds another run") as refused:
        train(load_config(config, ["train.steps=4"]), progress=False)
    message = str(refused.value)
    assert str(run) in message and "--resume latest" in message and "--overwrite" in message
    assert "\n" not in message
    # Nothing was touched.
    after = {p.name: (p / "state.json").read_bytes() for p in list_checkpoints(run / "checkpoints")}
    assert after == before and (run / "metrics.jsonl").read_bytes() == metrics


def test_a_directory_without_run_files_is_not_another_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    result = train(load_config(write_tiny(tmp_path, run, steps=4)), progress=False)
    assert result["steps"] == 4 and (run / "notes.txt").read_text() == "mine"


def test_overwrite_moves_the_old_run_aside_and_says_so(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    config = write_tiny(tmp_path, run, steps=12)
    assert main(["train", str(config), "--quiet"]) == 0
    old_final = weights(run / "checkpoints" / "step-00000012")
    capsys.readouterr()

    argv = ["train", str(config), "--set", "train.steps=8", "--quiet", "--overwrite"]
    assert main(argv) == 0
    out = capsys.readouterr()
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.previous-")]
    assert len(moved) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert f"moved the previous run in {run} to {moved[0]}" in out.out + out.err
    # The old run is whole in its new place, the new one alone in the old place.
    assert [p.name for p in list_checkpoints(moved[0] / "checkpoints")][-1] == "step-00000012"
    assert same_weights(weights(moved[0] / "checkpoints" / "step-00000012"), old_final)
    assert logged_steps(moved[0]) == [4, 8, 12]
    assert logged_steps(run) == [4, 8]
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["checkpoint"]).is_dir() and summary["checkpoint"].endswith("step-00000008")
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [
        "step-00000004",
        "step-00000008",
    ]


def test_overwrite_and_resume_together_are_refused(tmp_path: Path, capsys) -> None:
    config = write_tiny(tmp_path, tmp_path / "run")
    assert main(["train", str(config), "--resume", "latest", "--overwrite"]) == 2
    assert "--overwrite starts afresh and --resume continues" in capsys.readouterr().err


def main_job_commands(out: Path) -> list[list[str]]:
    """The `mmtrain` commands of scripts/main.sh (continuation lines joined, `$out` and
    `${VAR:-default}` expanded), as argument lists for `mmtrain.cli.main`."""
    text = (REPO / "scripts" / "main.sh").read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words or not re.fullmatch(r"(\S*/)?mmtrain", words[0]):
            continue
        expanded = []
        for word in words[1:]:
            word = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1], m[2]), word)
            expanded.append(word.replace("${out}", str(out)).replace("$out", str(out)))
        commands.append(expanded)
    return commands


#: the main job's commands, made tiny (a later option or --set wins over the script's)
TINY_MAIN_JOB = {
    "experiment": ["--steps", "20", "--is-samples", "4", "--quiet"],
    "train": [
        "--set", "train.steps=6", "--set", "train.eval_every=3", "--set", "train.eval_batches=1",
        "--set", "train.checkpoint_every=3", "--set", "train.log_every=3",
        "--set", "data.shuffle_buffer=256", "--set", "data.batch_size=32",
    ],
    "eval": [
        "--is-samples", "2", "--max-examples", "64", "--max-train-examples", "128",
        "--classifier-epochs", "1", "--joint-samples", "32", "--probe-examples", "32",
        "--batch-size", "64", "--no-pictures",
    ],
}  # fmt: skip


@pytest.mark.slow
def test_main_job_runs_twice_without_mixing_runs(tmp_path: Path, monkeypatch) -> None:
    """The CLI steps of scripts/main.sh, twice into the same output folder: both passes
    succeed, and the second leaves one run (its own) in runs/main/digits."""
    monkeypatch.chdir(REPO)  # the script runs from the repository root (configs/...)
    out = tmp_path / "main"
    commands = main_job_commands(out)
    assert [c[0] for c in commands] == ["experiment", "train", "eval"]
    for attempt in (1, 2):
        for command in commands:
            assert main([*command, *TINY_MAIN_JOB[command[0]]]) == 0, (attempt, command)
    run = out / "digits"
    assert logged_steps(run) == [3, 6]
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["checkpoint"]).is_dir()
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    assert Path(evaluated["checkpoint"]).resolve() == Path(summary["checkpoint"]).resolve()
    assert json.loads((out / "linear-gaussian.json").read_text())["steps"] == 20
    # The first pass's run was kept aside, whole.
    previous = [p for p in out.iterdir() if p.name.startswith("digits.previous-")]
    assert len(previous) == 1 and logged_steps(previous[0]) == [3, 6]


# ----------------------------------------------------------------------------- 2. kill -9


def _wait_for_steps(
    run: Path, job: SimpleNamespace, done: object, timeout: float = 120
) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        steps = logged_steps(run) if (run / "metrics.jsonl").is_file() else []
        if done(steps):
            return steps
        if job.popen.poll() is not None:
            pytest.fail(f"training ended early:\n{job.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no progress in {timeout:.0f} s:\n{job.tail()}")
        time.sleep(0.005)


def test_kill_9_then_resume_logs_every_step_once(tmp_path: Path, tools: SimpleNamespace) -> None:
    """kill -9 between checkpoints, then --resume latest: metrics.jsonl and TensorBoard hold
    each step exactly once (the steps after the checkpoint were logged, then lost)."""
    for attempt in range(3):
        run = tmp_path / f"run{attempt}"
        config = write_tiny(tmp_path, run, steps=400, checkpoint_every=5, log_every=1)
        job = tools.launch(
            tools.mmtrain_command("train", str(config), "--quiet"), run.with_suffix(".log")
        )
        _wait_for_steps(run, job, lambda s: len(s) > 5 and s[-1] % 5 >= 2)
        os.kill(job.popen.pid, signal.SIGKILL)
        job.popen.wait()
        last_logged = logged_steps(run)[-1]
        checkpoint = int(list_checkpoints(run / "checkpoints")[-1].name.split("-")[1])
        if last_logged > checkpoint:
            break
    else:
        pytest.fail("the kill never landed between a checkpoint and the next log line")
    final = last_logged + 3
    resume = ["train", str(config), "--set", f"train.steps={final}", "--resume", "latest"]
    assert main([*resume, "--quiet"]) == 0
    assert logged_steps(run) == list(range(1, final + 1))
    assert tensorboard_steps(run) == list(range(1, final + 1))
    assert tensorboard_steps(run, "lr") == list(range(1, final + 1))


# ----------------------------------------------------------------------------- 3. Ctrl-C


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_current_step_and_says_how_to_resume(
    tmp_path: Path, tools: SimpleNamespace, small_cpu_settings: None
) -> None:
    """SIGINT to the process group (as a terminal's Ctrl-C, loader workers included): the
    step finishes, a checkpoint of it is written, the resume command is printed, exit 130;
    the printed command, run here, ends bit-for-bit where an uninterrupted run ends (one
    intra-op thread in the child and here, so that both use the same kernels)."""
    run = tmp_path / "run"
    config = write_tiny(tmp_path, run, steps=400, checkpoint_every=100, log_every=1, workers=2)
    job = tools.launch(
        tools.mmtrain_command("train", str(config), "--quiet"),
        tmp_path / "log",
        tools.subprocess_env(OMP_NUM_THREADS="1"),
    )
    _wait_for_steps(run, job, lambda s: len(s) >= 6)
    os.killpg(job.popen.pid, signal.SIGINT)
    code = job.wait(120)
    output = job.tail(20)
    assert code == 130, output
    stopped = logged_steps(run)[-1]
    checkpoints = list_checkpoints(run / "checkpoints")
    assert [p.name for p in checkpoints] == [f"step-{stopped:08d}"], output
    match = re.search(r"resume with: (mmtrain train .*)$", output, re.MULTILINE)
    assert match, output
    command = shlex.split(match.group(1))
    assert command[:3] == ["mmtrain", "train", str(config)] and command[-2:] == [
        "--resume",
        "latest",
    ]
    final = stopped + 5
    assert main([*command[1:], "--set", f"train.steps={final}"]) == 0
    assert logged_steps(run) == list(range(1, final + 1))
    straight = tmp_path / "straight"
    reference = write_tiny(tmp_path, straight, steps=final, log_every=1, workers=2)
    assert main(["train", str(reference), "--quiet"]) == 0
    resumed = json.loads((run / "summary.json").read_text())
    expected = json.loads((straight / "summary.json").read_text())
    assert resumed["steps"] == expected["steps"] == final
    assert same_weights(weights(resumed["checkpoint"]), weights(expected["checkpoint"]))


def test_second_interrupt_stops_at_once() -> None:
    from mmtrain.train.loop import InterruptFlag

    previous = signal.getsignal(signal.SIGINT)
    flag = InterruptFlag()
    with flag.installed():
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert flag.requested
        os.kill(os.getpid(), signal.SIGINT)  # the launcher's copy of the same Ctrl-C
        time.sleep(0.05)
        time.sleep(flag.SAME_PRESS_S)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is previous


# ----------------------------------------------------------------------------- 4. disk full


def test_disk_full_during_a_checkpoint_is_one_line_and_leaves_no_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import mmtrain.checkpoint as checkpoint_module

    run = tmp_path / "run"
    config = write_tiny(tmp_path, run, steps=8, checkpoint_every=4)
    real_save_file = checkpoint_module.save_file
    calls = []

    def save_file(*args: object, **kwargs: object) -> None:
        calls.append(args[1])
        if len(calls) == 2:  # the second checkpoint's optimizer file
            raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))
        real_save_file(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)
    assert main(["train", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and "Traceback" not in err, err
    assert lines[0].startswith("error: no space left on device"), err
    assert str(run / "checkpoints") in lines[0]
    assert re.search(r"needs about [\d.]+ MB \([\d,]+ bytes\)", lines[0]), lines[0]
    leftovers = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert leftovers == ["step-00000004"], leftovers
    cfg = load_config(config)
    from mmtrain.data.loader import build_loader

    model = build_model(cfg.model, build_loader(cfg.data).plugins)
    assert load_checkpoint(run / "checkpoints" / "step-00000004", model)["step"] == 4


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    )
    return probe.returncode == 0


DISK_FULL_DRIVER = """\
import contextlib, io, json, sys
from pathlib import Path
from mmtrain.cli import main
run, config = Path(sys.argv[1]), sys.argv[2]
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = main(["train", config, "--quiet"])
found = {"code": code, "stderr": err.getvalue(),
         "left": sorted(p.name for p in (run / "checkpoints").iterdir())}
from safetensors.torch import load_file
found["tensors"] = len(load_file(str(run / "checkpoints" / "step-00000004" / "model.safetensors")))
print(json.dumps(found))
"""


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare --user --mount for a tmpfs")
def test_a_really_full_file_system(tmp_path: Path) -> None:
    """A 3 MB tmpfs (in a private mount namespace) holds one 1.9 MB checkpoint but not a
    second: the second write fails with a one-line error, no temporary folder stays."""
    mount = tmp_path / "small"
    mount.mkdir()
    run = mount / "run"
    config = write_tiny(tmp_path, run, steps=8, checkpoint_every=4)
    driver = tmp_path / "driver.py"
    driver.write_text(DISK_FULL_DRIVER)
    script = 'mount -t tmpfs -o size=3m tmpfs "$1" && exec "$2" "$3" "$4" "$5"'
    command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
    command += [str(mount), sys.executable, str(driver), str(run), str(config)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["code"] == 2, found["stderr"]
    first = found["stderr"].strip().splitlines()[0]
    assert first.startswith("error: no space left on device") and str(run) in first, first
    assert found["left"] == ["step-00000004"]
    assert found["tensors"] > 0


def test_stale_temporary_folders_of_dead_processes_are_removed_at_start(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    config = write_tiny(tmp_path, run, steps=4)
    train(load_config(config), progress=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = run / "checkpoints" / f".tmp-step-00000008-{dead.pid}"
        busy = run / "checkpoints" / f".tmp-step-00000008-{alive.pid}"
        for folder in (stale, busy):
            folder.mkdir()
            (folder / "model.safetensors").write_bytes(b"partial")
        train(load_config(config, ["train.steps=6"]), resume="latest", progress=False)
        assert not stale.exists()
        assert busy.exists()  # another live process may still be writing it
    finally:
        alive.kill()
        alive.wait()


def test_the_resume_command_keeps_the_arguments_but_resume_and_overwrite() -> None:
    from mmtrain.commands.train import resume_command

    argv = ["train", "my config.yaml", "--overwrite", "--set", "a=1", "--resume", "x", "--quiet"]
    assert (
        resume_command(argv) == "mmtrain train 'my config.yaml' --set a=1 --quiet --resume latest"
    )
    assert resume_command(["train", "c.yaml", "--resume=step-4"]) == (
        "mmtrain train c.yaml --resume latest"
    )


def test_the_ray_driver_refuses_another_run_before_starting_ray(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from mmtrain.cli import build_parser
    from mmtrain.train.ray_launcher import run_with_ray

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    config_path = write_tiny(tmp_path, run)
    args = build_parser()[0].parse_args(["train", str(config_path), "--ray"])
    with pytest.raises(ConfigError, match="holds another run"):
        run_with_ray(load_config(config_path), args)
    assert not ray.is_initialized()
    assert (run / "checkpoints").is_dir()
