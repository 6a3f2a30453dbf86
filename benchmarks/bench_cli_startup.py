"""Start-up cost of the `mmtrain` command line: `mmtrain --help` and an argument error.

    python benchmarks/bench_cli_startup.py --rounds 5 --importtime benchmarks/importtime-help.txt

Each command runs `--rounds` times as a fresh process (one intra-op thread); the table gives
the median wall time and the median process CPU time (user + system, from the child's
resource usage, load-independent). `--importtime FILE` also runs
`python -X importtime -m mmtrain --help` once and writes the 20 modules with the largest
cumulative import time, and the heavy libraries that were imported at all.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: libraries that `--help` should not need
HEAVY = ("torch", "scipy", "sklearn", "datasets", "pyarrow", "matplotlib", "accelerate", "ray")

COMMANDS = {
    "mmtrain --help": ["--help"],
    "mmtrain experiment nope (argument error)": ["experiment", "nope"],
}


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one `python -m mmtrain ARGS`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mmtrain", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def importtime_report(env: dict[str, str]) -> str:
    """The top 20 modules by cumulative import time of `python -X importtime -m mmtrain
    --help`, and which heavy libraries it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mmtrain", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match:
            rows.append((int(match.group(2)), int(match.group(1)), match.group(4)))
    total = sum(self_us for _, self_us, _ in rows)
    names = {name for _, _, name in rows}
    heavy = [lib for lib in HEAVY if lib in names]
    lines = [
        "python -X importtime -m mmtrain --help",
        f"modules imported: {len(rows)}; sum of self times: {total / 1e6:.3f} s",
        f"heavy libraries imported: {', '.join(heavy) if heavy else 'none'}",
        "",
        f"{'cumulative us':>14} {'self us':>10}  module",
    ]
    for cumulative, self_us, name in sorted(rows, reverse=True)[:20]:
        lines.append(f"{cumulative:>14} {self_us:>10}  {name}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--importtime", type=Path, help="write the import-time top 20 here")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run_once(["--help"], env)  # warm the file cache and the bytecode cache
    print("| command | median wall s | median CPU s | rounds |")
    print("|---|---|---|---|")
    for label, command in COMMANDS.items():
        walls, cpus = zip(*(run_once(command, env) for _ in range(args.rounds)))
        print(
            f"| `{label}` | {statistics.median(walls):.2f} | {statistics.median(cpus):.2f} "
            f"| {args.rounds} |"
        )
    if args.importtime:
        report = importtime_report(env)
        args.importtime.write_text(report)
        print()
        print(report)


if __name__ == "__main__":
    main()
