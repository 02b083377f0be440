"""The memory a request needs against the memory there is: refuse what cannot fit *before* allocating it.

A hostile or mistyped request (a config with ``sample_size`` 65536, a batch of a million images, a weights file of
18 GB) must end in a clear :class:`~ddpm.errors.ResourceLimitError` that gives the estimate, the limit and how to
lower the request, instead of an allocation that swaps the machine to a halt or is killed by the kernel.

The limit is the memory available on the device (on the CPU: ``MemAvailable`` from ``/proc/meminfo``, else the
physical memory; on CUDA: the free memory ``torch.cuda.mem_get_info`` reports). ``DDPM_MEMORY_LIMIT`` (bytes, or
with a unit: ``512MB``, ``8GiB``) overrides it, e.g. to keep several jobs within their share of a machine.
"""

from __future__ import annotations

import os
import re

import torch

from .errors import ConfigError, ResourceLimitError

__all__ = ["LIMIT_ENV", "available_bytes", "check_fits", "format_bytes", "memory_limit", "parse_bytes"]

#: The environment variable that overrides the memory limit (bytes, or a size with a unit).
LIMIT_ENV = "DDPM_MEMORY_LIMIT"

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40})


def parse_bytes(text: str) -> int:
    """``"512MB"`` → 512000000, ``"8GiB"`` → 8589934592, ``"1000"`` → 1000.

    Raises:
        ConfigError: ``text`` is not a non-negative number with an optional unit (B, KB, MB, GB, TB, KiB ... TiB).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(f"{text!r} is not a size; write bytes or a number with a unit such as 512MB or 8GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """A size for messages: ``1.5 GiB``, ``320 MiB``, ``12 KiB``, ``100 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _cpu_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def available_bytes(device: torch.device | str | None = None) -> int | None:
    """The memory available now on ``device`` (default: the CPU); None where it cannot be known (e.g. MPS)."""
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        return _cpu_available()
    return None


def memory_limit(device: torch.device | str | None = None) -> int | None:
    """The most memory one request may ask for: :data:`LIMIT_ENV` when set, else :func:`available_bytes`."""
    override = os.environ.get(LIMIT_ENV)
    if override:
        return parse_bytes(override)
    return available_bytes(device)


def check_fits(need: int, *, what: str, lower: str, device: torch.device | str | None = None) -> None:
    """Refuse a request that needs more than :func:`memory_limit` bytes, before anything is allocated.

    Args:
        need: The estimated bytes the request needs.
        what: The request, for the message (``"sampling a batch of 64 images of 256x256"``).
        lower: How to lower it (``"use a smaller --batch-size"``).
        device: Where the memory would be allocated (default: the CPU).

    Raises:
        ResourceLimitError: ``need`` exceeds the limit; the message gives both and ``lower``.
    """
    limit = memory_limit(device)
    if limit is None or need <= limit:
        return
    where = torch.device(device if device is not None else "cpu")
    source = f"{LIMIT_ENV}={os.environ[LIMIT_ENV]}" if os.environ.get(LIMIT_ENV) else f"available on {where}"
    raise ResourceLimitError(
        f"{what} needs about {format_bytes(need)}, more than the {format_bytes(limit)} {source}; {lower} "
        f"(or set {LIMIT_ENV} to allow more)"
    )
