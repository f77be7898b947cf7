"""The ``incontext`` command line: one entry point, one module per subcommand.

Each subcommand module in ``incontext.cli`` exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed
arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from incontext import __version__

# Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: tuple[str, ...] = ("index", "train", "segment", "evaluate", "benchmark", "demo",
                                 "models")


class CLIError(Exception):
    """An error to show the user as one clear line (no traceback)."""


def _number_or_auto(text: str, convert: type, valid: Callable[[Any], bool], what: str,
                    bound: str) -> Any:
    """``auto`` or ``convert(text)`` when ``valid``; else an argparse error naming the rule."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give {what} or 'auto'") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"{text!r}: must be {bound}")
    return value


def tiles_value(text: str) -> int | str:
    """``--tiles`` / ``--model-tiles``: a positive integer, ``auto`` (1 or 2) or ``autoG``
    (1 to G)."""
    low = text.strip().lower()
    if low.startswith("auto") and low != "auto":
        rest = low[4:]
        if not (rest.isdigit() and int(rest) >= 2):
            raise argparse.ArgumentTypeError(f"{text!r}: give 'autoG' with a whole number "
                                             "G >= 2, e.g. auto3")
        return low
    return _number_or_auto(text, int, lambda v: v >= 1, "a whole number >= 1", ">= 1")


def positive_int(text: str) -> int:
    """A whole number >= 1 (e.g. ``--nearest``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def nearest_value(text: str) -> int | str:
    """``--nearest`` / ``--model-nearest``: a whole number >= 1, ``default`` or ``off``."""
    # incontext.support_selection.NEAREST_CHOICES, spelt out: that module imports torch,
    # which the parser (incontext --help) does not need
    if text in ("default", "off"):
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a whole number >= 1, 'default' or 'off'") from None


def threshold_value(text: str) -> float | str:
    """``--threshold`` / ``--model-threshold``: a number in (0, 1) or ``auto``."""
    return _number_or_auto(text, float, lambda v: 0.0 < v < 1.0, "a number in (0, 1)",
                           "in (0, 1)")


def add_device_argument(parser: argparse.ArgumentParser, default: str = "auto",
                        what: str = "the model runs") -> None:
    """``--device``: where ``what`` (resolved by :func:`incontext.device.resolve_device`)."""
    parser.add_argument("--device", default=default, metavar="NAME",
                        help=f"where {what}: auto (a CUDA GPU when available, else "
                             f"cpu), cpu, cuda, cuda:N or mps (default {default})")


class _OneLineErrors(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and a pointer to ``--help``
    (not the whole usage block); its sub-command parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="incontext",
        description="Few-shot, in-context medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"incontext {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"incontext.cli.{name}").register(subparsers)
    return parser


# rich's width when the output is a file or a pipe (its default, 80, cuts table cells)
PIPED_WIDTH = 200


@contextlib.contextmanager
def _wide_when_piped():
    """Let rich tables use :data:`PIPED_WIDTH` columns while stdout is not a terminal
    (a log file, ``| less``); an explicit ``COLUMNS`` wins. Restored afterwards."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        yield
        return
    os.environ["COLUMNS"] = str(PIPED_WIDTH)
    try:
        yield
    finally:
        os.environ.pop("COLUMNS", None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with _wide_when_piped():
            return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError) as exc:
        print(f"incontext {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"incontext {args.command}: interrupted", file=sys.stderr)
        return 130
