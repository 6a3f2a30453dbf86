"""Per-modality encoders one after the other versus one batched call, on the CPU.

    python benchmarks/bench_batched_modalities.py --out benchmarks/batched_modalities.csv

M encoders of one architecture (the vector plugin's MLP[D → 256 × 2 → F]) on inputs of
equal shape, forward and backward, three ways: the per-modality loop `MultiModalVAE`
runs; `torch.func.functional_call` under `vmap` over parameters stacked at call time; and batched
matrix products (`baddbmm`) over weights stacked at call time, which keeps every
modality's parameters (and so checkpoint keys) separate. Prints the largest difference of
outputs and gradients from the loop, and process-CPU ms per forward + backward.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_steps import machine, write_csv
from torch import Tensor, nn
from torch.func import functional_call, vmap

from mmtrain.nets import MLP

Forward = Callable[[list[nn.Module], list[Tensor]], Tensor]


def loop(nets: list[nn.Module], xs: list[Tensor]) -> Tensor:
    return torch.stack([net(x) for net, x in zip(nets, xs)], 1)


def vmapped(nets: list[nn.Module], xs: list[Tensor]) -> Tensor:
    # Stacked with torch.stack, not `stack_module_state` (whose stacks are new leaves), so
    # that gradients reach each modality's own parameters.
    named = [dict(net.named_parameters()) for net in nets]
    params = {key: torch.stack([n[key] for n in named]) for key in named[0]}
    template = copy.deepcopy(nets[0]).to("meta")

    def one(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(template, p, (x,))

    return vmap(one)(params, torch.stack(xs)).transpose(0, 1)


def batched_matmul(nets: list[nn.Module], xs: list[Tensor]) -> Tensor:
    layers = [[*net.hidden, net.out] for net in nets]
    x = torch.stack(xs)
    for i in range(len(layers[0])):
        weight = torch.stack([net[i].weight for net in layers]).transpose(1, 2)
        bias = torch.stack([net[i].bias for net in layers])[:, None]
        x = torch.baddbmm(bias, x, weight)
        if i < len(layers[0]) - 1:
            x = nets[0].act(x)
    return x.transpose(0, 1)


WAYS: dict[str, Forward] = {"loop": loop, "vmap": vmapped, "bmm": batched_matmul}


def gradients(nets: list[nn.Module]) -> Tensor:
    return torch.cat([p.grad.flatten() for net in nets for p in net.parameters()])


def cpu_ms(way: Forward, nets: list[nn.Module], xs: list[Tensor], repeats: int) -> float:
    times = []
    for i in range(repeats + 3):
        start = time.process_time()
        for net in nets:
            net.zero_grad(set_to_none=True)
        way(nets, xs).square().sum().backward()
        if i >= 3:
            times.append(time.process_time() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=["5x500x45", "5x250x25", "16x250x25", "5x64x25"],
        help="MxBxD: modalities, batch, input size",
    )
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per way")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/batched_modalities.csv"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print("| M | batch | D | way | max output diff | max grad diff | CPU ms fwd+bwd | vs loop |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        m, batch, dim = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        nets = [MLP(dim, args.features, (256, 256), 2, "relu") for _ in range(m)]
        xs = [torch.randn(batch, dim) for _ in range(m)]
        loop(nets, xs).square().sum().backward()
        reference_out, reference_grad = loop(nets, xs).detach(), gradients(nets)
        timings: dict[str, list[float]] = {name: [] for name in WAYS}
        for _ in range(args.rounds):
            for name, way in WAYS.items():
                timings[name].append(cpu_ms(way, nets, xs, args.repeats))
        loop_ms = min(timings["loop"])
        for name, way in WAYS.items():
            for net in nets:
                net.zero_grad(set_to_none=True)
            out = way(nets, xs)
            out.square().sum().backward()
            out_diff = float((out.detach() - reference_out).abs().max())
            grad_diff = float((gradients(nets) - reference_grad).abs().max())
            ms = min(timings[name])
            print(
                f"| {m} | {batch} | {dim} | {name} | {out_diff:.1e} | {grad_diff:.1e} | "
                f"{ms:.2f} | {ms / loop_ms:.2f}× |"
            )
            rows.append(
                {
                    "machine": machine(),
                    "modalities": m,
                    "batch_size": batch,
                    "input_dim": dim,
                    "way": name,
                    "max_output_diff": f"{out_diff:.2e}",
                    "max_grad_diff": f"{grad_diff:.2e}",
                    "cpu_ms_fwd_bwd": f"{ms:.3f}",
                    "ratio_to_loop": f"{ms / loop_ms:.3f}",
                }
            )
    write_csv(args.out, rows)


if __name__ == "__main__":
    main()
