"""The training loop, written once on Accelerate.

It runs unchanged in one process (`mmtrain train`), in N processes on one node
(`accelerate launch -m mmtrain train`), and inside Ray Train workers (`--ray`), which set up
the process group before the loop builds its `Accelerator`. Top to bottom: data, model,
optimiser; resume; loop (accumulate → autocast → objective → NaN check → backward →
gradient post-processing → step); log; evaluate; checkpoint.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmtrain import ops
from mmtrain.checkpoint import (
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
from mmtrain.modality import ModalityPlugin
from mmtrain.model import MultiModalVAE
from mmtrain.nets import initialise
from mmtrain.objectives import combined_stderr, importance_sampling, objective_key
from mmtrain.optim import build_optimizer, postprocess_gradients
from mmtrain.priors import build_prior
from mmtrain.registry import AGGREGATORS, OBJECTIVES
from mmtrain.train import rundir

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
        print(
            "\ninterrupt: finishing the current step and writing a checkpoint "
            "(Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
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


def build_model(config: TrainConfig, plugins: dict[str, ModalityPlugin]) -> MultiModalVAE:
    """The model of a config: plugin networks, the aggregator, the prior, initialised with
    `model.init`."""
    cfg = config.model
    aggregator_cls = AGGREGATORS.get(cfg.aggregator)
    OBJECTIVES.get(cfg.objective)
    latent = cfg.latent_dim
    feature_dim = aggregator_cls.required_feature_dim(latent) or cfg.feature_dim
    components = cfg.prior.components
    modalities = {name: plugin.build(feature_dim, latent) for name, plugin in plugins.items()}
    try:
        aggregator = aggregator_cls(
            feature_dim,
            latent,
            components,
            cfg.posterior_family,
            cfg.min_scale,
            **cfg.aggregator_options,
        )
    except TypeError as error:
        raise ConfigError(f"model.aggregator_options for {cfg.aggregator}: {error}") from None
    prior = build_prior(latent, components, cfg.prior.family, learned=cfg.prior.kind == "mixture")
    model = MultiModalVAE(modalities, aggregator, prior, cfg.reconstruction_weights)
    return initialise(model, cfg.init)


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


def model_signature(config: TrainConfig, loader: BatchLoader) -> dict[str, Any]:
    """What a checkpoint must agree on to be loaded into this run's model."""
    return {
        "modalities": {
            name: {
                "kind": spec.kind,
                "options": _plugin_options(loader.plugins[name], spec.options),
            }
            for name, spec in loader.modalities.items()
        },
        "event_shapes": {k: list(v) for k, v in loader.event_shapes.items()},
        "aggregator": config.model.aggregator,
        "aggregator_options": config.model.aggregator_options,
        "latent_dim": config.model.latent_dim,
        "feature_dim": config.model.feature_dim,
        "prior": {
            "kind": config.model.prior.kind,
            "components": config.model.prior.components,
            "family": config.model.prior.family,
        },
        "posterior_family": config.model.posterior_family,
    }


def _plugin_options(plugin: ModalityPlugin, fallback: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(plugin.options()))
    except NotImplementedError:
        return dict(fallback)


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    differences = [
        f"{key}: checkpoint {saved.get(key)!r} vs config {value!r}"
        for key, value in current.items()
        if json.loads(json.dumps(saved.get(key))) != json.loads(json.dumps(value))
    ]
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was written for another model; " + "; ".join(differences[:3])
        )


def plugin_provenance(signature: dict[str, Any], objective: str) -> dict[str, Any]:
    """Registry names and package versions of every plugin the model uses."""
    from mmtrain.registry import provenance

    kinds = {spec["kind"] for spec in signature["modalities"].values()}
    return provenance(
        {"modality": kinds, "aggregator": [signature["aggregator"]], "objective": [objective]}
    )


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
    """JSON lines and TensorBoard, written by the main process only.

    A run that starts at `start_step` > 0 or again from step 0 (`resumed`) first drops what
    the interrupted run logged after that step, so every step appears once: lines of
    `metrics.jsonl` after it are cut, and TensorBoard events from `start_step + 1` on are
    purged (`SummaryWriter(purge_step=...)`)."""

    def __init__(
        self, directory: Path, enabled: bool, start_step: int = 0, resumed: bool = False
    ) -> None:
        self.enabled = enabled
        self.writer = None
        self.handle = None
        self.dropped = 0
        if not enabled:
            return
        directory.mkdir(parents=True, exist_ok=True)
        if resumed:
            self.dropped = rundir.truncate_metrics(directory, start_step)
        self.handle = (directory / rundir.METRICS_FILE).open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = start_step + 1 if resumed else None
            self.writer = SummaryWriter(str(directory / "tensorboard"), purge_step=purge)
        except ImportError:
            self.writer = None

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled or self.handle is None:
            return
        self.handle.write(json.dumps({"step": step, **values}) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def flush(self) -> None:
        """Put everything logged so far on disk (before a checkpoint: what a resumed run
        keeps must not be lost with the process)."""
        if self.handle is not None:
            self.handle.flush()
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _make_accelerator(config: TrainConfig):  # noqa: ANN202
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    use_cpu = config.train.cpu or not torch.cuda.is_available()
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=config.train.mixed_precision,
        gradient_accumulation_steps=config.train.grad_accum,
        # MoE's prior rows only receive gradients in batches where some S is empty.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


@torch.no_grad()
def evaluate(
    model: MultiModalVAE, loader: BatchLoader, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """On held-out batches: the training objective (random S drawn as in training,
    `model.subset_mode`; L = 1; reconstruction weights 1, which are a training device only),
    the ELBO of q(z|x) (when the objective computes it), and the importance-sampled
    log-likelihood with its Monte-Carlo standard error. In a multi-process run the logged
    standard error is the mean of the ranks' own, an upper bound of the overall one."""
    was_training = model.training
    model.eval()
    objective = config.model.objective
    value, elbo, log_lik, count = 0.0, 0.0, 0.0, 0
    errors, elbo_missing = [], False
    for index, batch in enumerate(loader):
        if index >= config.train.eval_batches:
            break
        batch = batch.to(device)
        out = model(
            batch,
            objective,
            samples=1,
            beta=config.model.beta,
            subset_mode=config.model.subset_mode,
            reconstruction_weights=False,
            elbo=True,
        )
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
    (`TrainingInterrupted`); a second Ctrl-C stops at once."""
    with ExitStack() as cleanup:
        return _train(config, resume, reporter, progress, overwrite, run_id, cleanup)


def _train(
    config: TrainConfig,
    resume: str | Path | None,
    reporter: Reporter | None,
    progress: bool,
    overwrite: bool,
    run_id: str | None,
    cleanup: ExitStack,
) -> dict[str, Any]:
    accelerator = _make_accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    device = accelerator.device
    ops.set_backend(config.train.kernels)
    output = Path(config.output_dir)
    checkpoint_dir = output / "checkpoints"
    main = accelerator.is_main_process
    restarted = _claim_output(accelerator, output, resume, overwrite, run_id)

    torch.manual_seed(config.seed)
    loader = build_loader(config.data, rank, world)
    model = build_model(config, loader.plugins)
    signature = model_signature(config, loader)
    optimizer = build_optimizer(
        model.parameters(), config.optim.name, config.optim.lr, config.optim.weight_decay
    )
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    start_step, start_epoch, skip_batches, rng_state = 0, 0, 0, None
    if resume is not None:
        path = resolve_checkpoint(resume, output)
        try:
            saved = read_state(path)
        except CheckpointError as error:
            raise with_fallback(error, path) from None
        check_compatible(saved.get("model_signature", {}), signature, path)
        try:
            load_checkpoint(path, model, optimizer)
        except CheckpointError as error:
            raise with_fallback(error, path) from None
        start_step = int(saved["step"])
        start_epoch = int(saved["epoch"])
        skip_batches = int(saved["batches_in_epoch"])
        rng_state = saved["rng"][str(rank)] if str(rank) in saved["rng"] else None
        if main:
            print(f"resuming from {path} at step {start_step}", flush=True)
    else:
        torch.manual_seed(config.seed + 7919 * rank)

    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped: MultiModalVAE = accelerator.unwrap_model(model)
    model.train()

    total_steps = config.train.steps
    if total_steps is None:
        rows = loader.num_rows
        if rows is None:
            raise ConfigError("train.epochs needs a dataset whose size is known; set train.steps")
        per_rank = math.ceil(rows / world)
        batches = math.ceil(per_rank / config.data.batch_size)
        total_steps = max(1, (batches // config.train.grad_accum) * int(config.train.epochs or 1))

    log = MetricsLog(output, main, start_step, resumed=resume is not None or restarted)
    cleanup.callback(log.close)
    if main:
        if log.dropped:
            print(
                f"dropped {log.dropped} lines of {output / rundir.METRICS_FILE} logged after "
                f"step {start_step} (they are computed again)",
                flush=True,
            )
        (output / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    eval_loader: BatchLoader | None = None
    if config.train.eval_every and config.train.eval_split:
        eval_data = config.data.replace(split=config.train.eval_split, on_bad_row="skip")
        eval_loader = build_loader(eval_data, rank, world)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc="train",
        disable=None if main and progress else True,  # None: quiet when not a terminal
        dynamic_ncols=True,
    )
    cleanup.callback(bar.close)  # an error message must not share the bar's line
    step, epoch = start_step, start_epoch
    stopping = False
    nan_skipped, consecutive_nan = 0, 0
    window = _Window.fresh()
    last_logged: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    last_checkpoint: Path | None = None
    last_checkpoint_step = -1
    train_started = time.perf_counter()
    options = {
        "samples": config.model.samples,
        "beta": config.model.beta,
        "stl": config.model.stl,
        "subset_mode": config.model.subset_mode,
    }

    def save(step_: int, epoch_: int, batches_in_epoch: int) -> Path | None:
        # Every rank's RNG state goes into the checkpoint, so each resumes its own stream.
        rng = {str(rank): capture_rng_state()}
        gathered = _gather_objects(accelerator, rng)
        path = None
        if main:
            log.flush()
            merged: dict[str, Any] = {}
            for part in gathered:
                merged |= part
            state = {
                "epoch": epoch_,
                "batches_in_epoch": batches_in_epoch,
                "world_size": world,
                "rng": merged,
                "config": config.to_dict(),
                "model_signature": signature,
                "plugins": plugin_provenance(signature, config.model.objective),
                "metrics": last_logged,
            }
            path = save_checkpoint(
                checkpoint_dir,
                step_,
                unwrapped,
                _inner_optimizer(optimizer),
                state,
                config.train.keep_last,
            )
        accelerator.wait_for_everyone()
        return path

    # From here on Ctrl-C stops after a step; before, it stops at once (nothing to save).
    interrupt = cleanup.enter_context(InterruptFlag().installed())
    done = step >= total_steps
    while not done:
        loader.set_epoch(epoch)
        batch_index = 0
        for batch in loader:
            if rng_state is not None:
                # After the epoch's iterator exists (creating it draws from the global RNG,
                # as it did in the uninterrupted run) and before anything else draws.
                restore_rng_state(rng_state)
                rng_state = None
            if batch_index < skip_batches:
                batch_index += 1
                continue
            batch_index += 1
            batch = batch.to(device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    out = model(batch, config.model.objective, **options)
                # One reduction per step carries the NaN check and Ctrl-C, so that every
                # rank stops after the same step.
                flags = [float(not torch.isfinite(out.loss)), float(interrupt.requested)]
                flags = torch.tensor(flags, device=device)
                bad, stop = accelerator.reduce(flags, "max").tolist()
                stopping = stopping or bool(stop)
                if bad:
                    nan_skipped += 1
                    consecutive_nan += 1
                    optimizer.zero_grad(set_to_none=True)
                    if consecutive_nan >= config.train.max_nan_steps:
                        raise TrainingDiverged(
                            f"{consecutive_nan} consecutive steps had a non-finite loss "
                            f"(step {step}); stopping. The last good checkpoint is "
                            f"{last_checkpoint or 'none yet'}; lower optim.lr or check the data"
                        )
                    continue
                consecutive_nan = 0
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    factor = learning_rate_factor(step, config, total_steps)
                    for group, base in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base * factor
                    accelerator.unscale_gradients()
                    postprocess_gradients(
                        model.parameters(), config.optim.gradient.mode, config.optim.gradient.clip
                    )
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window.add(out.logged_tensors(), batch.size)
            if not accelerator.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if step % config.train.log_every == 0 or step == total_steps:
                last_logged = _reduce_window(accelerator, window, world)
                last_logged["nan_skipped_steps"] = float(nan_skipped)
                last_logged["lr"] = optimizer.param_groups[0]["lr"]
                last_logged |= loader.metrics()
                log.write(step, last_logged)
                shown = last_logged.get(f"train/{objective_key(config.model.objective)}")
                if shown is not None:
                    bar.set_postfix(objective=f"{shown:.2f}")
                window = _Window.fresh()
            if eval_loader is not None and step % config.train.eval_every == 0:
                eval_loader.set_epoch(0)
                last_eval = _reduce_dict(
                    accelerator, evaluate(unwrapped, eval_loader, config, device)
                )
                log.write(step, last_eval)
            if config.train.checkpoint_every and step % config.train.checkpoint_every == 0:
                last_checkpoint = save(step, epoch, batch_index)
                last_checkpoint_step = step
                if reporter is not None:
                    reporter({"step": float(step), **last_logged}, last_checkpoint)
            if stopping and step < total_steps:
                if window.steps:
                    last_logged = _reduce_window(accelerator, window, world)
                    log.write(step, last_logged)
                if last_checkpoint_step != step:
                    last_checkpoint = save(step, epoch, batch_index)
                    if reporter is not None:
                        reporter({"step": float(step), **last_logged}, last_checkpoint)
                raise TrainingInterrupted(step, last_checkpoint, main, world)
            if step >= total_steps:
                done = True
                break
        else:
            epoch += 1
            skip_batches = 0
            continue
        break
    bar.close()
    seconds = time.perf_counter() - train_started
    if eval_loader is not None:
        eval_loader.set_epoch(0)
        last_eval = _reduce_dict(accelerator, evaluate(unwrapped, eval_loader, config, device))
        log.write(step, last_eval)
    if last_checkpoint_step != step:
        last_checkpoint = save(step, epoch, batch_index)
        if reporter is not None:
            reporter({"step": float(step), **last_logged}, last_checkpoint)
    log.close()
    result: dict[str, Any] = {
        "steps": step,
        "epoch": epoch,
        "world_size": world,
        "seconds": seconds,
        "nan_skipped_steps": nan_skipped,
        "checkpoint": str(last_checkpoint) if last_checkpoint else None,
        "output_dir": str(output),
        **last_logged,
        **last_eval,
    }
    if main:
        (output / "summary.json").write_text(json.dumps(result, indent=1))
    # Under `accelerate launch` every process returns; only the main one prints a summary.
    result["is_main"] = main
    return result


def _claim_output(
    accelerator: Any, output: Path, resume: object, overwrite: bool, run_id: str | None
) -> bool:
    """Check `output` on every rank before anything is written to it: another run there is
    refused unless `overwrite` (the main process then moves it aside). Then record this
    run's id and remove temporary checkpoint folders of dead processes. Returns whether
    this run restarts its own earlier attempt (same `run_id`) in place."""
    if resume is not None and overwrite:
        raise ConfigError(rundir.OVERWRITE_AND_RESUME)
    found = next(
        (m for m in _gather_objects(accelerator, rundir.clash(output, resume, run_id)) if m), None
    )
    if found and not overwrite:
        raise rundir.refusal(output, found)
    restarted = resume is None and not found and rundir.is_own_run(output, run_id)
    if accelerator.is_main_process:
        if found:
            moved = rundir.move_aside(output)
            print(f"--overwrite: moved the previous run in {output} to {moved}", flush=True)
        rundir.claim(output, run_id)
        removed = remove_stale_temporaries(output / "checkpoints")
        if removed:
            names = ", ".join(p.name for p in removed)
            print(f"removed temporary checkpoint folders of stopped runs: {names}", flush=True)
    accelerator.wait_for_everyone()
    return restarted


def _inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)


def _gather_objects(accelerator: Any, value: Any) -> list[Any]:
    if accelerator.num_processes == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * accelerator.num_processes
    dist.all_gather_object(gathered, value)
    return gathered


def _reduce_dict(accelerator: Any, values: dict[str, float]) -> dict[str, float]:
    if not values or accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], device=accelerator.device, dtype=torch.float64)
    reduced = accelerator.reduce(tensor, "mean")
    return dict(zip(keys, reduced.tolist()))


def _reduce_window(accelerator: Any, window: _Window, world: int) -> dict[str, float]:
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
    if world > 1:
        examples = accelerator.reduce(examples, "sum")
    out["train/examples_per_second"] = float(examples) / elapsed
    return out


def load_run_config(path: str | Path) -> TrainConfig:
    """The resolved config stored with a checkpoint."""
    state = read_state(resolve_checkpoint(path))
    return config_from_dict(state["config"])
