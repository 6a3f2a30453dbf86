"""A Triton kernel launch as data, shared by the launchers and the ahead-of-time check.

Each launcher builds its launch (kernel, grid, positional arguments, constexprs and launch
options) in one function and runs it; `benchmarks/aot_kernels.py` calls the same function on
meta tensors and compiles the result for GPU targets without a GPU, so the check and the
launchers cannot disagree about what is launched.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class KernelLaunch(NamedTuple):
    """`kernel[grid](*args, **kwargs)`: kwargs holds the constexprs and `num_warps`."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def run(self) -> None:
        self.kernel[self.grid](*self.args, **self.kwargs)

    @property
    def constexprs(self) -> dict[str, Any]:
        """The keyword arguments that are the kernel's constexprs (not launch options)."""
        return {name: value for name, value in self.kwargs.items() if name != "num_warps"}


#: 32-bit registers per SM on every GPU the kernels target (sm_80 to sm_90).
REGISTERS_PER_SM = 65536
#: Register ceiling of kernels that hold much state: enough for at least 16 resident warps.
REGISTER_CEILING = 128


def launch_options(num_warps: int, register_ceiling: bool) -> dict[str, int]:
    """Launch options: `num_warps`, and with `register_ceiling` an explicit `maxnreg`.

    Without an explicit ceiling, ptxas may squeeze a kernel that needs a few more than 64
    registers into 64 and spill a few bytes, to raise occupancy; the backward kernels, which
    hold the most state, get `maxnreg` = min(128, the most a block of `num_warps` warps can
    have), which keeps them in registers and still leaves room for 16 resident warps.
    """
    options = {"num_warps": num_warps}
    if register_ceiling:
        options["maxnreg"] = min(REGISTER_CEILING, REGISTERS_PER_SM // (32 * num_warps))
    return options
