"""The training loop, written once on Accelerate.

It runs unchanged in one process (`mmtrain train`), in N processes on one node
(`accelerate launch -m mmtrain train`), and inside Ray Train workers (`--ray`), which set up
the process group before the loop builds its `Accelerator`. Top to bottom: data, model,
optimiser; resume; loop (accumulate → autocast → objective at the step's β → NaN check →
backward → gradient post-processing → step); log; evaluate (best checkpoint, early
stopping: `mmtrain.train.monitor`); checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object

from mmtrain import ops
from mmtrain.batch import Batch
from mmtrain.checkpoint import (
    BEST_NAME,
    capture_rng_state,
    load_checkpoint,
    read_state,
    remove_stale_temporaries,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
    with_fallback,
)
from mmtrain.config import TrainConfig, config_from_dict
from mmtrain.data.loader import BatchLoader, build_loader
from mmtrain.errors import CheckpointError, ConfigError, MMTrainError
from mmtrain.factory import build_model, check_compatible, model_signature, plugin_provenance
from mmtrain.model import MultiModalVAE
from mmtrain.objectives import (
    ObjectiveModule,
    beta_at_step,
    combined_stderr,
    importance_sampling,
    objective_key,
)
from mmtrain.optim import build_optimizer, postprocess_gradients
from mmtrain.progress import progress_bar
from mmtrain.train import rundir, trackers
from mmtrain.train.monitor import RunMonitor

logger = logging.getLogger(__name__)

#: a checkpoint callback for launchers (Ray): (metrics, checkpoint directory or None)
Reporter = Callable[[dict[str, float], Path | None], None]


class TrainingDiverged(MMTrainError):
    """Too many consecutive steps produced a non-finite loss."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a step; `checkpoint` holds that step."""

    def __init__(
        self, step: int, checkpoint: Path | None, is_main: bool = True, world_size: int = 1
    ) -> None:
        where = f"; checkpoint {checkpoint}" if checkpoint else ""
        super().__init__(f"interrupted at step {step}{where}")
        self.step = step
        self.checkpoint = checkpoint
        self.is_main = is_main
        self.world_size = world_size


class InterruptFlag:
    """Ctrl-C while training: the first SIGINT asks the loop to stop once the current step
    is done (it then writes a checkpoint and raises `TrainingInterrupted`); a second SIGINT
    raises `KeyboardInterrupt` at once. SIGINTs within `SAME_PRESS_S` of the first count as
    the same Ctrl-C: under `accelerate launch` (torchrun) each worker gets the terminal's
    SIGINT and, a moment later, the one the launcher forwards. Installed only in the main
    thread (Python delivers signals there; Ray Train runs the loop in another thread and
    its driver handles Ctrl-C)."""

    SAME_PRESS_S = 1.0

    def __init__(self) -> None:
        self.requested = False
        self.first: float | None = None

    def _handle(self, signum: int, frame: object) -> None:
        now = time.monotonic()
        if self.first is not None:
            if now - self.first < self.SAME_PRESS_S:
                return
            raise KeyboardInterrupt
        self.first = now
        self.requested = True
        logger.warning(
            "\ninterrupt: finishing the current step and writing a checkpoint "
            "(Ctrl-C again to stop at once)"
        )

    @contextmanager
    def installed(self) -> Iterator[InterruptFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def learning_rate_factor(step: int, config: TrainConfig, total_steps: int | None) -> float:
    """Linear warm-up, then constant, cosine or linear decay to `min_lr_ratio`."""
    optim = config.optim
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant" or not total_steps:
        return 1.0
    span = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    floor = optim.min_lr_ratio
    if optim.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * (1 - progress)


@dataclass
class _Window:
    """Sums of logged values since the last log line, reduced across ranks when logged."""

    sums: dict[str, torch.Tensor]
    steps: int = 0
    examples: int = 0
    started: float = 0.0

    @classmethod
    def fresh(cls) -> _Window:
        return cls({}, 0, 0, time.perf_counter())

    def add(self, values: dict[str, torch.Tensor], examples: int) -> None:
        # Device tensors, summed without reading them: one host sync per log line, not per step.
        for key, value in values.items():
            value = value if value.dtype == torch.float64 else value.float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1
        self.examples += examples


class MetricsLog:
    """`metrics.jsonl`, written by the main process, and the same lines (keys, values,
    steps) to the trackers of `train.log_with` through Accelerate, which logs from the main
    process only.

    A run that starts at `start_step` > 0 or again from step 0 (`resumed`) first drops what
    the interrupted run logged after that step, so every step appears once: lines of
    `metrics.jsonl` after it are cut, and TensorBoard purges its events from `start_step + 1`
    on (`purge_step`). MLflow and W&B start a new run of the project instead."""

    def __init__(
        self, directory: Path, accelerator: Any, start_step: int = 0, resumed: bool = False
    ) -> None:
        self.directory = directory
        self.enabled = accelerator.is_main_process
        self.accelerator = accelerator
        self.handle = None
        self.dropped = 0
        if not self.enabled:
            return
        directory.mkdir(parents=True, exist_ok=True)
        if resumed:
            self.dropped = rundir.truncate_metrics(directory, start_step)
        self.handle = (directory / rundir.METRICS_FILE).open("a")

    def start_trackers(self, config: TrainConfig, start_step: int, resumed: bool) -> None:
        """Start a run in each tracker of `train.log_with` and record the config there."""
        if not self.enabled or not config.train.log_with:
            return
        self.accelerator.init_trackers(
            trackers.project_name(config.train, self.directory),
            config=trackers.flat_config(config.to_dict()),
            init_kwargs=trackers.init_kwargs(config.train, self.directory, start_step, resumed),
        )

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled or self.handle is None:
            return
        self.handle.write(json.dumps({"step": step, **values}) + "\n")
        self.handle.flush()
        self.accelerator.log(values, step=step)

    def flush(self) -> None:
        """Put `metrics.jsonl` on disk (before a checkpoint: what a resumed run keeps must
        not be lost with the process); Accelerate's trackers write through at each log."""
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        # Not `accelerator.end_training()`: it also destroys the process group, which Ray
        # Train owns and still uses after the loop returns.
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()


def _make_accelerator(config: TrainConfig, output: Path):  # noqa: ANN202
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    use_cpu = config.train.cpu or not torch.cuda.is_available()
    trackers.check_installed(config.train.log_with)
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=config.train.mixed_precision,
        gradient_accumulation_steps=config.train.grad_accum,
        # MoE's prior rows only receive gradients in batches where some S is empty.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=config.train.log_with or None,
        project_config=ProjectConfiguration(
            project_dir=str(output), logging_dir=str(output / trackers.TENSORBOARD_DIR)
        ),
    )


@torch.no_grad()
def evaluate(
    model: MultiModalVAE, loader: BatchLoader, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """On held-out batches: the training objective (random S drawn as in training,
    `model.subset_mode`; L = 1; reconstruction weights 1, which are a training device only),
    the ELBO of q(z|x), and the importance-sampled log-likelihood with its Monte-Carlo
    standard error. In a multi-process run the logged standard error is the mean of the
    ranks' own, an upper bound of the overall one."""
    was_training = model.training
    model.eval()
    objective = config.model.objective
    module = ObjectiveModule.from_config(model, config.model)
    value, elbo, log_lik, count = 0.0, 0.0, 0.0, 0
    errors, elbo_missing = [], False
    for index, batch in enumerate(loader):
        if index >= config.train.eval_batches:
            break
        batch = batch.to(device)
        out = module.evaluate(batch)
        value += float(out.per_example.sum())
        if out.elbo is None:
            elbo_missing = True
        else:
            elbo += float(out.elbo.sum())
        estimate = importance_sampling(model, batch, config.train.eval_is_samples)
        log_lik += float(estimate.log_likelihood.sum())
        errors.append(estimate.stderr.cpu())
        count += batch.size
    model.train(was_training)
    if count == 0:
        return {}
    results = {
        f"eval/{objective_key(objective)}": value / count,
        "eval/is_ll": log_lik / count,
        "eval/is_ll_se": combined_stderr(torch.cat(errors)),
        "eval/examples": count,
    }
    if not elbo_missing:
        results["eval/elbo"] = elbo / count
    return results


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    reporter: Reporter | None = None,
    progress: bool = True,
    overwrite: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Train to `config.train.steps` (or epochs); return the final metrics and paths.

    Without `resume`, an `output_dir` that holds another run is refused (`ConfigError`), or
    moved aside to a sibling folder with `overwrite`. `run_id` names the run: a directory
    last written by the same id (a Ray worker group restarted before its first checkpoint)
    is started over in place. Ctrl-C stops after the current step with a checkpoint of it
    (`TrainingInterrupted`); a second Ctrl-C stops at once. With `train.early_stopping` it
    may end before `train.steps`; the result (and `summary.json`) then says why."""
    with ExitStack() as cleanup:
        run = _Run.start(config, resume, overwrite, run_id, reporter, progress, cleanup)
        for batch in run.batches():
            if not run.train_step(batch):
                continue  # a skipped non-finite step, or a micro-step of accumulation
            run.step += 1
            run.bar.update(1)
            if run.due(config.train.log_every) or run.step == run.total_steps:
                run.log_window()
            if config.train.eval_every and run.due(config.train.eval_every):
                run.evaluate()
            if config.train.checkpoint_every and run.due(config.train.checkpoint_every):
                run.checkpoint()
            if run.stopping and run.step < run.total_steps:
                run.stop_interrupted()
            if run.step >= run.total_steps or run.stopped_early:
                break
        return run.finish()


@dataclass
class _Run:
    """One training run: what `train` builds once (accelerator, data, model, optimiser,
    logs) and the position and numbers that change as it goes. Its methods are the named
    blocks of the loop: batches, train_step, log_window, evaluate, checkpoint, finish."""

    config: TrainConfig
    accelerator: Any
    output: Path
    loader: BatchLoader
    eval_loader: BatchLoader | None
    model: MultiModalVAE
    module: Any  # the ObjectiveModule as prepared by Accelerate (DDP-wrapped with > 1 rank)
    optimizer: Any
    base_lrs: list[float]
    signature: dict[str, Any]
    total_steps: int
    log: MetricsLog
    bar: Any
    interrupt: InterruptFlag
    reporter: Reporter | None
    monitor: RunMonitor
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    skip_batches: int = 0
    rng_state: dict[str, Any] | None = None
    nan_skipped: int = 0
    consecutive_nan: int = 0
    stopping: bool = False
    window: _Window = field(default_factory=lambda: _Window.fresh())
    last_logged: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, float] = field(default_factory=dict)
    last_eval_step: int = -1
    stopped_early: bool = False
    last_checkpoint: Path | None = None
    last_checkpoint_step: int = -1
    started: float = field(default_factory=time.perf_counter)
    cuda_graphs: bool = False

    # ------------------------------------------------------------------ setup

    @classmethod
    def start(
        cls,
        config: TrainConfig,
        resume: str | Path | None,
        overwrite: bool,
        run_id: str | None,
        reporter: Reporter | None,
        progress: bool,
        cleanup: ExitStack,
    ) -> _Run:
        output = Path(config.output_dir)
        accelerator = _make_accelerator(config, output)
        rank, world = accelerator.process_index, accelerator.num_processes
        ops.set_backend(config.train.kernels)
        restarted = _claim_output(accelerator, output, resume, overwrite, run_id)

        torch.manual_seed(config.seed)
        loader, model, signature, optimizer = _build_parts(config, rank, world)
        base_lrs = [group["lr"] for group in optimizer.param_groups]
        saved = _load_resumed(resume, output, signature, model, optimizer)
        if saved is None:
            torch.manual_seed(config.seed + 7919 * rank)
        elif accelerator.is_main_process:
            logger.info(f"resuming from {saved['path']} at step {saved['step']}")

        module, optimizer = _prepare_objective(accelerator, config, model, optimizer)
        start_step = 0 if saved is None else int(saved["step"])
        resumed = saved is not None or restarted
        log = _open_metrics_log(accelerator, config, output, start_step, resumed, cleanup)
        total_steps = _total_steps(config, loader, world)
        bar = progress_bar(
            enabled=accelerator.is_main_process and progress,
            total=total_steps,
            initial=start_step,
            desc="train",
            dynamic_ncols=True,
        )
        cleanup.callback(bar.close)  # an error message must not share the bar's line
        # From here on Ctrl-C stops after a step; before, it stops at once (nothing to save).
        interrupt = cleanup.enter_context(InterruptFlag().installed())
        run = cls(
            config=config,
            accelerator=accelerator,
            output=output,
            loader=loader,
            eval_loader=_eval_loader(config, rank, world),
            model=model,
            module=module,
            optimizer=optimizer,
            base_lrs=base_lrs,
            signature=signature,
            total_steps=total_steps,
            log=log,
            bar=bar,
            interrupt=interrupt,
            reporter=reporter,
            monitor=RunMonitor(config),
            cuda_graphs=_uses_cuda_graphs(config, accelerator.device),
        )
        if saved is not None:
            run.step = start_step
            run.epoch = int(saved["epoch"])
            run.skip_batches = int(saved["batches_in_epoch"])
            run.rng_state = saved["rng"].get(str(rank))
            run.restore_monitor(saved)
        return run

    def restore_monitor(self, saved: dict[str, Any]) -> None:
        """The best-so-far and early-stopping counters of the checkpoint resumed from."""
        fresh = self.monitor.restore(saved.get("monitor"))
        if not self.accelerator.is_main_process:
            return
        for key in fresh:
            logger.info(f"train.{key}: the checkpoint watched another metric; starting afresh")
        best = self.output / "checkpoints" / BEST_NAME
        if self.monitor.best is not None and (best / "state.json").is_file():
            try:
                best_step = read_state(best).get("step")
            except CheckpointError:
                best_step = None  # a damaged best checkpoint is replaced at the next best
            if best_step is not None and best_step > self.step:
                logger.warning(
                    f"{best} is from step {best_step}, after the resumed step {self.step}; "
                    "it is replaced when this run's validation beats the best value "
                    "recorded at the resumed step"
                )

    # ------------------------------------------------------------------ the loop's blocks

    def batches(self) -> Iterator[Batch]:
        """Batches on the device, epoch after epoch, from the resumed position."""
        while self.step < self.total_steps:
            self.loader.set_epoch(self.epoch)
            self.batches_in_epoch = 0
            for batch in self.loader:
                if self.rng_state is not None:
                    # After the epoch's iterator exists (creating it draws from the global
                    # RNG, as it did in the uninterrupted run) and before anything else draws.
                    restore_rng_state(self.rng_state)
                    self.rng_state = None
                self.batches_in_epoch += 1
                if self.batches_in_epoch <= self.skip_batches:
                    continue
                yield batch.to(self.accelerator.device)
            self.epoch += 1
            self.skip_batches = 0

    def train_step(self, batch: Batch) -> bool:
        """Forward, backward and (at the end of an accumulation) the optimiser step; False
        when no optimiser step happened (accumulating, or a non-finite loss skipped)."""
        accelerator, config = self.accelerator, self.config
        if self.cuda_graphs:
            # The previous step's outputs are no longer read: CUDA graphs may reuse them.
            torch.compiler.cudagraph_mark_step_begin()
        with accelerator.accumulate(self.module):
            beta = beta_at_step(config.model, self.step)
            with accelerator.autocast():
                out = self.module(batch, beta=beta)
            # One reduction per step carries the NaN check and Ctrl-C, so that every rank
            # stops after the same step.
            flags = [float(not torch.isfinite(out.loss)), float(self.interrupt.requested)]
            flags = torch.tensor(flags, device=accelerator.device)
            bad, stop = accelerator.reduce(flags, "max").tolist()
            self.stopping = self.stopping or bool(stop)
            if bad:
                self._skip_non_finite()
                return False
            self.consecutive_nan = 0
            accelerator.backward(out.loss)
            if accelerator.sync_gradients:
                factor = learning_rate_factor(self.step, config, self.total_steps)
                for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                    group["lr"] = base * factor
                accelerator.unscale_gradients()
                postprocess_gradients(
                    self.module.parameters(), config.optim.gradient.mode, config.optim.gradient.clip
                )
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        logged = out.logged_tensors()
        logged["beta"] = torch.tensor(beta, dtype=torch.float64, device=accelerator.device)
        self.window.add(logged, batch.size)
        return bool(accelerator.sync_gradients)

    def _skip_non_finite(self) -> None:
        self.nan_skipped += 1
        self.consecutive_nan += 1
        self.optimizer.zero_grad(set_to_none=True)
        if self.consecutive_nan >= self.config.train.max_nan_steps:
            raise TrainingDiverged(
                f"{self.consecutive_nan} consecutive steps had a non-finite loss "
                f"(step {self.step}); stopping. The last good checkpoint is "
                f"{self.last_checkpoint or 'none yet'}; lower optim.lr or check the data"
            )

    def due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def log_window(self) -> None:
        """Rank-averaged means of the window's logged values, with lr and data counters."""
        logged = _reduce_window(self.accelerator, self.window)
        logged["nan_skipped_steps"] = float(self.nan_skipped)
        logged["lr"] = self.optimizer.param_groups[0]["lr"]
        logged |= self.loader.metrics()
        self.last_logged = logged
        self.log.write(self.step, logged)
        shown = logged.get(f"train/{objective_key(self.config.model.objective)}")
        if shown is not None:
            self.bar.set_postfix(objective=f"{shown:.2f}")
        self.window = _Window.fresh()

    def evaluate(self) -> None:
        """Validate (once per step), then let the monitor keep the best checkpoint and
        decide on early stopping. Every rank sees the same reduced numbers, so every rank
        takes the same decision."""
        if self.eval_loader is None or self.last_eval_step == self.step:
            return
        self.eval_loader.set_epoch(0)
        results = evaluate(self.model, self.eval_loader, self.config, self.accelerator.device)
        self.last_eval = _reduce_dict(self.accelerator, results)
        self.last_eval_step = self.step
        self.log.write(self.step, self.last_eval)
        if not self.monitor.active:
            return
        decision = self.monitor.observe(self.last_eval, self.step)
        if decision.save_best:
            self._save(BEST_NAME)
        if decision.stop and not self.stopped_early and self.step < self.total_steps:
            self.stopped_early = True
            if self.accelerator.is_main_process:
                logger.info(self.monitor.stop_reason)

    def checkpoint(self) -> None:
        """Write a checkpoint of this step and tell the launcher."""
        path = self._save()
        self.last_checkpoint, self.last_checkpoint_step = path, self.step
        if self.reporter is not None:
            # The latest validation too: a sweep's scheduler (ASHA) ranks trials by it.
            self.reporter({"step": float(self.step), **self.last_logged, **self.last_eval}, path)

    def _save(self, name: str | None = None) -> Path | None:
        """Write a checkpoint of this step, `step-…` or `name` (every rank's RNG state in it,
        so each resumes its own stream; the monitor's state, so decisions resume too); its
        path on the main process, None elsewhere."""
        states = gather_object([{str(self.accelerator.process_index): capture_rng_state()}])
        path = None
        if self.accelerator.is_main_process:
            self.log.flush()
            state = {
                "epoch": self.epoch,
                "batches_in_epoch": self.batches_in_epoch,
                "world_size": self.accelerator.num_processes,
                "rng": {rank: rng for part in states for rank, rng in part.items()},
                "config": self.config.to_dict(),
                "model_signature": self.signature,
                "plugins": plugin_provenance(self.signature, self.config.model.objective),
                "metrics": self.last_logged,
                "eval": self.last_eval,
                "monitor": self.monitor.state(),
            }
            if name == BEST_NAME:
                state["best"] = self.monitor.best_record()
            path = save_checkpoint(
                self.output / "checkpoints",
                self.step,
                self.model,
                getattr(self.optimizer, "optimizer", self.optimizer),
                state,
                self.config.train.keep_last,
                name=name,
            )
        self.accelerator.wait_for_everyone()
        return path

    def stop_interrupted(self) -> None:
        """After Ctrl-C: log the partial window, checkpoint this step, stop."""
        if self.window.steps:
            self.log_window()
        if self.last_checkpoint_step != self.step:
            self.checkpoint()
        raise TrainingInterrupted(
            self.step,
            self.last_checkpoint,
            self.accelerator.is_main_process,
            self.accelerator.num_processes,
        )

    def _best_summary(self) -> dict[str, Any] | None:
        record = self.monitor.best_record()
        if record is None:
            return None
        return {"path": str(self.output / "checkpoints" / BEST_NAME), **record}

    def finish(self) -> dict[str, Any]:
        """The final evaluation and checkpoint; `summary.json`; the result."""
        self.bar.close()
        seconds = time.perf_counter() - self.started
        self.evaluate()
        if self.last_checkpoint_step != self.step:
            self.checkpoint()
        self.log.close()
        result: dict[str, Any] = {
            "steps": self.step,
            "planned_steps": self.total_steps,
            "epoch": self.epoch,
            "world_size": self.accelerator.num_processes,
            "seconds": seconds,
            "nan_skipped_steps": self.nan_skipped,
            "checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "output_dir": str(self.output),
            "stopped_early": self.stopped_early,
            "stop_reason": self.monitor.stop_reason if self.stopped_early else None,
            "best_checkpoint": self._best_summary(),
            **self.last_logged,
            **self.last_eval,
        }
        main = self.accelerator.is_main_process
        if main:
            (self.output / "summary.json").write_text(json.dumps(result, indent=1))
        # Under `accelerate launch` every process returns; only the main one prints a summary.
        result["is_main"] = main
        return result


def _build_parts(
    config: TrainConfig, rank: int, world: int
) -> tuple[BatchLoader, MultiModalVAE, dict[str, Any], torch.optim.Optimizer]:
    """The loader, the model, its signature and the optimiser, drawing from the global RNG
    in this order (the caller seeds it)."""
    loader = build_loader(config.data, rank, world)
    model = build_model(config.model, loader.plugins)
    signature = model_signature(
        config.model, loader.modalities, loader.plugins, loader.event_shapes
    )
    optimizer = build_optimizer(
        model.parameters(), config.optim.name, config.optim.lr, config.optim.weight_decay
    )
    return loader, model, signature, optimizer


def _prepare_objective(
    accelerator: Any, config: TrainConfig, model: MultiModalVAE, optimizer: torch.optim.Optimizer
) -> tuple[Any, Any]:
    """The objective around `model` and the optimiser, prepared by Accelerate, in train mode;
    with `train.compile`, the prepared module under `torch.compile` (outermost, around DDP,
    as Accelerate itself compiles). Checkpoints save `model`, never the compiled wrapper, so
    their keys carry no `_orig_mod.` and eager and compiled runs resume each other."""
    objective = ObjectiveModule.from_config(model, config.model)
    module, optimizer = accelerator.prepare(objective, optimizer)
    module.train()
    if config.train.compile:
        # Not Accelerate's TorchDynamoPlugin: AcceleratorState keeps the plugin of the first
        # Accelerator in the process, so a later run there would silently not compile.
        if config.train.compile_backend == "inductor":
            module = torch.compile(module, mode=compile_mode(config, accelerator.device))
        else:
            module = torch.compile(module, backend=config.train.compile_backend)
    return module, optimizer


def compile_mode(config: TrainConfig, device: torch.device) -> str:
    """`train.compile_mode`, or by default `reduce-overhead` (CUDA graphs: our models are
    small and launch-bound) on CUDA and `default` elsewhere."""
    if config.train.compile_mode is not None:
        return config.train.compile_mode
    return "reduce-overhead" if device.type == "cuda" else "default"


def _uses_cuda_graphs(config: TrainConfig, device: torch.device) -> bool:
    train = config.train
    if not train.compile or train.compile_backend != "inductor" or device.type != "cuda":
        return False
    return compile_mode(config, device) in ("reduce-overhead", "max-autotune")


def _open_metrics_log(
    accelerator: Any,
    config: TrainConfig,
    output: Path,
    start_step: int,
    resumed: bool,
    cleanup: ExitStack,
) -> MetricsLog:
    """The metrics log and its trackers, closed by `cleanup`; the main process also writes
    config.json."""
    log = MetricsLog(output, accelerator, start_step, resumed=resumed)
    cleanup.callback(log.close)
    if accelerator.is_main_process:
        _announce_dropped(log, output, start_step)
        (output / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        log.start_trackers(config, start_step, resumed)
    return log


def _load_resumed(
    resume: str | Path | None,
    output: Path,
    signature: dict[str, Any],
    model: MultiModalVAE,
    optimizer: torch.optim.Optimizer,
) -> dict[str, Any] | None:
    """Load the checkpoint to resume from into `model` and `optimizer`; its state (with its
    `path`), or None when not resuming. A corrupt checkpoint names the previous valid one."""
    if resume is None:
        return None
    path = resolve_checkpoint(resume, output)
    try:
        saved = read_state(path)
        check_compatible(saved.get("model_signature", {}), signature, path)
        load_checkpoint(path, model, optimizer)
    except CheckpointError as error:
        raise with_fallback(error, path) from None
    return {**saved, "path": path}


def _total_steps(config: TrainConfig, loader: BatchLoader, world: int) -> int:
    if config.train.steps is not None:
        return config.train.steps
    rows = loader.num_rows
    if rows is None:
        raise ConfigError("train.epochs needs a dataset whose size is known; set train.steps")
    per_rank = math.ceil(rows / world)
    batches = math.ceil(per_rank / config.data.batch_size)
    if config.data.drop_last:
        batches = per_rank // config.data.batch_size
    return max(1, (batches // config.train.grad_accum) * int(config.train.epochs or 1))


def _eval_loader(config: TrainConfig, rank: int, world: int) -> BatchLoader | None:
    if not (config.train.eval_every and config.train.eval_split):
        return None
    eval_data = config.data.replace(split=config.train.eval_split, on_bad_row="skip")
    return build_loader(eval_data, rank, world)


def _announce_dropped(log: MetricsLog, output: Path, start_step: int) -> None:
    if log.dropped:
        logger.info(
            f"dropped {log.dropped} lines of {output / rundir.METRICS_FILE} logged after "
            f"step {start_step} (they are computed again)"
        )


def _claim_output(
    accelerator: Any, output: Path, resume: object, overwrite: bool, run_id: str | None
) -> bool:
    """Check `output` on every rank before anything is written to it: another run there is
    refused unless `overwrite` (the main process then moves it aside). Then record this
    run's id and remove temporary checkpoint folders of dead processes. Returns whether
    this run restarts its own earlier attempt (same `run_id`) in place."""
    if resume is not None and overwrite:
        raise ConfigError(rundir.OVERWRITE_AND_RESUME)
    found = next((m for m in gather_object([rundir.clash(output, resume, run_id)]) if m), None)
    if found and not overwrite:
        raise rundir.refusal(output, found)
    restarted = resume is None and not found and rundir.is_own_run(output, run_id)
    if accelerator.is_main_process:
        if found:
            moved = rundir.move_aside(output)
            logger.info(f"--overwrite: moved the previous run in {output} to {moved}")
        rundir.claim(output, run_id)
        removed = remove_stale_temporaries(output / "checkpoints")
        if removed:
            names = ", ".join(p.name for p in removed)
            logger.info(f"removed temporary checkpoint folders of stopped runs: {names}")
    accelerator.wait_for_everyone()
    return restarted


def _reduce_dict(accelerator: Any, values: dict[str, float]) -> dict[str, float]:
    if not values or accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], device=accelerator.device, dtype=torch.float64)
    reduced = accelerator.reduce(tensor, "mean")
    return dict(zip(keys, reduced.tolist()))


def _reduce_window(accelerator: Any, window: _Window) -> dict[str, float]:
    """Per-step means across the window and across ranks; throughput over all ranks."""
    elapsed = max(time.perf_counter() - window.started, 1e-9)
    keys = sorted(window.sums)
    local = [] if not keys else torch.stack([window.sums[k] for k in keys]).tolist()
    values = dict(zip(keys, (value / max(window.steps, 1) for value in local)))
    values = _reduce_dict(accelerator, values)
    out = {f"train/{k}": v for k, v in values.items()}
    micro_steps = window.steps
    out["train/steps_per_second"] = micro_steps / elapsed / accelerator.gradient_accumulation_steps
    examples = torch.tensor(float(window.examples), device=accelerator.device)
    if accelerator.num_processes > 1:
        examples = accelerator.reduce(examples, "sum")
    out["train/examples_per_second"] = float(examples) / elapsed
    return out


def load_run_config(path: str | Path) -> TrainConfig:
    """The resolved config stored with a checkpoint."""
    state = read_state(resolve_checkpoint(path))
    return config_from_dict(state["config"])
