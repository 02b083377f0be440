"""Where code runs: the device, the floating-point dtype, and this process's place in a ``torchrun`` job.

One resolver for each, shared by the models (``torch_dtype=``), the trainer and every ``ddpm`` subcommand:

* :func:`resolve_device`: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device``;
* :func:`resolve_dtype`: a ``torch.dtype``, its name (``"float16"``, ``"torch.bfloat16"``) or a command-line name
  (``"fp32"``, ``"fp16"``, ``"bf16"``, the keys of :data:`DTYPES`);
* :class:`Distributed`: rank, world size, barrier and sums over the processes of a ``torchrun`` job. A lone process
  joins no process group and every collective is a no-op, so callers use them unconditionally.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import overload

import torch

__all__ = ["DEVICES", "DTYPES", "Distributed", "env_int", "resolve_device", "resolve_dtype"]

#: Command-line dtype names (``--dtype``) and the torch dtypes they mean.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Device names a command line offers; ``auto`` means CUDA when torch sees it, else the CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@overload
def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype: ...
@overload
def resolve_dtype(dtype: None) -> None: ...
def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A floating-point ``torch.dtype`` from itself, its name (``"float16"``, ``"torch.bfloat16"``, ``"half"``) or a
    command-line name (``"fp32"``, ``"fp16"``, ``"bf16"``); None stays None.

    Raises:
        ValueError: ``dtype`` names no floating-point torch dtype.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        value = DTYPES.get(name, getattr(torch, name, None))
        if isinstance(value, torch.dtype) and value.is_floating_point:
            return value
    raise ValueError(
        f"torch_dtype={dtype!r} is not a floating-point torch dtype; use torch.float32, torch.float16 or torch.bfloat16"
    )


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``device``: ``"auto"`` (or None) picks CUDA when torch sees it, else the CPU.

    A CUDA device without an index becomes ``cuda:<local_rank>`` (modulo the GPUs torch sees), so each process of a
    ``torchrun`` job takes its own GPU.

    Raises:
        ValueError: ``device`` is not a device name, or it is a CUDA device and torch sees no CUDA device.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {device!r}: use {', '.join(DEVICES)} or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: torch sees no CUDA device here; use --device cpu (or auto)")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank % torch.cuda.device_count())
    return resolved


def env_int(name: str, default: int) -> int:
    """An integer environment variable such as ``WORLD_SIZE`` (``default`` when unset or empty).

    Raises:
        ValueError: The variable is set to something other than an integer; the message names it.
    """
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


class Distributed:
    """This process's place in a ``torchrun`` job (or a lone process), and the collectives ddpm uses.

    The rank and world size come from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). With
    several processes, :meth:`joined` (or :meth:`setup`) joins a process group: gloo for CPU tensors, paired with
    NCCL for CUDA tensors when the device is a GPU. With one process nothing is joined and the collectives return
    their input.

    Example::

        dist = Distributed()
        device = resolve_device("auto", dist.local_rank)
        with dist.joined(device):
            written = dist.all_sum([n_written])      # the same list on every rank
            dist.barrier()

    Raises:
        ValueError: A torchrun variable is not an integer.
    """

    def __init__(self) -> None:
        self.world_size = env_int("WORLD_SIZE", 1)
        self.rank = env_int("RANK", 0)
        self.local_rank = env_int("LOCAL_RANK", self.rank)
        self._owns_group = False

    @property
    def enabled(self) -> bool:
        """Whether there are several processes (and collectives communicate)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that reports and writes shared files."""
        return self.rank == 0

    def setup(self, device: torch.device) -> None:
        """Join the process group (once, when there are several processes); ``device`` is this process's device."""
        if not self.enabled:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            # GPU tensors (DDP's gradient buckets) go over NCCL; the small CPU tensors of the collectives below
            # cannot, so CUDA runs pair NCCL with gloo for those. Binding the device also tells barrier() which
            # GPU to synchronise.
            backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
            self._owns_group = True

    def teardown(self) -> None:
        """Leave the process group if :meth:`setup` created it."""
        if self._owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owns_group = False

    @contextlib.contextmanager
    def joined(self, device: torch.device) -> Iterator[Distributed]:
        """:meth:`setup` on entry, :meth:`teardown` on exit; yields ``self``."""
        self.setup(device)
        try:
            yield self
        finally:
            self.teardown()

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if not self.enabled:
            return
        import torch.distributed as dist

        dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum the CPU tensor ``values`` over the processes, in place; returns it."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def all_sum(self, values: Sequence[int]) -> list[int]:
        """The element-wise sums of ``values`` over the processes (the same list on every rank)."""
        summed = self.all_reduce_sum(torch.tensor(list(values), dtype=torch.int64))
        return [int(v) for v in summed.tolist()]
