"""Ahead-of-time check: compile every Triton kernel variant of `mmtrain.kernels` for real GPUs.

    python benchmarks/aot_kernels.py [--jobs 2] [--csv benchmarks/aot_kernels.csv]

Triton's interpreter, which runs the kernel tests on the CPU, accepts what the real compiler
rejects and never shows register pressure or spills. This script compiles, without a GPU,
every kernel a launcher can launch (forward and backward, every constexpr variant, every
tile configuration the launchers choose for the shapes `mmtrain.kernels.limits` claims to
support, for fp32, fp16 and bf16 inputs) for sm_80 (A100) and sm_90 (H100/H200), and
records per variant the registers per thread, spill stores/loads (from the `ptxas -v`
report of the cubin Triton builds), shared memory (`metadata.shared`) and the occupancy they
imply. It fails (exit status 1) on a compile error, on any spill, on shared memory above
the target's per-block limit, or when a launcher launches something other than what the
enumeration says it does.

What is enumerated: the launchers build each launch in one function
(`set_attention._forward_launch`, `mixture_log_prob._backward_launch`, ...) whose tile
choice comes from the module's `_launch_config`, a function of the set size and head width
(attention) or the sample count and latent width (mixture) only, and whose launch options
(`num_warps`, and `maxnreg` for the backward kernels) come from `launch.launch_options`.
M, Dh, d, the batch, heads and components are runtime arguments, not constexprs. So the
distinct (constexprs, launch options) tuples over the supported domain are found by
evaluating `_launch_config` on all of it (every M and Dh that `limits.set_attention_fits`
accepts; every d ≤ MAX_LATENT_DIM with L ≤ 64, and larger L choose what L = 64 chooses),
and each is compiled once per dtype and target, through the real launch builder applied to
meta tensors of one witness shape: the largest shape of its tile, with the self-attention
aggregator's q/k/v layout, B = 512, H = 4, C = 5. Signatures come from Triton's own
argument specialisation of those arguments (pointer dtypes, i32/i64, the divisibility-by-16
and equal-to-1 specialisations), exactly as `JITFunction.run` derives them on a GPU. Other
shapes of the same tile can differ only in those integer specialisations (e.g. a head width
that is not a multiple of 16): alignment facts for vectorised loads, not the tile; those
specialisations are not enumerated (there are thousands of combinations).

`--verify-cubin` also reads the registers and stack frame back from each cubin with
`cuobjdump --dump-resource-usage` and fails where they disagree with the ptxas report.

Compilation must happen where `TRITON_INTERPRET` is unset (the kernels are imported as
compiled kernels only then): `run_check` re-runs this script in a subprocess without it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT / "benchmarks" / "aot_kernels.csv"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_HEADING = "## Ahead-of-time kernel check"

DTYPES = ("float32", "float16", "bfloat16")
WITNESS_BATCH = 512
WITNESS_HEADS = 4
WITNESS_COMPONENTS = 5
#: Sample counts enumerated for the mixture; `_launch_config` caps BLOCK_L far below this.
MAX_ENUMERATED_SAMPLES = 64

CSV_COLUMNS = [
    "kernel",
    "variant",
    "dtype",
    "target",
    "blocks",
    "num_warps",
    "maxnreg",
    "witness",
    "registers",
    "shared_bytes",
    "spill_store_bytes",
    "spill_load_bytes",
    "stack_bytes",
    "blocks_per_sm",
    "warps_per_sm",
    "occupancy",
    "occupancy_limit",
    "compile_s",
    "error",
]


# ---------------------------------------------------------------------------------------------
# Targets and occupancy
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetLimits:
    """Per-SM resources of one compute capability.

    From the CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"
    (8.0 and 9.0 columns), and the allocation rules of the CUDA Occupancy Calculator
    (`cuda_occupancy.h`): registers are allocated per warp in units of 256 from four
    sub-partitions of the register file, shared memory in units of 128 bytes, and 1 KB of
    shared memory per block is reserved by the system on sm_80 and later.
    """

    name: str
    capability: int
    registers_per_sm: int
    max_registers_per_thread: int
    shared_per_sm: int
    shared_per_block: int
    max_warps_per_sm: int
    max_blocks_per_sm: int
    register_unit: int = 256
    register_sub_partitions: int = 4
    shared_unit: int = 128
    reserved_shared_per_block: int = 1024


TARGETS: dict[int, TargetLimits] = {
    80: TargetLimits("sm_80", 80, 65536, 255, 164 * 1024, 163 * 1024, 64, 32),
    90: TargetLimits("sm_90", 90, 65536, 255, 228 * 1024, 227 * 1024, 64, 32),
}


@dataclass(frozen=True)
class Occupancy:
    """Resident blocks and warps per SM of a kernel, and what limits them."""

    blocks_per_sm: int
    warps_per_sm: int
    fraction: float
    limited_by: str


def occupancy(limits: TargetLimits, num_warps: int, registers: int, shared: int) -> Occupancy:
    """Resident blocks per SM of a kernel with `num_warps` warps per block, `registers` per
    thread and `shared` bytes of shared memory per block (the occupancy calculator's rules)."""
    by_limit: dict[str, int] = {
        "warps": limits.max_warps_per_sm // num_warps,
        "blocks": limits.max_blocks_per_sm,
    }
    if registers > 0:
        per_warp = _round_up(registers * 32, limits.register_unit)
        per_partition = limits.registers_per_sm // limits.register_sub_partitions
        warps = (per_partition // per_warp) * limits.register_sub_partitions
        by_limit["registers"] = warps // num_warps
    if shared > 0:
        per_block = _round_up(shared + limits.reserved_shared_per_block, limits.shared_unit)
        by_limit["shared memory"] = limits.shared_per_sm // per_block
    limited_by = min(by_limit, key=lambda name: by_limit[name])
    blocks = by_limit[limited_by]
    warps = blocks * num_warps
    return Occupancy(blocks, warps, warps / limits.max_warps_per_sm, limited_by)


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


# ---------------------------------------------------------------------------------------------
# Enumeration: what the launchers can launch
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One kernel configuration a launcher can launch, with a shape that launches it."""

    kernel: str
    variant: str
    blocks: tuple[tuple[str, int], ...]
    options: tuple[tuple[str, int], ...]
    witness: tuple[tuple[str, int], ...]

    @property
    def num_warps(self) -> int:
        return dict(self.options)["num_warps"]

    @property
    def maxnreg(self) -> int | None:
        return dict(self.options).get("maxnreg")

    @property
    def blocks_text(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.blocks)

    @property
    def witness_text(self) -> str:
        return " ".join(f"{name}={value}" for name, value in self.witness)


#: kernel → its variants (constexpr flags) as the ops reach them.
SET_ATTENTION_VARIANTS = {
    "plain": {"TWO_MASK": False, "POOLED": False},
    "pooled": {"TWO_MASK": False, "POOLED": True},
    "two_mask": {"TWO_MASK": True, "POOLED": False},
}
MIXTURE_VARIANTS = {"normal": {"LAPLACE": False}, "laplace": {"LAPLACE": True}}
KERNELS = (
    "set_attention.forward",
    "set_attention.backward",
    "mixture_log_prob.forward",
    "mixture_log_prob.backward",
)


def _group_by_config(
    shapes: Iterable[tuple[int, ...]], config_of: Callable[..., tuple[int, ...]]
) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Distinct configurations over `shapes`, each with its largest shape as witness."""
    witnesses: dict[tuple[int, ...], tuple[int, ...]] = {}
    for shape in shapes:
        config = config_of(*shape)
        if config not in witnesses or shape > witnesses[config]:
            witnesses[config] = shape
    return witnesses


def _options(launch: Any, phase: str, num_warps: int) -> tuple[tuple[str, int], ...]:
    return tuple(launch.launch_options(num_warps, register_ceiling=phase == "backward").items())


def set_attention_variants(set_attention: Any, limits: Any, launch: Any) -> list[Variant]:
    """Every (variant, BLOCK_N, BLOCK_M, BLOCK_D, num_warps) of the set-attention kernels
    over the shapes `limits.set_attention_fits` accepts (any batch and head count)."""
    variants = []
    shapes = [
        (head_dim, set_size)
        for set_size in range(1, limits.MAX_SET_SIZE + 1)
        for head_dim in range(1, limits.MAX_HEAD_DIM + 1)
        if limits.set_attention_fits(set_size, head_dim)
    ]
    for phase in ("forward", "backward"):
        for name, flags in SET_ATTENTION_VARIANTS.items():
            two_mask = flags["TWO_MASK"]
            configs = _group_by_config(
                shapes,
                lambda head_dim, set_size, phase=phase, two_mask=two_mask: (
                    set_attention._launch_config(set_size, head_dim, phase, two_mask)
                ),
            )
            for (block_n, block_m, block_d, num_warps), (head_dim, set_size) in sorted(
                configs.items()
            ):
                variants.append(
                    Variant(
                        f"set_attention.{phase}",
                        name,
                        (("BLOCK_N", block_n), ("BLOCK_M", block_m), ("BLOCK_D", block_d)),
                        _options(launch, phase, num_warps),
                        (
                            ("B", WITNESS_BATCH),
                            ("H", WITNESS_HEADS),
                            ("M", set_size),
                            ("Dh", head_dim),
                        ),
                    )
                )
    return variants


def mixture_variants(mixture_log_prob: Any, limits: Any, launch: Any) -> list[Variant]:
    """Every (family, BLOCK_L, BLOCK_B, BLOCK_D, num_warps) of the mixture kernels over
    1 ≤ d ≤ MAX_LATENT_DIM and any sample count (any batch and component count)."""
    variants = []
    shapes = [
        (dim, n_samples)
        for n_samples in range(1, MAX_ENUMERATED_SAMPLES + 1)
        for dim in range(1, limits.MAX_LATENT_DIM + 1)
    ]
    for phase in ("forward", "backward"):
        configs = _group_by_config(
            shapes,
            lambda dim, n_samples, phase=phase: mixture_log_prob._launch_config(
                n_samples, dim, phase
            ),
        )
        for name in MIXTURE_VARIANTS:
            for (block_l, block_b, block_d, num_warps), (dim, n_samples) in sorted(configs.items()):
                variants.append(
                    Variant(
                        f"mixture_log_prob.{phase}",
                        name,
                        (("BLOCK_L", block_l), ("BLOCK_B", block_b), ("BLOCK_D", block_d)),
                        _options(launch, phase, num_warps),
                        (
                            ("L", n_samples),
                            ("B", WITNESS_BATCH),
                            ("C", WITNESS_COMPONENTS),
                            ("d", dim),
                        ),
                    )
                )
    return variants


def enumerate_variants(kernels: Sequence[str] = KERNELS) -> list[Variant]:
    """Every kernel configuration the launchers of `mmtrain.kernels` can choose.

    Needs only the launch-config functions, so it also works under TRITON_INTERPRET=1.
    """
    from mmtrain.kernels import launch, limits, mixture_log_prob, set_attention

    variants = set_attention_variants(set_attention, limits, launch)
    variants += mixture_variants(mixture_log_prob, limits, launch)
    return [v for v in variants if v.kernel in kernels]


# ---------------------------------------------------------------------------------------------
# Building a variant's launch from its witness shape (the launchers' own code)
# ---------------------------------------------------------------------------------------------


def build_launch(variant: Variant, dtype_name: str) -> Any:
    """The `KernelLaunch` the launcher builds for the variant's witness shape, on meta
    tensors of `dtype_name`: the same function the launcher runs, so nothing can drift."""
    import torch

    from mmtrain.kernels import mixture_log_prob, set_attention

    dtype = getattr(torch, dtype_name)
    shape = dict(variant.witness)
    phase = variant.kernel.split(".")[1]
    meta = {"device": "meta", "dtype": dtype}
    if variant.kernel.startswith("set_attention"):
        flags = SET_ATTENTION_VARIANTS[variant.variant]
        batch, heads, set_size, head_dim = shape["B"], shape["H"], shape["M"], shape["Dh"]

        def projection() -> torch.Tensor:
            # The self-attention aggregator's layout: [B, M, H·Dh] viewed as [B, H, M, Dh].
            flat = torch.empty(batch, set_size, heads * head_dim, **meta)
            return flat.unflatten(-1, (heads, head_dim)).transpose(1, 2)

        q, k, v = projection(), projection(), projection()
        mask_a = torch.empty(batch, set_size, device="meta", dtype=torch.bool)
        mask_b = mask_a.clone() if flags["TWO_MASK"] else None
        pooled = flags["POOLED"]
        out_shape = (batch, heads, head_dim) if pooled else (batch, heads, set_size, head_dim)
        if phase == "forward":
            out_a = torch.empty(out_shape, **meta)
            out_b = torch.empty(out_shape, **meta) if mask_b is not None else None
            return set_attention._forward_launch(q, k, v, mask_a, mask_b, out_a, out_b, pooled)
        grad_a = torch.empty(out_shape, **meta) if pooled else projection()
        grad_b = projection() if mask_b is not None else None
        dq, dk, dv = (torch.empty(q.shape, **meta) for _ in range(3))
        return set_attention._backward_launch(
            grad_a, grad_b, q, k, v, mask_a, mask_b, dq, dk, dv, pooled
        )
    n_samples, batch, n_comp, dim = shape["L"], shape["B"], shape["C"], shape["d"]
    z = torch.empty(n_samples, batch, dim, **meta)
    loc = torch.empty(batch, n_comp, dim, **meta)
    log_scale = torch.empty(batch, n_comp, dim, **meta)
    logits = torch.empty(batch, n_comp, **meta)
    component_mask = torch.empty(batch, n_comp, device="meta", dtype=torch.bool)
    family = variant.variant
    if phase == "forward":
        out = torch.empty(n_samples, batch, **meta)
        return mixture_log_prob._forward_launch(
            z, loc, log_scale, logits, component_mask, out, family, 0.0
        )
    grad = torch.empty(n_samples, batch, **meta)
    grads = (torch.empty_like(z), torch.empty_like(loc), torch.empty_like(log_scale))
    grads += (torch.empty_like(logits),)
    return mixture_log_prob._backward_launch(
        grad, z, loc, log_scale, logits, component_mask, grads, family, 0.0
    )


def launch_mismatch(variant: Variant, launch: Any) -> str:
    """Why the launch differs from what the enumeration says the launcher launches ('' if
    it does not)."""
    flags = {**SET_ATTENTION_VARIANTS, **MIXTURE_VARIANTS}[variant.variant]
    expected = {**dict(variant.blocks), **flags, **dict(variant.options)}
    got = {name: launch.kwargs.get(name) for name in {*expected, "maxnreg"}}
    expected.setdefault("maxnreg", None)
    return "" if got == expected else f"launcher chose {got}, enumeration says {expected}"


# ---------------------------------------------------------------------------------------------
# Compiling one variant (in a process where TRITON_INTERPRET is unset)
# ---------------------------------------------------------------------------------------------


@dataclass
class Record:
    """One compiled variant and what its compilation reports."""

    kernel: str
    variant: str
    dtype: str
    target: str
    blocks: str
    num_warps: int
    maxnreg: int | None
    witness: str
    registers: int = 0
    shared_bytes: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_bytes: int = 0
    blocks_per_sm: int = 0
    warps_per_sm: int = 0
    occupancy: float = 0.0
    occupancy_limit: str = ""
    compile_s: float = 0.0
    error: str = ""
    failures: list[str] = field(default_factory=list)


_PTXAS_PATTERNS = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_store_bytes": re.compile(r"(\d+) bytes spill stores"),
    "spill_load_bytes": re.compile(r"(\d+) bytes spill loads"),
    "stack_bytes": re.compile(r"(\d+) bytes stack frame"),
}


def parse_ptxas_report(report: str) -> dict[str, int]:
    """Registers, spill stores/loads and stack frame bytes from a `ptxas -v` report of one
    kernel (the numbers the CUDA driver reports for the loaded cubin)."""
    values = {}
    for name, pattern in _PTXAS_PATTERNS.items():
        found = pattern.findall(report)
        if len(found) != 1:
            raise ValueError(f"ptxas report has {len(found)} matches for {name!r}:\n{report}")
        values[name] = int(found[0])
    return values


def cubin_resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers and stack frame bytes read back from a cubin by `cuobjdump
    --dump-resource-usage` (the cubin's own attributes, independent of the ptxas report)."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        command = [knobs.nvidia.cuobjdump.path, "--dump-resource-usage", handle.name]
        text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.findall(r"REG:(\d+) STACK:(\d+)", text)
    if len(found) != 1:
        raise ValueError(f"cuobjdump lists {len(found)} functions:\n{text}")
    registers, stack = found[0]
    return {"registers": int(registers), "stack_bytes": int(stack)}


def _triton_compile_inputs(launch: Any, capability: int) -> tuple[Any, Any, dict[str, Any]]:
    """(ASTSource, GPUTarget, options) exactly as `JITFunction.run` derives them for this
    launch on a GPU of `capability`: Triton's own binder and argument specialisation."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound_args, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(
        backend, kwargs, bound_args, specialization, options
    )
    return ASTSource(kernel, signature, constexprs, attrs), target, options.__dict__


def compile_variant(task: tuple[Variant, str, int, bool]) -> Record:
    """Compile one variant for one dtype and target and check it (runs in a worker); with
    `verify_cubin` also read the registers back from the cubin and require agreement."""
    variant, dtype_name, capability, verify_cubin = task
    limits = TARGETS[capability]
    record = Record(
        variant.kernel,
        variant.variant,
        dtype_name,
        limits.name,
        variant.blocks_text,
        variant.num_warps,
        variant.maxnreg,
        variant.witness_text,
    )
    start = time.perf_counter()
    try:
        import triton
        from triton import knobs

        launch = build_launch(variant, dtype_name)
        mismatch = launch_mismatch(variant, launch)
        if mismatch:
            record.error = mismatch
            record.failures.append(f"launcher drift: {mismatch}")
            return record
        src, target, options = _triton_compile_inputs(launch, capability)
        # Triton prints the `ptxas -v` report of the cubin it builds when asked to; every
        # compile is a fresh one (own cache directory, always_compile), so it always does.
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True
        report = io.StringIO()
        with contextlib.redirect_stdout(report):
            compiled = triton.compile(src, target=target, options=options)
        record.__dict__.update(parse_ptxas_report(report.getvalue()))
        record.shared_bytes = int(compiled.metadata.shared)
        if verify_cubin:
            readback = cubin_resource_usage(compiled.asm["cubin"])
            reported = {name: getattr(record, name) for name in readback}
            if readback != reported:
                record.failures.append(f"ptxas report {reported} != cubin {readback}")
    except Exception as exc:  # a compile error is a result to report, not a crash
        record.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        record.failures.append(f"compile error: {record.error}")
        return record
    finally:
        record.compile_s = round(time.perf_counter() - start, 2)
    occ = occupancy(limits, variant.num_warps, record.registers, record.shared_bytes)
    record.blocks_per_sm, record.warps_per_sm = occ.blocks_per_sm, occ.warps_per_sm
    record.occupancy, record.occupancy_limit = round(occ.fraction, 4), occ.limited_by
    record.failures.extend(check_limits(record, limits))
    return record


def check_limits(record: Record, limits: TargetLimits) -> list[str]:
    """The reasons a compiled variant is not acceptable (empty when it is)."""
    failures = []
    if record.spill_store_bytes or record.spill_load_bytes:
        failures.append(
            f"spills {record.spill_store_bytes} B stores / {record.spill_load_bytes} B loads"
        )
    if record.shared_bytes > limits.shared_per_block:
        failures.append(
            f"shared memory {record.shared_bytes} B > {limits.shared_per_block} B per block"
        )
    if record.registers > limits.max_registers_per_thread:
        failures.append(f"{record.registers} registers > {limits.max_registers_per_thread}")
    if record.blocks_per_sm < 1:
        failures.append("not even one block fits on an SM")
    return failures


def _worker_init(cache_dir: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")


def compile_all(
    variants: Sequence[Variant],
    dtypes: Sequence[str] = DTYPES,
    capabilities: Sequence[int] = tuple(TARGETS),
    jobs: int = 1,
    progress: Callable[[Record], None] | None = None,
    verify_cubin: bool = False,
) -> list[Record]:
    """Compile every variant for every dtype and target; records in enumeration order."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError(
            "compile_all needs TRITON_INTERPRET unset (the kernels must be imported as "
            "compiled kernels): use run_check, which runs this script in a subprocess"
        )
    tasks = [
        (v, dtype, cap, verify_cubin) for v in variants for dtype in dtypes for cap in capabilities
    ]
    # Backward kernels compile about twice as slowly: start them first to balance workers.
    order = sorted(range(len(tasks)), key=lambda i: "backward" not in tasks[i][0].kernel)
    records: list[Record | None] = [None] * len(tasks)
    with tempfile.TemporaryDirectory(prefix="mmtrain-aot-triton-") as cache_dir:
        _worker_init(cache_dir)
        if jobs <= 1:
            results: Iterable[Record] = map(compile_variant, (tasks[i] for i in order))
            pool = None
        else:
            import multiprocessing

            pool = ProcessPoolExecutor(
                jobs,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_worker_init,
                initargs=(cache_dir,),
            )
            results = pool.map(compile_variant, (tasks[i] for i in order), chunksize=4)
        try:
            for index, record in zip(order, results, strict=True):
                records[index] = record
                if progress is not None:
                    progress(record)
        finally:
            if pool is not None:
                pool.shutdown()
    return [r for r in records if r is not None]


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def format_line(record: Record) -> str:
    """One table line: kernel, variant, dtype, target, blocks, warps, regs, smem, spills,
    occupancy (and the failure, if any)."""
    spills = f"{record.spill_store_bytes}/{record.spill_load_bytes}"
    occ = f"{record.warps_per_sm:2d}/64 warps ({record.occupancy_limit})"
    line = (
        f"{record.kernel:26s} {record.variant:8s} {record.dtype:8s} {record.target}  "
        f"{record.blocks:32s} warps={record.num_warps:<2d} maxnreg={record.maxnreg or '-':<3} "
        f"regs={record.registers:<3d} "
        f"smem={record.shared_bytes:<6d} spill st/ld={spills:7s} occ={occ}"
    )
    if record.failures:
        line += "  FAIL: " + "; ".join(record.failures)
    return line


@dataclass(frozen=True)
class Summary:
    """Worst case of one kernel on one target over its variants, tiles and dtypes."""

    kernel: str
    target: str
    variants: int
    max_registers: int
    max_shared_bytes: int
    spilling: int
    min_warps_per_sm: int
    min_occupancy: float
    failures: int


def summarize(records: Sequence[Record]) -> list[Summary]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.kernel, record.target), []).append(record)
    summaries = []
    for (kernel, target), group in groups.items():
        ok = [r for r in group if not r.error]
        summaries.append(
            Summary(
                kernel,
                target,
                len(group),
                max((r.registers for r in ok), default=0),
                max((r.shared_bytes for r in ok), default=0),
                sum(1 for r in ok if r.spill_store_bytes or r.spill_load_bytes),
                min((r.warps_per_sm for r in ok), default=0),
                min((r.occupancy for r in ok), default=0.0),
                sum(1 for r in group if r.failures),
            )
        )
    return summaries


def summary_table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| kernel | target | variants | max regs | max smem (B) | spilling | min occupancy "
        "| failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| `{s.kernel}` | {s.target} | {s.variants} | {s.max_registers} | "
            f"{s.max_shared_bytes} | {s.spilling} | {s.min_warps_per_sm}/64 warps "
            f"({s.min_occupancy:.0%}) | {s.failures} |"
        )
    return "\n".join(lines)


def full_table(records: Sequence[Record]) -> str:
    lines = [
        "| kernel | variant | dtype | target | tile | warps | maxnreg | regs | smem (B) "
        "| spill st/ld (B) | occupancy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        occ = f"{r.warps_per_sm}/64 ({r.occupancy_limit})" if not r.error else r.error
        lines.append(
            f"| `{r.kernel}` | {r.variant} | {r.dtype} | {r.target} | {r.blocks} | "
            f"{r.num_warps} | {r.maxnreg or '-'} | {r.registers} | {r.shared_bytes} | "
            f"{r.spill_store_bytes}/{r.spill_load_bytes} | {occ} |"
        )
    return "\n".join(lines)


def write_csv(records: Sequence[Record], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(asdict(record))


def environment_text() -> str:
    """Machine, Triton and ptxas versions, for the record."""
    import triton
    from triton.backends.nvidia.compiler import get_ptxas_version

    ptxas = {
        TARGETS[cap].name: get_ptxas_version(cap).strip().splitlines()[-2].strip()
        for cap in TARGETS
    }
    cpus = os.cpu_count()
    return (
        f"{platform.machine()}, {cpus} CPU cores, no GPU needed; Python "
        f"{platform.python_version()}, Triton {triton.__version__}; ptxas: "
        + "; ".join(f"{name}: {version}" for name, version in ptxas.items())
    )


def update_results_section(markdown: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the check's section of benchmarks/RESULTS.md."""
    text = path.read_text()
    start = text.find(RESULTS_HEADING)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + markdown
    else:
        end = text.find("\n## ", start + len(RESULTS_HEADING))
        text = text[:start] + markdown + ("" if end == -1 else text[end:])
    path.write_text(text.rstrip("\n") + "\n")


def results_markdown(
    records: Sequence[Record], wall_s: float, cpu_s: float, jobs: int, command: str
) -> str:
    n_failed = sum(1 for r in records if r.failures)
    return "\n".join(
        [
            RESULTS_HEADING,
            "",
            f"`{command}` (CSV: `benchmarks/aot_kernels.csv`; CI runs it in "
            "`scripts/test.sh` before pytest). Every Triton kernel the launchers can launch, "
            "compiled without a GPU for sm_80 (A100) and sm_90 (H100/H200) in fp32, fp16 and "
            "bf16; registers and spills from the `ptxas -v` report of the cubin, shared "
            "memory from Triton's metadata, occupancy from the CUDA occupancy rules (resident "
            "warps per SM of 64, and what limits them). How the variants are enumerated: "
            "see the script's docstring.",
            "",
            f"Machine: {environment_text()}. Run on {time.strftime('%Y-%m-%d')}: "
            f"{len(records)} compiled variants, {n_failed} failing; the check took "
            f"{wall_s:.0f} s wall, {cpu_s:.0f} s CPU (this process, its workers and their "
            f"ptxas) with {jobs} worker processes, load average {os.getloadavg()[0]:.1f} at "
            "the end (the machine is shared: CPU time is the load-independent figure).",
            "",
            summary_table(summarize(records)),
            "",
            "<details><summary>Every variant</summary>",
            "",
            full_table(records),
            "",
            "</details>",
            "",
        ]
    )


def _children_cpu_s() -> float:
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def run_check(args: Sequence[str] = (), timeout_s: float | None = None) -> int:
    """Run this script with `args` in a subprocess without TRITON_INTERPRET (usable from a
    process that has it set, e.g. pytest); returns the exit status."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, str(Path(__file__).resolve()), *args]
    return subprocess.run(command, env=env, cwd=ROOT, timeout=timeout_s, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--targets", default="80,90", help="compute capabilities, e.g. 80,90")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument(
        "--variants", default=None, help="only these variants, e.g. plain,two_mask,normal"
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help=f"write the table (e.g. {DEFAULT_CSV.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--update-results", action="store_true", help="rewrite the section of benchmarks/RESULTS.md"
    )
    parser.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    parser.add_argument(
        "--verify-cubin",
        action="store_true",
        help="also read registers and stack back from each cubin with cuobjdump and compare",
    )
    options = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        return run_check(list(argv if argv is not None else sys.argv[1:]))
    capabilities = [int(c) for c in options.targets.split(",")]
    unknown = [c for c in capabilities if c not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {sorted(TARGETS)}")
    dtypes = options.dtypes.split(",")
    kernels = options.kernels.split(",")
    wall0, cpu0 = time.perf_counter(), _children_cpu_s()
    variants = enumerate_variants(kernels)
    if options.variants is not None:
        variants = [v for v in variants if v.variant in options.variants.split(",")]
    n_tasks = len(variants) * len(dtypes) * len(capabilities)
    print(
        f"aot_kernels: {len(variants)} kernel configurations × {len(dtypes)} dtypes × "
        f"{len(capabilities)} targets = {n_tasks} compiles, {options.jobs} workers",
        flush=True,
    )

    def progress(record: Record) -> None:
        if not options.quiet or record.failures:
            print(format_line(record), flush=True)

    records = compile_all(
        variants, dtypes, capabilities, options.jobs, progress, options.verify_cubin
    )
    wall_s, cpu_s = time.perf_counter() - wall0, _children_cpu_s() - cpu0
    print(summary_table(summarize(records)))
    failed = [r for r in records if r.failures]
    print(
        f"aot_kernels: {len(records)} variants compiled in {wall_s:.0f} s wall, "
        f"{cpu_s:.0f} s CPU; {len(failed)} failing",
        flush=True,
    )
    if options.csv is not None:
        write_csv(records, options.csv)
    if options.update_results:
        command = "python benchmarks/aot_kernels.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        update_results_section(results_markdown(records, wall_s, cpu_s, options.jobs, command))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
