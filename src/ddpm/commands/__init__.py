"""Subcommands of the ``ddpm`` tool, one module each; ``ddpm.cli`` lists them in ``COMMAND_MODULES``."""
