"""The best checkpoint and early stopping (issue 13, item 3). The loop's validation is
replaced by a constructed sequence of metric values, so each test knows which step must be
kept and where training must stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmtrain
from mmtrain.checkpoint import list_checkpoints, read_state
from mmtrain.cli import main
from mmtrain.errors import ConfigError
from mmtrain.evaluation.markdown import describe_best
from mmtrain.evaluation.runner import load_for_eval
from mmtrain.train import loop
from mmtrain.train.loop import train
from mmtrain.train.monitor import validation_metric_names
from tests.helpers import tiny_config

#: validate every 2 steps, on the training split (ivae-bimodal has no other), checkpoints
#: at every validation so that each one can be compared with the best
WATCHED = ("train.eval_every=2", "train.eval_split=train", "train.checkpoint_every=2")


class Sequence:
    """Stands in for `loop.evaluate`: the n-th call returns `values[n]` as `eval/is_ll`
    (`start` skips the evaluations a resumed run already did) and records the calls."""

    def __init__(self, values: list[float], start: int = 0, metric: str = "eval/is_ll") -> None:
        self.values, self.calls, self.metric = values, start, metric

    def __call__(self, *args: object) -> dict[str, float]:
        value = self.values[self.calls]
        self.calls += 1
        return {self.metric: value, "eval/examples": 250.0}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("mode", ["max", "min"])
def test_keep_best_keeps_the_checkpoint_of_the_best_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    """Validations at steps 2, 4, …, 12; the sequence peaks (max) or dips (min) at step 6."""
    peak = [-5.0, -4.0, -2.0, -3.0, -3.5, -4.0]
    values = peak if mode == "max" else [-v for v in peak]
    monkeypatch.setattr(loop, "evaluate", Sequence(values))
    config = tiny_config(tmp_path, *WATCHED, f"train.keep_best={{metric: val/is_ll, mode: {mode}}}")
    result = train(config, progress=False)
    checkpoints = tmp_path / "run" / "checkpoints"
    best = checkpoints / "best"
    state = read_state(best)
    assert state["step"] == 6
    assert state["best"] == {"metric": "eval/is_ll", "mode": mode, "value": values[2], "step": 6}
    assert same_weights(best, checkpoints / "step-00000006")
    assert not same_weights(best, checkpoints / "step-00000012")
    assert len(list_checkpoints(checkpoints)) == 6  # best is kept beside the last K
    assert result["best_checkpoint"]["step"] == 6 and not result["stopped_early"]
    # load, export and eval take the best checkpoint and say which one it is
    assert mmtrain.load(tmp_path / "run").source.step == 6
    loaded = load_for_eval(tmp_path / "run")
    assert loaded.path == best and loaded.extra["best"]["step"] == 6
    described = f"step 6, eval/is_ll = {values[2]:g} ({mode})"
    assert describe_best(loaded.extra["best"]) == described
    if mode == "max":  # `mmtrain eval RUN` says which checkpoint it took, once is enough
        out = tmp_path / "eval"
        small = ["--is-samples", "2", "--max-examples", "8", "--max-train-examples", "8"]
        command = ["eval", str(tmp_path / "run"), "--out", str(out), "--no-pictures", *small]
        assert main([*command, "--joint-samples", "8", "--classifier-epochs", "1"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["checkpoint"] == str(best) and printed["best"]["step"] == 6
        assert f"the run's best checkpoint: {described}" in (out / "report.md").read_text()


def test_keep_best_with_real_validation_picks_the_logged_best(tmp_path: Path) -> None:
    config = tiny_config(
        tmp_path, *WATCHED, "train.eval_batches=1", "train.eval_is_samples=2",
        "train.keep_best={metric: eval/elbo}",
    )  # fmt: skip
    train(config, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    logged = {line["step"]: line["eval/elbo"] for line in lines if "eval/elbo" in line}
    assert sorted(logged) == [2, 4, 6, 8, 10, 12]  # once per step, none repeated at the end
    best_step = max(logged, key=logged.__getitem__)
    state = read_state(tmp_path / "run" / "checkpoints" / "best")
    assert state["step"] == best_step and state["best"]["value"] == logged[best_step]


def test_early_stopping_stops_at_exactly_the_right_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """min_delta 0.1, patience 2: 3.05 at step 8 is no improvement on 3.0, nor 2.9 at 10."""
    monkeypatch.setattr(loop, "evaluate", Sequence([1.0, 2.0, 3.0, 3.05, 2.9] + [9.0] * 10))
    config = tiny_config(
        tmp_path,
        *WATCHED,
        "train.steps=30",
        "train.early_stopping={metric: eval/is_ll, patience: 2, min_delta: 0.1}",
    )
    result = train(config, progress=False)
    run = tmp_path / "run"
    assert result["steps"] == 10 and result["planned_steps"] == 30
    assert result["stopped_early"] is True
    assert "early stopping at step 10" in result["stop_reason"]
    assert "for 2 evaluations (best 3 at step 6)" in result["stop_reason"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["stop_reason"] == result["stop_reason"]
    assert list_checkpoints(run / "checkpoints")[-1].name == "step-00000010"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
    assert max(steps) == 10


def test_resume_continues_the_best_and_early_stopping_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Best 3.0 at step 4; then 2.0, 2.5, 2.2 (steps 6, 8, 10): with patience 3 the run
    stops at step 10. A run stopped at step 8 and resumed must do the same: starting its
    counters afresh would take step 10 as the new best and stop at 16."""
    values = [1.0, 3.0, 2.0, 2.5, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7]
    watch = (
        *WATCHED,
        "train.keep_last=20",
        "train.keep_best={metric: eval/is_ll}",
        "train.early_stopping={metric: eval/is_ll, patience: 3}",
    )
    monkeypatch.setattr(loop, "evaluate", Sequence(values))
    straight = train(tiny_config(tmp_path / "a", *watch, "train.steps=20"), progress=False)
    monkeypatch.setattr(loop, "evaluate", Sequence(values))
    train(tiny_config(tmp_path / "b", *watch, "train.steps=8"), progress=False)
    state = read_state(tmp_path / "b" / "run" / "checkpoints" / "step-00000008")
    assert state["monitor"]["early_stopping"]["stale"] == 2
    assert state["monitor"]["keep_best"]["best_step"] == 4
    monkeypatch.setattr(loop, "evaluate", Sequence(values, start=4))
    resumed = train(
        tiny_config(tmp_path / "b", *watch, "train.steps=20"), resume="latest", progress=False
    )
    for result in (straight, resumed):
        assert result["steps"] == 10 and result["stopped_early"]
        assert result["best_checkpoint"]["step"] == 4
    a, b = (tmp_path / name / "run" / "checkpoints" for name in ("a", "b"))
    assert read_state(b / "best")["step"] == 4
    assert same_weights(a / "best", b / "best")
    assert same_weights(a / "step-00000010", b / "step-00000010")


def test_unknown_metrics_fail_before_training_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'eval/is_ll'.*Known: eval/masked_obj"):
        tiny_config(tmp_path, *WATCHED, "train.keep_best={metric: eval/is_lll}")
    with pytest.raises(ConfigError, match="train.early_stopping.metric 'eval/accuracy'"):
        tiny_config(tmp_path, *WATCHED, "train.early_stopping={metric: eval/accuracy}")
    with pytest.raises(ConfigError, match="set train.eval_every > 0"):
        tiny_config(tmp_path, "train.keep_best={metric: eval/is_ll}")
    with pytest.raises(ConfigError, match="patience must be ≥ 1"):
        tiny_config(tmp_path, *WATCHED, "train.early_stopping={metric: eval/elbo, patience: 0}")
    with pytest.raises(ConfigError, match="train.keep_best needs 'metric'"):
        tiny_config(tmp_path, *WATCHED, "train.keep_best={mode: max}")
    with pytest.raises(ConfigError, match="mode must be one of 'max', 'min'"):
        tiny_config(tmp_path, *WATCHED, "train.keep_best={metric: eval/elbo, mode: up}")
    config = tiny_config(tmp_path, *WATCHED, "train.keep_best={metric: val/elbo}")
    assert config.train.keep_best is not None and config.train.keep_best.metric == "eval/elbo"


def test_a_metric_the_validation_does_not_report_fails_at_the_first_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A custom objective may not compute the ELBO: known to the config, absent at run time."""
    monkeypatch.setattr(loop, "evaluate", Sequence([1.0] * 6))
    config = tiny_config(tmp_path, *WATCHED, "train.keep_best={metric: eval/elbo}")
    with pytest.raises(ConfigError, match=r"'eval/elbo' is not among.*Available: eval/is_ll$"):
        train(config, progress=False)


def test_the_names_the_config_accepts_are_what_the_validation_reports() -> None:
    from mmtrain.config import config_from_dict
    from tests.helpers import build_small_model, random_batch

    model = build_small_model()
    config = config_from_dict({"model": {"latent_dim": 3}, "train": {"eval_is_samples": 2}})
    batches = [random_batch(model, 8, seed=1)]
    reported = loop.evaluate(model, batches, config, torch.device("cpu"))  # type: ignore[arg-type]
    assert set(validation_metric_names("masked")) == set(reported) - {"eval/examples"}
