"""Progress bars only on a terminal (`mmtrain.progress`), and the library's messages reach
the terminal through `logging` when the command line runs."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmtrain.cli import main
from mmtrain.progress import LIBRARY_SWITCHES, interactive, progress_bar, quiet_library_bars

TINY = """
data: {source: ivae-bimodal, batch_size: 250}
model: {aggregator: sum_pooling, latent_dim: 2, feature_dim: 16,
        aggregator_options: {pooling_size: 16, hidden_size: 16}}
train: {steps: 6, log_every: 2, checkpoint_every: 6}
output_dir: OUTPUT
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_drawn_only_on_a_terminal() -> None:
    plain, terminal = io.StringIO(), Terminal()
    assert not interactive(plain) and interactive(terminal)
    for stream in (plain, terminal):
        with progress_bar(total=3, file=stream, desc="x", mininterval=0) as bar:
            bar.update(3)
    assert plain.getvalue() == ""
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()
    with progress_bar(enabled=False, total=3, file=Terminal()) as bar:
        assert bar.disable


def test_library_bars_are_switched_off_off_a_terminal_and_back_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in LIBRARY_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # the user's choice is kept
    with quiet_library_bars(io.StringIO()):
        assert os.environ["TQDM_DISABLE"] == "1"
        assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    assert "TQDM_DISABLE" not in os.environ
    assert "HF_DATASETS_DISABLE_PROGRESS_BARS" not in os.environ
    with quiet_library_bars(Terminal()):
        assert "TQDM_DISABLE" not in os.environ


def test_a_run_redirected_to_a_file_writes_no_carriage_returns(tmp_path: Path) -> None:
    """`mmtrain train ... > log 2>&1`: no bar redraws in the log, and the loop's messages
    (sent through `logging`) are still there as plain lines."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")  # a previous run, which --overwrite moves aside
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("OUTPUT", str(run)))
    log = tmp_path / "log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", COLUMNS="100")
    for name in LIBRARY_SWITCHES:
        env.pop(name, None)
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, "-m", "mmtrain", "train", str(config), "--overwrite"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=300,
        )
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "\r" not in text, repr(text[-2000:])
    assert "it/s" not in text
    assert f"--overwrite: moved the previous run in {run} to " in text


def test_the_command_line_shows_library_messages_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmtrain.cli as cli

    logger = logging.getLogger("mmtrain.some.module")

    class Probe:
        @staticmethod
        def run(args: object) -> int:
            logger.info("a message from the library")
            logger.debug("not shown")
            return 0

    original = cli.build_parser
    monkeypatch.setattr(
        cli, "build_parser", lambda: (original()[0], dict(original()[1], plugins=Probe))
    )
    assert main(["plugins", "list"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "a message from the library\n"
    assert "a message" not in captured.out
    assert not logging.getLogger("mmtrain").handlers  # nothing left behind
