"""Benchmark the fused kernels against PyTorch: one command on a GPU machine.

    python benchmarks/bench_kernels.py --out benchmarks/kernels.csv

Ops: masked set attention (per element, pooled, two masks) and the masked mixture log
density. Providers: the eager reference (`torch`), `torch.compile` of the same reference
(`torch_compile`, static shapes: the honest bar), PyTorch SDPA with an additive mask
(`sdpa`, attention ops only) and the Triton kernel (`triton`). Modes: `fwd`, `bwd`
(autograd.grad of a retained graph) and `full` (both). Each row has the median and the 20th
and 80th percentile times from `triton.testing.do_bench`, the bytes the op must move at
least (inputs read once, outputs written once), the achieved GB/s and its fraction of the
device's peak memory bandwidth (looked up from the GPU name, or `--peak-gbps`).

The default grid is the issue's: B ∈ {4k, 16k, 64k}, M ∈ {2, 5, 8, 16}, Dh ∈ {32, 64, 128},
H ∈ {1, 4}; for the mixture the same numbers are read as B, C (components), d (latent
dimensions) and L (samples). Rows are appended to the CSV as each shape finishes, so an
interrupted run loses little; `--resume` skips rows already in the file and `--time-budget-s`
stops starting new shapes after a while, so a short GPU session can finish the grid in
several calls. Without a GPU the script refuses, unless `--smoke` asks for a tiny grid in
the Triton interpreter (to check that the script itself runs).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

OPS = ("attention", "attention_pooled", "attention_two_mask", "mixture")
PROVIDERS = ("torch", "torch_compile", "sdpa", "triton")
MODES = ("fwd", "bwd", "full")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COLUMNS = [
    "timestamp",
    "gpu",
    "torch",
    "triton",
    "op",
    "provider",
    "mode",
    "dtype",
    "shape",
    "B",
    "H_or_L",
    "M_or_C",
    "Dh_or_d",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "gbytes",
    "gbps",
    "peak_gbps",
    "frac_peak",
    "max_abs_err",
    "note",
]

# Peak DRAM bandwidth in GB/s by GPU name (first match wins: specific names first).
PEAK_GBPS: list[tuple[str, float]] = [
    ("gh200", 4000.0),
    ("h200", 4800.0),
    ("h100 nvl", 3900.0),
    ("h100 pcie", 2000.0),
    ("h100", 3350.0),
    ("h800", 3350.0),
    ("b200", 8000.0),
    ("a100-sxm4-80gb", 2039.0),
    ("a100 80gb", 1935.0),
    ("a100", 1555.0),
    ("a800", 2039.0),
    ("l40s", 864.0),
    ("l40", 864.0),
    ("l4", 300.0),
    ("a10g", 600.0),
    ("a10", 600.0),
    ("v100", 900.0),
    ("t4", 320.0),
    ("rtx 4090", 1008.0),
    ("rtx 3090", 936.0),
    ("mi300x", 5300.0),
    ("mi250", 3277.0),
]


def peak_bandwidth(gpu: str, override: float | None) -> float | None:
    if override is not None:
        return override
    name = gpu.lower()
    for key, gbps in PEAK_GBPS:
        if key in name:
            return gbps
    return None


@dataclass(frozen=True)
class Case:
    """One benchmark shape: for attention (B, H, M, Dh); for the mixture (B, L, C, d)."""

    op: str
    batch: int
    outer: int  # H for attention, L for the mixture
    size: int  # M for attention, C for the mixture
    width: int  # Dh for attention, d for the mixture
    dtype: str

    @property
    def shape(self) -> str:
        if self.op == "mixture":
            return f"L={self.outer},B={self.batch},C={self.size},d={self.width}"
        return f"B={self.batch},H={self.outer},M={self.size},Dh={self.width}"


# ---------------------------------------------------------------------------------------------
# Inputs, providers and the bytes each op must move
# ---------------------------------------------------------------------------------------------


def make_inputs(case: Case, device: torch.device, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dtype = DTYPES[case.dtype]

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        t = scale * torch.randn(*shape, generator=gen)
        return t.to(device=device, dtype=dtype).requires_grad_()

    if case.op == "mixture":
        mask = torch.rand(case.batch, case.size, generator=gen) < 0.7
        mask[:, 0] = True
        return {
            "args": (
                randn(case.outer, case.batch, case.width),
                randn(case.batch, case.size, case.width),
                randn(case.batch, case.size, case.width, scale=0.5),
                randn(case.batch, case.size),
                mask.to(device),
            ),
            "n_diff": 4,
        }
    shape = (case.batch, case.outer, case.size, case.width)
    mask = (torch.rand(case.batch, case.size, generator=gen) < 0.7).to(device)
    args: tuple[Any, ...] = (randn(*shape), randn(*shape), randn(*shape), mask)
    if case.op == "attention_two_mask":
        sub = mask & (torch.rand(case.batch, case.size, generator=gen) < 0.5).to(device)
        args = (*args, sub)
    return {"args": args, "n_diff": 3}


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PyTorch SDPA with an additive mask that reproduces docs/math.md §3.6 (finite, never NaN)."""
    pair = mask[:, None, :, None] & mask[:, None, None, :]
    bias = torch.zeros(pair.shape, dtype=q.dtype, device=q.device)
    bias = bias.masked_fill(~pair, torch.finfo(q.dtype).min)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def providers(case: Case, compile_backend: str) -> dict[str, Callable[..., Any]]:
    from mmtrain import kernels

    ref = kernels.reference
    if case.op == "mixture":
        reference = ref.masked_mixture_log_prob_reference
        fns: dict[str, Callable[..., Any]] = {"torch": reference}
        if kernels.TRITON_UNAVAILABLE_REASON == "":
            fns["triton"] = kernels.mixture_log_prob.masked_mixture_log_prob_triton
    elif case.op == "attention":
        reference = ref.masked_set_attention_reference
        fns = {"torch": reference, "sdpa": _sdpa}
        if kernels.TRITON_UNAVAILABLE_REASON == "":
            fns["triton"] = kernels.set_attention.masked_set_attention_triton
    elif case.op == "attention_pooled":
        reference = ref.masked_set_attention_pooled_reference

        def sdpa_pooled(
            q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
        ) -> torch.Tensor:
            return torch.where(mask[:, None, :, None], _sdpa(q, k, v, mask), 0.0).sum(2)

        fns = {"torch": reference, "sdpa": sdpa_pooled}
        if kernels.TRITON_UNAVAILABLE_REASON == "":
            fns["triton"] = kernels.set_attention.masked_set_attention_pooled_triton
    else:
        reference = ref.masked_set_attention_two_mask_reference

        def sdpa_two(
            q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ma: torch.Tensor, mb: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return _sdpa(q, k, v, ma), _sdpa(q, k, v, mb)

        fns = {"torch": reference, "sdpa": sdpa_two}
        if kernels.TRITON_UNAVAILABLE_REASON == "":
            fns["triton"] = kernels.set_attention.masked_set_attention_two_mask_triton
    fns["torch_compile"] = torch.compile(reference, backend=compile_backend, dynamic=False)
    return fns


def min_bytes(case: Case, mode: str) -> int:
    """Bytes an ideal implementation must move: each input read once, each output written
    once (the same figure for every provider, so the GB/s are comparable)."""
    es = torch.empty((), dtype=DTYPES[case.dtype]).element_size()
    if case.op == "mixture":
        n_samples, batch, n_comp, dim = case.outer, case.batch, case.size, case.width
        z, params, logits, out = (
            n_samples * batch * dim,
            2 * batch * n_comp * dim,
            batch * n_comp,
            n_samples * batch,
        )
        mask = batch * n_comp
        fwd = (z + params + logits + out) * es + mask
        bwd = (z + params + logits + 2 * out) * es + mask + (z + params + logits) * es
        return {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]
    n_sets = case.batch * case.outer
    tile = n_sets * case.size * case.width * es
    pooled = n_sets * case.width * es
    n_masks = 2 if case.op == "attention_two_mask" else 1
    masks = n_masks * case.batch * case.size
    if case.op == "attention_pooled":
        fwd = 3 * tile + pooled + masks
        bwd = 3 * tile + pooled + 3 * tile + masks
    else:
        fwd = 3 * tile + n_masks * tile + masks
        bwd = 3 * tile + n_masks * tile + 3 * tile + masks
    return {"fwd": fwd, "bwd": bwd, "full": fwd + bwd}[mode]


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _outputs(result: Any) -> tuple[torch.Tensor, ...]:
    return tuple(result) if isinstance(result, tuple | list) else (result,)


def make_runner(
    fn: Callable[..., Any], args: Sequence[Any], n_diff: int, mode: str
) -> Callable[[], Any]:
    diff = list(args[:n_diff])
    if mode == "fwd":
        return lambda: fn(*args)
    outs = _outputs(fn(*args))
    grads = [torch.randn_like(o) for o in outs]
    if mode == "full":
        return lambda: torch.autograd.grad(_outputs(fn(*args)), diff, grads)
    return lambda: torch.autograd.grad(outs, diff, grads, retain_graph=True)


def time_gpu(run: Callable[[], Any], warmup_ms: int, rep_ms: int) -> tuple[float, float, float]:
    import triton.testing

    median, p20, p80 = triton.testing.do_bench(
        run, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8]
    )
    return float(median), float(p20), float(p80)


def time_cpu(run: Callable[[], Any], reps: int = 3) -> tuple[float, float, float]:
    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - start))
    q = statistics.quantiles(times, n=5) if len(times) > 1 else times * 4
    return statistics.median(times), q[0], q[-1]


def max_error(fn: Callable[..., Any], reference: Callable[..., Any], args: Sequence[Any]) -> float:
    got, want = _outputs(fn(*args)), _outputs(reference(*args))
    err = 0.0
    for g, w in zip(got, want, strict=True):
        finite = torch.isfinite(w)
        err = max(err, (g.float() - w.float())[finite].abs().max().item() if finite.any() else 0.0)
    return err


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def grid(args: argparse.Namespace) -> list[Case]:
    cases = []
    for op in args.ops:
        for dtype in args.dtypes:
            for outer in args.heads:
                for size in args.set_sizes:
                    for width in args.head_dims:
                        for batch in args.batch:
                            cases.append(Case(op, batch, outer, size, width, dtype))
    return cases


def existing_rows(path: Path, gpu: str) -> set[tuple[str, ...]]:
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {
            (r["op"], r["provider"], r["mode"], r["dtype"], r["shape"])
            for r in csv.DictReader(f)
            if r.get("gpu") == gpu and not r.get("note")
        }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",")]

    def names(choices: Sequence[str]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            items = [x.strip() for x in text.split(",") if x.strip()]
            bad = [x for x in items if x not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{bad} not in {list(choices)}")
            return items

        return parse

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=Path("benchmarks/kernels.csv"), help="CSV to append to"
    )
    p.add_argument("--ops", type=names(OPS), default=list(OPS))
    p.add_argument("--providers", type=names(PROVIDERS), default=list(PROVIDERS))
    p.add_argument("--modes", type=names(MODES), default=list(MODES))
    p.add_argument("--dtypes", type=names(tuple(DTYPES)), default=["fp32", "bf16"])
    p.add_argument("--batch", type=ints, default=[4096, 16384, 65536], help="B values")
    p.add_argument("--set-sizes", type=ints, default=[2, 5, 8, 16], help="M (or C) values")
    p.add_argument("--head-dims", type=ints, default=[32, 64, 128], help="Dh (or d) values")
    p.add_argument("--heads", type=ints, default=[1, 4], help="H (or L) values")
    p.add_argument("--peak-gbps", type=float, default=None, help="device peak bandwidth, GB/s")
    p.add_argument("--warmup-ms", type=int, default=25)
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="skip rows already in --out")
    p.add_argument(
        "--time-budget-s", type=float, default=None, help="stop starting new shapes after this"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny grid; without a GPU it runs in the Triton interpreter (checks the script only)",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.set_sizes, args.head_dims, args.heads = [4], [2, 5], [8], [1, 2]
        args.dtypes = ["fp32"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print(
            "bench_kernels: no CUDA device. These benchmarks time GPU kernels; run them on a "
            "GPU machine, or pass --smoke to check the script in the Triton interpreter.",
            file=sys.stderr,
        )
        return 2
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"  # before mmtrain.kernels is imported
    from mmtrain import kernels

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    if kernels.TRITON_UNAVAILABLE_REASON:
        print(f"bench_kernels: {kernels.TRITON_UNAVAILABLE_REASON}", file=sys.stderr)
    device = torch.device("cuda" if cuda else "cpu")
    gpu = torch.cuda.get_device_name(device) if cuda else "cpu (Triton interpreter, smoke)"
    peak = peak_bandwidth(gpu, args.peak_gbps)
    if cuda and peak is None:
        print(
            f"bench_kernels: unknown peak bandwidth for {gpu!r}; pass --peak-gbps", file=sys.stderr
        )
    compile_backend = "inductor" if cuda else "aot_eager"
    done = existing_rows(args.out, gpu) if args.resume else set()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new_file = not args.out.exists() or args.out.stat().st_size == 0
    started = time.monotonic()
    cases = grid(args)
    print(f"bench_kernels: {len(cases)} shapes on {gpu} (peak {peak} GB/s) → {args.out}")

    with args.out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for n, case in enumerate(cases):
            if args.time_budget_s is not None and time.monotonic() - started > args.time_budget_s:
                print(
                    f"bench_kernels: time budget spent after {n}/{len(cases)} shapes; rerun with --resume"
                )
                break
            wanted = [
                (prov, mode)
                for prov in args.providers
                for mode in args.modes
                if (case.op, prov, mode, case.dtype, case.shape) not in done
                and not (prov == "sdpa" and case.op == "mixture")
            ]
            if not wanted:
                continue
            torch._dynamo.reset()
            rows = run_case(case, wanted, device, compile_backend, args, gpu, peak, triton_version)
            writer.writerows(rows)
            f.flush()
            summary = "  ".join(
                f"{r['provider']}/{r['mode']}={r.get('median_ms') or r.get('note', '')[:20]}"
                for r in rows
            )
            print(
                f"[{n + 1}/{len(cases)}] {case.op} {case.dtype} {case.shape}: {summary}", flush=True
            )
    return 0


def run_case(
    case: Case,
    wanted: list[tuple[str, str]],
    device: torch.device,
    compile_backend: str,
    args: argparse.Namespace,
    gpu: str,
    peak: float | None,
    triton_version: str,
) -> list[dict[str, Any]]:
    rows = []
    base = {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton_version,
        "op": case.op,
        "dtype": case.dtype,
        "shape": case.shape,
        "B": case.batch,
        "H_or_L": case.outer,
        "M_or_C": case.size,
        "Dh_or_d": case.width,
        "peak_gbps": peak if peak is not None else "",
    }
    try:
        inputs = make_inputs(case, device)
        fns = providers(case, compile_backend)
    except torch.cuda.OutOfMemoryError as exc:
        return [
            {**base, "provider": p, "mode": m, "note": f"OOM building inputs: {exc}"[:200]}
            for p, m in wanted
        ]
    for prov, mode in wanted:
        row: dict[str, Any] = {
            **base,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "provider": prov,
            "mode": mode,
        }
        fn = fns.get(prov)
        if fn is None:
            rows.append({**row, "note": "provider unavailable"})
            continue
        try:
            run = make_runner(fn, inputs["args"], inputs["n_diff"], mode)
            if device.type == "cuda":
                median, p20, p80 = time_gpu(run, args.warmup_ms, args.rep_ms)
            else:
                median, p20, p80 = time_cpu(run)
            gbytes = min_bytes(case, mode) / 1e9
            gbps = gbytes / (median / 1e3)
            row.update(
                median_ms=f"{median:.5f}",
                p20_ms=f"{p20:.5f}",
                p80_ms=f"{p80:.5f}",
                gbytes=f"{gbytes:.6f}",
                gbps=f"{gbps:.1f}",
                frac_peak=f"{gbps / peak:.4f}" if peak else "",
            )
            if mode == "fwd" and prov != "torch":
                row["max_abs_err"] = f"{max_error(fn, fns['torch'], inputs['args']):.3e}"
        except torch.cuda.OutOfMemoryError as exc:
            row["note"] = f"OOM: {exc}"[:200]
        except Exception as exc:  # a failing provider must not stop the grid
            row["note"] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
