"""Subcommands of the ``ddpm`` tool, one module each; :mod:`ddpm.cli` lists them in ``COMMAND_MODULES``."""
