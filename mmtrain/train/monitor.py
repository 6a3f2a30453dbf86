"""What the training loop watches in its periodic validation (`train.eval_every`): the best
checkpoint (`train.keep_best`) and early stopping (`train.early_stopping`).

Both follow one validation metric, a key of what `mmtrain.train.loop.evaluate` returns
(`eval/is_ll`, `eval/elbo`, `eval/<objective>_objective`, `eval/is_ll_se`). Their state —
the best value so far, its step, the evaluations since the last improvement — goes into
every checkpoint's `state.json` (`RunMonitor.state`), so a resumed run decides exactly as
the uninterrupted one would have.

This module imports nothing heavy: the config's validation uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmtrain.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from mmtrain.config import TrainConfig

#: the prefix of the validation metrics in the metrics log; `val/` is read as this
EVAL_PREFIX = "eval/"
_ALIASES = ("val/", "validation/")


def validation_metric_names(objective: str) -> list[str]:
    """The metrics the loop's periodic validation reports for `objective` (the ELBO only when
    the objective computes it, as both built-in objectives do)."""
    return [
        f"{EVAL_PREFIX}{objective}_objective",
        f"{EVAL_PREFIX}elbo",
        f"{EVAL_PREFIX}is_ll",
        f"{EVAL_PREFIX}is_ll_se",
    ]


def canonical_metric(metric: str) -> str:
    """`val/is_ll` (the issue's spelling) → `eval/is_ll` (the metrics log's)."""
    for alias in _ALIASES:
        if metric.startswith(alias):
            return EVAL_PREFIX + metric[len(alias) :]
    return metric


def check_metric(metric: str, objective: str, where: str) -> None:
    """Refuse a metric the loop's validation never reports, naming the ones it does."""
    known = validation_metric_names(objective)
    if metric not in known:
        raise ConfigError(
            f"{where} {metric!r} is not a validation metric{did_you_mean(metric, known)} "
            f"Known: {', '.join(known)}"
        )


def metric_value(results: dict[str, float], metric: str, where: str) -> float:
    """`results[metric]`, or a `ConfigError` listing the metrics this evaluation reported."""
    if metric not in results:
        available = ", ".join(sorted(k for k in results if k != f"{EVAL_PREFIX}examples"))
        raise ConfigError(
            f"{where} {metric!r} is not among the validation metrics of this run"
            f"{did_you_mean(metric, results)} Available: {available or 'none (no rows)'}"
        )
    return float(results[metric])


@dataclass
class Tracker:
    """The best value of one metric so far and the evaluations since it last improved by
    more than `min_delta`. A NaN or infinite value never improves."""

    metric: str
    mode: str = "max"
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    stale: int = 0

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float, step: int) -> bool:
        """Record one evaluation; True when it is the new best."""
        if self.improves(value):
            self.best, self.best_step, self.stale = value, step, 0
            return True
        self.stale += 1
        return False

    def state(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "min_delta": self.min_delta,
            "best": self.best,
            "best_step": self.best_step,
            "stale": self.stale,
        }

    def restore(self, state: dict[str, Any] | None) -> bool:
        """Continue from a checkpoint's state of the same metric, mode and min_delta; False
        (and nothing restored) when it watched something else."""
        if not state or any(
            state.get(key) != getattr(self, key) for key in ("metric", "mode", "min_delta")
        ):
            return False
        self.best, self.best_step = state["best"], state["best_step"]
        self.stale = int(state["stale"])
        return True


@dataclass
class Decision:
    """What one evaluation asks of the loop."""

    save_best: bool = False
    stop: bool = False


class RunMonitor:
    """The best checkpoint's and early stopping's trackers of one run."""

    def __init__(self, config: TrainConfig) -> None:
        keep, stopping = config.train.keep_best, config.train.early_stopping
        self.best = None if keep is None else Tracker(keep.metric, keep.mode)
        self.early = None
        self.patience = 0
        if stopping is not None:
            self.early = Tracker(stopping.metric, stopping.mode, stopping.min_delta)
            self.patience = stopping.patience
        self.stop_reason: str | None = None

    @property
    def active(self) -> bool:
        return self.best is not None or self.early is not None

    def observe(self, results: dict[str, float], step: int) -> Decision:
        """Update both trackers with one evaluation's (rank-reduced) results."""
        decision = Decision()
        if self.best is not None:
            value = metric_value(results, self.best.metric, "train.keep_best.metric")
            decision.save_best = self.best.update(value, step)
        if self.early is not None:
            value = metric_value(results, self.early.metric, "train.early_stopping.metric")
            self.early.update(value, step)
            if self.early.stale >= self.patience:
                decision.stop = True
                self.stop_reason = self._reason(step)
        return decision

    def _reason(self, step: int) -> str:
        early = self.early
        assert early is not None
        best = "no finite value yet" if early.best is None else f"best {early.best:.6g}"
        where = "" if early.best_step is None else f" at step {early.best_step}"
        return (
            f"early stopping at step {step}: {early.metric} has not improved by more than "
            f"{early.min_delta:g} ({early.mode}) for {self.patience} evaluation"
            f"{'s' if self.patience != 1 else ''} ({best}{where})"
        )

    def best_record(self) -> dict[str, Any] | None:
        """What the best checkpoint's state.json says about why it is the best."""
        if self.best is None or self.best.best_step is None:
            return None
        return {
            "metric": self.best.metric,
            "mode": self.best.mode,
            "value": self.best.best,
            "step": self.best.best_step,
        }

    def state(self) -> dict[str, Any]:
        """The JSON state a checkpoint keeps."""
        return {
            "keep_best": None if self.best is None else self.best.state(),
            "early_stopping": None if self.early is None else self.early.state(),
        }

    def restore(self, state: dict[str, Any] | None) -> list[str]:
        """Continue from a checkpoint's state; returns which trackers started afresh because
        the checkpoint watched another metric (or none)."""
        state = state or {}
        fresh = []
        for key, tracker in (("keep_best", self.best), ("early_stopping", self.early)):
            if tracker is not None and not tracker.restore(state.get(key)):
                fresh.append(key)
        return fresh
