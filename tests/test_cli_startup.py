"""The command line's small promises (issue 15): errors start on their own line, never after
a progress bar; bars stay quiet when stderr is not a terminal; `--help` and argument errors
do not import the heavy libraries (measured in benchmarks/, not timed here); TensorBoard
comes with the core install."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]

#: libraries the parser must not need
HEAVY = ("torch", "scipy", "sklearn", "datasets", "pyarrow", "matplotlib", "accelerate", "ray")


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import mmtrain.cli\n"
        "parser, _ = mmtrain.cli.build_parser()\n"
        "parser.format_help()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["experiment", "nope"], ["train"], ["eval", "--help"], ["compare", "--help"]],
)
def test_help_and_argument_errors_import_no_heavy_library(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from mmtrain.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as stop:\n"
        "    code = stop.code\n"
        f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith("[]"), (last, proc.stderr[-500:])
    assert last.split()[0] in ("0", "2"), last


def test_experiment_names_in_the_parser_match_the_experiments() -> None:
    from mmtrain.commands import EXPERIMENT_NAMES
    from mmtrain.paper import EXPERIMENTS

    assert tuple(EXPERIMENT_NAMES) == tuple(EXPERIMENTS)


def test_tensorboard_is_a_core_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "tensorboard" in core


FAILING_RUN = """\
data:
  source: {source}
  batch_size: 16
  read_rows: 16
  shuffle: false
  modalities:
    a: {{kind: vector, options: {{shape: [2], encoder_hidden: [8], decoder_hidden: [8]}}}}
model: {{aggregator: sum_pooling, latent_dim: 2, feature_dim: 8,
        aggregator_options: {{pooling_size: 8, hidden_size: 8}}}}
train: {{steps: 400, log_every: 1}}
output_dir: {output}
"""


def failing_config(tmp_path: Path) -> Path:
    """A run whose data hold a bad cell at row 300: it fails after 18 steps."""
    cells = [[float(i), 1.0] for i in range(600)]
    cells[300] = [1.0]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"a": cells}), tmp_path / "data" / "train.parquet")
    path = tmp_path / "run.yaml"
    path.write_text(FAILING_RUN.format(source=tmp_path / "data", output=tmp_path / "run"))
    return path


def env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", COLUMNS="100")


def assert_error_on_its_own_line(output: str) -> None:
    index = output.find("error: ")
    assert index >= 0, output[-2000:]
    before = output[:index].rsplit("\n", 1)[-1]
    assert before.strip("\r") == "", repr(output[max(0, index - 300) : index + 200])


def test_an_error_after_a_progress_bar_starts_on_its_own_line(tmp_path: Path) -> None:
    """stderr on a terminal (a pseudo-terminal), so the bar is drawn; then a bad row."""
    config = failing_config(tmp_path)
    leader, follower = pty.openpty()
    # A terminal of 24 x 100 (a new pseudo-terminal has 0 columns: tqdm would draw nothing).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmtrain", "train", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=env(),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 2
    output = b"".join(chunks).decode(errors="replace")
    assert "train:" in output and "it/s" in output, output[-2000:]  # a bar was drawn
    assert_error_on_its_own_line(output)
    assert "row 300" in output


def test_bars_stay_quiet_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    config = failing_config(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mmtrain", "train", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
    )
    assert proc.returncode == 2
    assert "it/s" not in proc.stderr, proc.stderr[-2000:]
    assert_error_on_its_own_line(proc.stderr)
