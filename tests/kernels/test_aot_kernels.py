"""The ahead-of-time kernel check (benchmarks/aot_kernels.py): its enumeration, its arithmetic,
and one real compile for both GPU targets in a subprocess (the full check runs in
scripts/test.sh before pytest)."""

from __future__ import annotations

import csv
import importlib.util
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("triton")

from mmtrain.kernels import launch, limits, mixture_log_prob, set_attention  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _load_aot() -> Any:
    spec = importlib.util.spec_from_file_location(
        "aot_kernels", ROOT / "benchmarks" / "aot_kernels.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["aot_kernels"] = module
    spec.loader.exec_module(module)
    return module


aot = _load_aot()

KERNEL_NAMES = {
    set_attention._masked_set_attention_forward_kernel: "set_attention.forward",
    set_attention._masked_set_attention_backward_kernel: "set_attention.backward",
    mixture_log_prob._masked_mixture_log_prob_forward_kernel: "mixture_log_prob.forward",
    mixture_log_prob._masked_mixture_log_prob_backward_kernel: "mixture_log_prob.backward",
}
FLAG_NAMES = ("TWO_MASK", "POOLED", "LAPLACE")
BLOCK_NAMES = ("BLOCK_N", "BLOCK_M", "BLOCK_L", "BLOCK_B", "BLOCK_D")


def _variant_key(variant: Any) -> tuple[Any, ...]:
    flags = {**aot.SET_ATTENTION_VARIANTS, **aot.MIXTURE_VARIANTS}[variant.variant]
    return (variant.kernel, tuple(sorted(flags.items())), variant.blocks, variant.options)


def _launch_key(kernel_launch: Any) -> tuple[Any, ...]:
    kwargs = kernel_launch.kwargs
    flags = tuple(sorted((k, v) for k, v in kwargs.items() if k in FLAG_NAMES))
    blocks = tuple((k, kwargs[k]) for k in BLOCK_NAMES if k in kwargs)
    options = tuple((k, kwargs[k]) for k in ("num_warps", "maxnreg") if k in kwargs)
    return (KERNEL_NAMES[kernel_launch.kernel], flags, blocks, options)


@pytest.fixture
def recorded_launches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Launches made by the launchers, recorded instead of run."""
    launches: list[Any] = []
    monkeypatch.setattr(launch.KernelLaunch, "run", lambda self: launches.append(self))
    yield launches


def _attention_shapes(rng: random.Random) -> list[tuple[int, int, int, int]]:
    edges = [(1, 1, 1, 1), (3, 2, 32, 128), (2, 1, 16, 256), (5, 3, 8, 256), (1, 1, 32, 64)]
    sampled = [
        (rng.randint(1, 3000), rng.randint(1, 8), rng.randint(1, 32), rng.randint(1, 256))
        for _ in range(60)
    ]
    return [s for s in edges + sampled if limits.set_attention_fits(s[2], s[3])]


def test_every_launch_the_set_attention_launchers_make_is_enumerated(
    recorded_launches: list[Any],
) -> None:
    """The launchers' own `_forward`/`_backward`, on meta tensors of sampled shapes (any
    batch, heads, M and Dh the kernels accept, strided or contiguous, every dtype), launch
    only configurations the check compiles."""
    rng = random.Random(0)
    for batch, heads, set_size, head_dim in _attention_shapes(rng):
        dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16])
        flat = torch.empty(batch, set_size, heads * head_dim, device="meta", dtype=dtype)
        q = flat.unflatten(-1, (heads, head_dim)).transpose(1, 2)
        k = torch.empty(batch, heads, set_size, head_dim, device="meta", dtype=dtype)
        mask = torch.empty(batch, set_size, device="meta", dtype=torch.bool)
        for mask_b, pooled in ((None, False), (None, True), (mask, False)):
            out_a, out_b = set_attention._forward(q, k, k, mask, mask_b, pooled)
            grad_b = torch.empty_like(out_a) if mask_b is not None else None
            set_attention._backward(torch.empty_like(out_a), grad_b, q, k, k, mask, mask_b, pooled)
    enumerated = {_variant_key(v) for v in aot.enumerate_variants()}
    launched = {_launch_key(kernel_launch) for kernel_launch in recorded_launches}
    assert len(recorded_launches) >= 6 * 50
    assert launched <= enumerated, launched - enumerated


def test_every_launch_the_mixture_launchers_make_is_enumerated(
    recorded_launches: list[Any],
) -> None:
    rng = random.Random(1)
    shapes = [(1, 1, 1, 1), (1000, 7, 3, limits.MAX_LATENT_DIM), (17, 2, 9, 65), (2, 3, 2, 16)]
    shapes += [
        (rng.choice([1, 2, rng.randint(1, 2000)]), rng.randint(1, 5000), rng.randint(1, 40),
         rng.randint(1, limits.MAX_LATENT_DIM))
        for _ in range(60)
    ]  # fmt: skip
    for n_samples, batch, n_comp, dim in shapes:
        dtype = rng.choice([torch.float32, torch.float16, torch.bfloat16])
        z = torch.empty(n_samples, batch, dim, device="meta", dtype=dtype)
        loc = torch.empty(batch, n_comp, dim, device="meta", dtype=dtype)
        logits = torch.empty(batch, n_comp, device="meta", dtype=dtype)
        mask = torch.empty(batch, n_comp, device="meta", dtype=torch.bool)
        for family in mixture_log_prob.FAMILIES:
            out = mixture_log_prob._forward(z, loc, loc, logits, mask, family, 0.0)
            mixture_log_prob._backward(out, z, loc, loc, logits, mask, family, 0.0)
    enumerated = {_variant_key(v) for v in aot.enumerate_variants()}
    launched = {_launch_key(kernel_launch) for kernel_launch in recorded_launches}
    assert len(recorded_launches) == 4 * len(shapes)
    assert launched <= enumerated, launched - enumerated


def test_each_witness_launches_its_variant() -> None:
    """Each variant's witness shape, through the real launch builder, launches exactly the
    variant (what the compile step checks again before compiling)."""
    variants = aot.enumerate_variants()
    assert {v.kernel for v in variants} == set(aot.KERNELS)
    for variant in variants:
        assert aot.launch_mismatch(variant, aot.build_launch(variant, "bfloat16")) == ""
    keys = [(_variant_key(v)) for v in variants]
    assert len(keys) == len(set(keys))


def test_occupancy_follows_the_occupancy_calculator_rules() -> None:
    sm80, sm90 = aot.TARGETS[80], aot.TARGETS[90]
    # 64 registers: 2048 per warp, 8 warps per 16384-register sub-partition, 32 per SM.
    occ = aot.occupancy(sm80, num_warps=8, registers=64, shared=0)
    assert (occ.blocks_per_sm, occ.warps_per_sm, occ.limited_by) == (4, 32, "registers")
    # 255 registers round up to 256: 8192 per warp, 2 per sub-partition, 8 per SM.
    occ = aot.occupancy(sm90, num_warps=4, registers=255, shared=0)
    assert (occ.blocks_per_sm, occ.warps_per_sm, occ.fraction) == (2, 8, 0.125)
    # Tiny one-warp blocks stop at 32 resident blocks.
    occ = aot.occupancy(sm80, num_warps=1, registers=16, shared=0)
    assert (occ.blocks_per_sm, occ.limited_by) == (32, "blocks")
    # 48 KB + 1 KB reserved per block: 3 blocks in 164 KB, 4 in 228 KB.
    assert aot.occupancy(sm80, 4, 32, 48 * 1024).blocks_per_sm == 3
    assert aot.occupancy(sm80, 4, 32, 48 * 1024).limited_by == "shared memory"
    assert aot.occupancy(sm90, 4, 32, 48 * 1024).blocks_per_sm == 4
    # 8 warps of 32 registers: the 64-warp limit binds.
    assert aot.occupancy(sm90, 8, 32, 0).limited_by == "warps"


PTXAS_REPORT = """\
ptxas-blackwell info    : 28 bytes gmem
ptxas-blackwell info    : Compiling entry function '_kernel' for 'sm_90a'
ptxas-blackwell info    : Function properties for _kernel
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas-blackwell info    : Used 64 registers, used 1 barriers, 8 bytes cumulative stack size
"""


def test_ptxas_report_is_parsed_and_spills_fail_the_check() -> None:
    values = aot.parse_ptxas_report(PTXAS_REPORT)
    assert values == {
        "registers": 64,
        "spill_store_bytes": 4,
        "spill_load_bytes": 12,
        "stack_bytes": 8,
    }
    with pytest.raises(ValueError, match="registers"):
        aot.parse_ptxas_report(PTXAS_REPORT.replace("Used 64 registers", ""))
    record = aot.Record("k", "v", "float32", "sm_90", "", 8, None, "", **values)
    assert any("spills" in f for f in aot.check_limits(record, aot.TARGETS[90]))
    clean = aot.Record("k", "v", "float32", "sm_90", "", 8, None, "", registers=64)
    clean.blocks_per_sm = 4
    assert aot.check_limits(clean, aot.TARGETS[90]) == []
    clean.shared_bytes = 228 * 1024
    assert any("shared memory" in f for f in aot.check_limits(clean, aot.TARGETS[90]))


def test_compiles_for_both_targets_in_a_subprocess(tmp_path: Path) -> None:
    """From this interpreter process, the check re-runs itself without TRITON_INTERPRET and
    compiles real cubins for sm_80 and sm_90; the registers it reports agree with the ones
    cuobjdump reads back from each cubin."""
    table = tmp_path / "aot.csv"
    args = ["--kernels", "mixture_log_prob.forward", "--variants", "normal"]
    args += ["--dtypes", "bfloat16", "--targets", "80,90", "--jobs", "1", "--quiet"]
    args += ["--verify-cubin", "--csv", str(table)]
    assert aot.run_check(args, timeout_s=600) == 0
    with table.open() as handle:
        rows = list(csv.DictReader(handle))
    configs = {v.blocks_text for v in aot.enumerate_variants(["mixture_log_prob.forward"])}
    assert {(r["target"], r["blocks"]) for r in rows} == {
        (target, blocks) for target in ("sm_80", "sm_90") for blocks in configs
    }
    for row in rows:
        assert row["error"] == "" and int(row["registers"]) > 0
        assert int(row["spill_store_bytes"]) == int(row["spill_load_bytes"]) == 0
