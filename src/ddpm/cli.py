"""The ``ddpm`` command-line tool (also ``python -m ddpm``).

Each subcommand lives in its own module of :mod:`ddpm.commands`, listed in ``COMMAND_MODULES``; the library code
it fronts stays in its package (pipelines, ``ddpm.training``, ``ddpm.evaluation``). A command module defines:

* ``add_parser(subparsers) -> argparse.ArgumentParser``: adds its subcommand with
  ``subparsers.add_parser(name, help=...)``, adds the options, and returns the new parser;
* ``run(args) -> int``: does the work and returns the exit status.

Adding a command means writing such a module and adding one line to ``COMMAND_MODULES``. A parser reads its
choices and defaults from the library (the scheduler registry, ``TrainingConfig``), never a copy of them; loading
models, data and pipelines waits for ``run``. Devices, dtypes and torchrun processes go through :mod:`ddpm.runtime`.

Exit status: 0 on success, 1 when bad input or a missing file stops a command (the message goes to stderr, without a
traceback unless ``--verbose``), 2 for command-line usage errors, 130 when interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from .errors import DDPMError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: The subcommand modules, in the order ``ddpm --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "ddpm.commands.sample",
    "ddpm.commands.info",
    "ddpm.commands.train",
    "ddpm.commands.evaluate",
)


def _load_commands() -> list[ModuleType]:
    modules = [importlib.import_module(name) for name in COMMAND_MODULES]
    for module in modules:
        for attr in ("add_parser", "run"):
            if not hasattr(module, attr):
                raise AttributeError(f"command module {module.__name__} defines no {attr}")  # programming error
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ddpm`` tool, with one subparser per command module."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ddpm",
        description="Generate images with DDPM-family diffusion models and inspect checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"ddpm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _load_commands():
        child = module.add_parser(sub)
        child.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ddpm`` tool with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130
    except (DDPMError, ValueError, FileNotFoundError, NotImplementedError, FloatingPointError) as exc:
        # Bad input and missing files (every DDPMError is one of these): the message says it all, so no traceback
        # unless --verbose asks for it. Anything else is a bug and propagates with its traceback.
        if args.verbose:
            raise
        print(f"ddpm {args.command}: error: {exc}", file=sys.stderr)
        return 1
