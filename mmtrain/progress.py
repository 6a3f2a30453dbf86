"""Progress bars only on a terminal.

A bar redraws itself with carriage returns; written to a file or a pipe (`mmtrain train ... >
log 2>&1`, a batch job's log) every redraw would stay in the output. Every bar mmtrain draws
goes through `progress_bar`, which is disabled unless its stream is a terminal, and the
command line calls `quiet_library_bars` so that the bars of the libraries it uses (Hugging
Face `datasets` and `huggingface_hub`, anything else built on tqdm) follow the same rule.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

#: environment variables that switch off the libraries' own bars (read when they are imported;
#: subprocesses such as Ray or Accelerate workers inherit them)
LIBRARY_SWITCHES = (
    "TQDM_DISABLE",
    "HF_DATASETS_DISABLE_PROGRESS_BARS",
    "HF_HUB_DISABLE_PROGRESS_BARS",
)


def interactive(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default: the current `sys.stderr`) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def progress_bar(*, enabled: bool = True, file: TextIO | None = None, **kwargs: Any) -> Any:
    """A tqdm bar on `file` (default `sys.stderr`), disabled unless `enabled` and `file` is a
    terminal. Other keyword arguments go to tqdm."""
    from tqdm.auto import tqdm

    file = sys.stderr if file is None else file
    return tqdm(file=file, disable=not (enabled and interactive(file)), **kwargs)


@contextmanager
def quiet_library_bars(stream: TextIO | None = None) -> Iterator[None]:
    """While open, the libraries' bars are off when `stream` (default `sys.stderr`) is not a
    terminal: the switches are set in the environment (a setting already there is kept) for the
    libraries imported meanwhile and for subprocesses, and put back as they were afterwards."""
    if interactive(stream):
        yield
        return
    saved = {name: os.environ.get(name) for name in LIBRARY_SWITCHES}
    for name in LIBRARY_SWITCHES:
        os.environ.setdefault(name, "1")
    # Libraries imported before (a caller of `mmtrain.cli.main` in the same process) read
    # their switch already: turn their bars off directly.
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        hub.disable_progress_bars()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
