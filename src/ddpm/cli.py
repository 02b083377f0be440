"""The ``ddpm`` command-line tool (also ``python -m ddpm``).

Each subcommand lives in its own module of :mod:`ddpm.commands`, listed in ``COMMAND_MODULES``; the library code
it fronts stays in its package (pipelines, ``ddpm.training``, ``ddpm.evaluation``). A command module defines:

* ``add_parser(subparsers) -> argparse.ArgumentParser``: adds its subcommand with
  ``subparsers.add_parser(name, help=...)``, adds the options, and returns the new parser;
* ``run(args) -> int``: does the work and returns the exit status.

Adding a command means writing such a module and adding one line to ``COMMAND_MODULES``. A parser reads its
choices and defaults from the library (the scheduler registry, ``TrainingConfig``), never a copy of them; loading
models, data and pipelines waits for ``run``. Devices, dtypes and torchrun processes go through :mod:`ddpm.runtime`.

Exit status: 0 on success, 1 when bad input, a missing file or a file-system error (permission denied, disk full)
stops a command (the message goes to stderr, without a traceback unless ``--verbose``), 2 for command-line usage
errors (``ddpm`` with no command prints the help and exits 2), 130 when interrupted with Ctrl-C, 141 (128 + SIGPIPE,
as a shell reports it) when the reader of the output went away (``ddpm info | head``): quietly, without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .errors import DDPMError

__all__ = ["COMMAND_MODULES", "EXIT_BROKEN_PIPE", "build_parser", "main"]

#: The exit status after the reader of stdout went away: 128 + SIGPIPE, what a shell reports for such a tool.
EXIT_BROKEN_PIPE = 141

#: The subcommand modules, in the order ``ddpm --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "ddpm.commands.sample",
    "ddpm.commands.info",
    "ddpm.commands.train",
    "ddpm.commands.evaluate",
    "ddpm.commands.edit",
    "ddpm.commands.interpolate",
    "ddpm.commands.inpaint",
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _load_commands():
        child = module.add_parser(sub)
        child.set_defaults(_run=module.run)
    return parser


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's final flush cannot fail again on a closed pipe.

    The Python documentation's recipe for SIGPIPE (signal module, "Note on SIGPIPE").
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout has no descriptor (replaced, e.g. in tests)
        sys.stdout = open(os.devnull, "w")  # lives until the process exits


def _os_error(exc: OSError) -> str:
    """A one-line message for a file-system error: the path, the system's reason, and what to do."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        advice = "free some space or write elsewhere"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose a location you can write to, or fix its permissions"
    else:
        advice = "check the path"
    return f"{where}{reason}; {advice}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ddpm`` tool with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain ``ddpm``: the help, as ``ddpm --help`` prints it, but a usage error's status
        parser.print_help()
        return 2
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    try:
        status = int(args._run(args))
        sys.stdout.flush()  # a closed pipe shows up here rather than at the interpreter's exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130
    except (DDPMError, ValueError, FileNotFoundError, NotImplementedError, FloatingPointError, OSError) as exc:
        # Bad input, missing files and file-system errors (every DDPMError is one of these): the message says it
        # all, so no traceback unless --verbose asks for it. Anything else is a bug and propagates with its traceback.
        if args.verbose:
            raise
        plain = isinstance(exc, OSError) and type(exc) in _PLAIN_OS_ERRORS  # not ddpm's own, which say more
        message = _os_error(exc) if plain and isinstance(exc, OSError) else str(exc)
        print(f"ddpm {args.command}: error: {message}", file=sys.stderr)
        return 1


#: The built-in file-system errors (not ddpm's own, whose messages say more), reported with :func:`_os_error`.
_PLAIN_OS_ERRORS: tuple[type[OSError], ...] = (
    OSError,
    PermissionError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
)
