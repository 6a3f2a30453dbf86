"""The `mmtrain` command line: errors in one or two lines with exit status 2, `--debug` for
the traceback. Each subcommand lives in `mmtrain.commands.<name>` with `add_parser` and `run`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TextIO

from mmtrain.errors import MMTrainError
from mmtrain.progress import quiet_library_bars

#: subcommand modules, in help order
COMMAND_MODULES = (
    "experiment",
    "train",
    "eval",
    "compare",
    "sweep",
    "export",
    "data",
    "plugins",
)


class CLIError(MMTrainError):
    """Bad command-line usage."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{self.prog}: {message}")


def _command_modules() -> dict[str, ModuleType]:
    modules = {}
    for name in COMMAND_MODULES:
        try:
            modules[name] = importlib.import_module(f"mmtrain.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"mmtrain.commands.{name}":
                raise
    return modules


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = _Parser(prog="mmtrain", description="Multi-modal VAEs with masked objectives.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    modules = _command_modules()
    for module in modules.values():
        module.add_parser(sub)
    return parser, modules


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each message."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


@contextmanager
def messages_on_stderr() -> Iterator[None]:
    """While open, the library's messages (`logging` under `mmtrain`, INFO and above) appear
    on stderr as plain lines, as the command line shows them."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("mmtrain")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with messages_on_stderr(), quiet_library_bars():
        return _main(argv)


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        parser, modules = build_parser()
        args = parser.parse_args(argv)
        args.argv = [word for word in argv if word != "--debug"]
        return int(modules[args.command].run(args) or 0)
    except MMTrainError as error:
        close_progress_bars()
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        if not debug:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        close_progress_bars()
        print(f"interrupted{f': {error}' if str(error) else ''}", file=sys.stderr)
        return 130


def close_progress_bars() -> None:
    """Close every open tqdm bar, so that a message printed next starts on its own line."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is None:
        return
    for bar in list(getattr(tqdm.tqdm, "_instances", ())):
        bar.close()
