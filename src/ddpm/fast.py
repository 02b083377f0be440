"""Fast sampling: half-precision UNet, fp32 scheduler math, and the UNet step replayed as a CUDA graph.

Turned on for a pipeline with one call, :meth:`ddpm.pipelines.DiffusionPipeline.enable_fast_sampling` (or
``ddpm sample --fast``), which builds a :class:`UNetRunner` from :class:`FastSamplingOptions`:

* **Precision.** The UNet's weights are cast to ``dtype`` (default: bfloat16 on CUDA, and on a CPU with native
  bf16 instructions; float32 elsewhere). The running sample x_t, the initial noise and every scheduler step stay in
  float32: only the UNet input is cast down, and its output is cast back up. So the noise drawn for a seed is the
  float32 reference's noise, and the only difference from the reference is the UNet's own rounding.
* **Layout and kernels.** The device's faster layout (channels_last on the CPU, standard on CUDA), attention through
  ``torch.nn.functional.scaled_dot_product_attention`` (flash / memory-efficient kernels on CUDA), TF32 matrix
  products for a float32 UNet on CUDA (set only around the runner's own calls, then restored).
* **CUDA graphs.** For one (batch, C, H, W), dtype and device the UNet forward is captured once into a CUDA graph
  that reads two static input buffers (the sample and the timestep) and writes a static output. Each step copies
  x_t and the timestep into those buffers (device-to-device copies; the timestep is a view of the scheduler's
  ``timesteps`` tensor, which lives on the device), replays the graph and copies the output out: no host-device
  synchronisation and one launch for the whole network. A new shape, dtype or device captures again.
* **torch.compile** (optional, off by default). The compile time is measured (:attr:`RunnerStats.compile_s`) and
  bounded by ``compile_budget_s``: where a timer signal is available (POSIX, main thread) a compile that runs past
  the budget is aborted; in any case, a compile over budget is not repeated for later shapes, which then run
  without it. Either way the runner carries on uncompiled and logs a warning that says so.

Without CUDA the runner calls the UNet eagerly (with the same casts); for tests on CPU, ``graph="emulate"`` runs the
static-buffer logic with the capture replaced by a plain call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "COMPILE_MODES",
    "FastSamplingOptions",
    "RunnerStats",
    "UNetRunner",
    "cpu_supports_bf16",
    "default_fast_dtype",
    "running_dtype",
]

#: ``torch.compile`` modes the runner accepts. The last two capture CUDA graphs inside inductor, so the runner
#: does not capture its own on top of them.
COMPILE_MODES: tuple[str, ...] = ("default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
_INDUCTOR_GRAPH_MODES = frozenset({"reduce-overhead", "max-autotune"})
GraphMode = Literal["auto", "cuda", "emulate", "off"]
_HALF = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------------ precision choice


def cpu_supports_bf16() -> bool:
    """Whether this processor has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 runs faster than fp32.

    Without it PyTorch still computes in bf16 on CPU, but by conversion, usually slower than fp32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if any(callable(probe) for probe in found):
        return any(bool(probe()) for probe in found if callable(probe))
    mkldnn = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # older torch
    return bool(mkldnn()) if mkldnn is not None else False


def default_fast_dtype(device: torch.device | str) -> torch.dtype:
    """The UNet dtype of the fast path on ``device``: bf16 on CUDA (fp16 on cards without bf16), bf16 on a CPU with
    native bf16 instructions, float32 anywhere else."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def running_dtype(unet_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the running sample x_t for a UNet in ``unet_dtype``: float32 for a half-precision UNet."""
    return torch.float32 if unet_dtype in _HALF else unet_dtype


# ------------------------------------------------------------------------------------------------ options and stats


@dataclasses.dataclass(frozen=True)
class FastSamplingOptions:
    """What :meth:`~ddpm.pipelines.DiffusionPipeline.enable_fast_sampling` turns on.

    Attributes:
        dtype: The UNet's weights dtype (``torch.bfloat16``, ``torch.float16``, ``torch.float32``), or None for
            :func:`default_fast_dtype` of the pipeline's device. The sample and the scheduler stay float32.
        cuda_graph: Capture the UNet forward as a CUDA graph per input shape (CUDA only; ignored elsewhere).
        compile: A ``torch.compile`` mode from :data:`COMPILE_MODES`, True for ``"max-autotune-no-cudagraphs"``,
            or False/None for no compilation.
        compile_budget_s: The most seconds a compilation may take (see the module docs); None for no limit.
        channels_last: Convolution weights (and so activations) in channels_last layout (True) or the standard one
            (False); None (default) picks the device's faster layout, ``preferred_memory_format``: channels_last on
            the CPU, standard on CUDA (PyTorch's CUDA GroupNorm has no channels_last kernel).
        tf32: Allow TF32 matrix products and convolutions while a float32 UNet runs on CUDA.
    """

    dtype: torch.dtype | None = None
    cuda_graph: bool = True
    compile: str | bool | None = False
    compile_budget_s: float | None = 120.0
    channels_last: bool | None = None
    tf32: bool = True

    def __post_init__(self) -> None:
        if self.dtype is not None and (not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point):
            raise TypeError(
                f"dtype must be a floating-point torch.dtype (torch.bfloat16, torch.float16, torch.float32) or None, "
                f"got {self.dtype!r}"
            )
        mode = self.compile_mode
        if mode is not None and mode not in COMPILE_MODES:
            raise ValueError(f"compile={self.compile!r}: use False, True or one of {', '.join(COMPILE_MODES)}")
        budget = self.compile_budget_s
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
            raise ValueError(f"compile_budget_s must be a positive number of seconds or None, got {budget!r}")
        for name in ("cuda_graph", "tf32"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise TypeError(
                f"channels_last must be True, False or None (the device's layout), got {self.channels_last!r}"
            )

    @property
    def compile_mode(self) -> str | None:
        """The ``torch.compile`` mode, or None when compilation is off."""
        if self.compile is None or self.compile is False:
            return None
        if self.compile is True:
            return "max-autotune-no-cudagraphs"
        return self.compile

    def unet_dtype(self, device: torch.device | str) -> torch.dtype:
        """The UNet's dtype on ``device``: ``dtype``, or :func:`default_fast_dtype` when it is None."""
        return self.dtype or default_fast_dtype(device)

    def memory_format(self, device: torch.device | str) -> torch.memory_format:
        """The UNet's weights layout on ``device``: ``channels_last``, or the device's faster one when it is None."""
        if self.channels_last is None:
            from .models.unet_2d import preferred_memory_format

            return preferred_memory_format(device)
        return torch.channels_last if self.channels_last else torch.contiguous_format


@dataclasses.dataclass
class RunnerStats:
    """What a :class:`UNetRunner` did, for logs and benchmarks.

    Attributes:
        mode: How the last shape runs: ``"cuda_graph"``, ``"emulated_graph"`` or ``"eager"``.
        captures: How many times a graph was (re)captured.
        calls: UNet evaluations served.
        setup_s: Seconds of the last setup: warm-up (compilation included) plus capture.
        compile_s: Seconds of the last first-call compilation, or None without compilation.
        compile_aborted: True once a compilation failed, was stopped, or ran past ``compile_budget_s``; shapes
            not compiled by then run uncompiled.
        compile_error: Why compilation was given up, or None.
    """

    mode: str = "eager"
    captures: int = 0
    calls: int = 0
    setup_s: float = 0.0
    compile_s: float | None = None
    compile_aborted: bool = False
    compile_error: str | None = None


# ------------------------------------------------------------------------------------------------------ the runner


class CompileTimeout(Exception):
    """A ``torch.compile`` ran past its budget (raised by the timer inside the compilation, caught by the runner)."""


_Key = tuple[Any, ...]
# Compilation states: compile every new shape; use what was compiled but compile nothing new; never compile.
_COMPILE_ON, _COMPILE_FROZEN, _COMPILE_OFF = "on", "frozen", "off"


class UNetRunner:
    """Evaluates a UNet for the sampling loop: casts, static buffers, CUDA-graph replay, optional compilation.

    ``runner(sample, timestep)`` returns the UNet's prediction in ``sample``'s dtype, as a fresh tensor; the sample
    is cast to the UNet's dtype inside the (captured) call. The first call for a given shape, dtype, device and
    layout of the sample, shape and dtype of the timestep, and dtype and device of the UNet sets up: static buffers,
    warm-up on a side stream (compiling, if asked), capture. Later calls with the same key copy their inputs into
    the static buffers and replay; any change sets up again.

    Args:
        unet: The UNet; the runner follows its current device and dtype at each call.
        graph: ``"auto"`` (a CUDA graph on CUDA, eager elsewhere), ``"cuda"`` (the same: there is no graph off
            CUDA), ``"emulate"`` (static buffers and a plain call in place of the capture, on any device, for
            tests) or ``"off"`` (always eager).
        compile_mode: A ``torch.compile`` mode from :data:`COMPILE_MODES`, or None.
        compile_budget_s: The budget of each compilation in seconds, or None.
        tf32: Allow TF32 on CUDA while a float32 UNet runs (restored after each call).
        warmup: Calls before a capture (on a side stream on CUDA), so that cuDNN and cuBLAS pick and cache their
            kernels outside the graph.
        compile_backend: The ``torch.compile`` backend (``"inductor"``; tests use ``"eager"``).

    Raises:
        ValueError: An unknown ``graph`` or ``compile_mode``, or ``warmup`` < 1.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        *,
        graph: GraphMode = "auto",
        compile_mode: str | None = None,
        compile_budget_s: float | None = 120.0,
        tf32: bool = True,
        warmup: int = 2,
        compile_backend: str = "inductor",
    ) -> None:
        if graph not in ("auto", "cuda", "emulate", "off"):
            raise ValueError(f"graph={graph!r}: use 'auto', 'cuda', 'emulate' or 'off'")
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode={compile_mode!r}: use None or one of {', '.join(COMPILE_MODES)}")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1, got {warmup}")
        self.unet = unet
        self.graph = graph
        self.compile_mode = compile_mode
        self.compile_budget_s = compile_budget_s
        self.tf32 = tf32
        self.warmup = warmup
        self.compile_backend = compile_backend
        self.stats = RunnerStats()
        self._compile_state = _COMPILE_OFF if compile_mode is None else _COMPILE_ON
        self._compiled: Callable[..., Any] | None = None
        self._compiled_keys: set[_Key] = set()
        self._key: _Key | None = None
        self._static_sample: torch.Tensor | None = None
        self._static_timestep: torch.Tensor | None = None
        self._static_out: torch.Tensor | None = None
        self._replay: Callable[[], None] | None = None

    @classmethod
    def from_options(cls, unet: torch.nn.Module, options: FastSamplingOptions) -> UNetRunner:
        """The runner :meth:`~ddpm.pipelines.DiffusionPipeline.enable_fast_sampling` builds for ``options``
        (``cuda_graph=False`` runs eagerly); ``unet`` should already be in ``options``' dtype and layout."""
        return cls(
            unet,
            graph="auto" if options.cuda_graph else "off",
            compile_mode=options.compile_mode,
            compile_budget_s=options.compile_budget_s,
            tf32=options.tf32,
        )

    def __repr__(self) -> str:
        return (
            f"UNetRunner(graph={self.graph!r}, compile_mode={self.compile_mode!r}, mode={self.stats.mode!r}, "
            f"captures={self.stats.captures})"
        )

    def reset(self) -> None:
        """Drop the captured graph and its buffers (their memory returns to PyTorch's allocator)."""
        self._key = None
        self._replay = None
        self._static_sample = self._static_timestep = self._static_out = None

    # -------------------------------------------------------------------------------------------- the call
    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        """The UNet's prediction for ``sample`` (B, C, H, W) at ``timestep``, in ``sample``'s dtype.

        Args:
            sample: x_t, shape (B, C, H, W), any floating dtype (float32 in the fast path).
            timestep: A 0-d or 1-d integer tensor, ideally an element of the scheduler's ``timesteps`` on the
                sample's device (copying it in is then a device-to-device copy), or a Python int.

        Returns:
            A new tensor of shape (B, out_channels, H, W) in ``sample``'s dtype, on its device.

        Raises:
            TypeError: ``timestep`` is neither an int nor a tensor.
        """
        if isinstance(timestep, bool) or not isinstance(timestep, (int, torch.Tensor)):
            raise TypeError(f"timestep must be an int or an integer tensor, got {type(timestep).__name__}")
        with torch.inference_mode():
            key = self._key_for(sample, timestep)
            mode = self._mode_for(sample, timestep)
            self.stats.calls += 1
            if mode == "eager":
                self.stats.mode = mode
                with self._context(sample.device):
                    return self._eager(key, sample, timestep)
            if key == self._key:
                self._copy_in(sample, timestep)
            else:
                self._setup(key, mode, sample, timestep)
            assert self._replay is not None and self._static_out is not None
            self._replay()
            # A copy: the next replay overwrites the static output, and callers may keep this tensor.
            return self._static_out.clone()

    # -------------------------------------------------------------------------------------------- modes
    def _key_for(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> _Key:
        unet_dtype, unet_device = _dtype_and_device(self.unet)
        layout = sample.is_contiguous(memory_format=torch.channels_last)
        t_meta = _timestep_buffer_meta(timestep)
        return (tuple(sample.shape), sample.dtype, sample.device, layout, t_meta, unet_dtype, unet_device)

    def _mode_for(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> str:
        if self.graph == "off":
            return "eager"
        if isinstance(timestep, torch.Tensor) and timestep.is_floating_point():
            return "eager"  # the UNet checks float timesteps for NaN: a host read, which a graph cannot hold
        if self.graph == "emulate":
            return "emulated_graph"
        if sample.device.type != "cuda":
            return "eager"  # no CUDA graph off CUDA
        if self._compile_state != _COMPILE_OFF and self.compile_mode in _INDUCTOR_GRAPH_MODES:
            return "eager"  # inductor captures its own graphs
        return "cuda_graph"

    # -------------------------------------------------------------------------------------------- compilation
    def _module_for(self, key: _Key) -> Callable[..., Any]:
        """The compiled UNet where this key is (or may be) compiled, else the UNet itself."""
        use = self._compile_state == _COMPILE_ON or (
            self._compile_state == _COMPILE_FROZEN and key in self._compiled_keys
        )
        if not use:
            return self.unet
        if self._compiled is None:
            self._compiled = torch.compile(
                self.unet, mode=self.compile_mode, backend=self.compile_backend, dynamic=False
            )
        return self._compiled

    def _needs_compile(self, key: _Key) -> bool:
        return self._compile_state == _COMPILE_ON and key not in self._compiled_keys

    def _compile_first_call(self, key: _Key, call: Callable[[], torch.Tensor]) -> torch.Tensor | None:
        """Run the first call for ``key`` of the compiled UNet (which compiles it) under the budget.

        Returns its output, or None when compilation failed or was stopped (compilation is then off).
        """
        start = time.perf_counter()
        try:
            with _deadline(self.compile_budget_s) as timer:
                out = call()
                _synchronize(out.device)
        except Exception as exc:
            elapsed = time.perf_counter() - start
            if timer.fired:
                why = f"torch.compile stopped after {elapsed:.1f} s, past compile_budget_s={self.compile_budget_s}"
            else:
                why = f"torch.compile failed after {elapsed:.1f} s ({type(exc).__name__}: {exc})"
            self._stop_compiling(why, _COMPILE_OFF)
            return None
        elapsed = time.perf_counter() - start
        self.stats.compile_s = elapsed
        self._compiled_keys.add(key)
        if self.compile_budget_s is not None and elapsed > self.compile_budget_s:
            why = f"torch.compile took {elapsed:.1f} s, past compile_budget_s={self.compile_budget_s}"
            self._stop_compiling(why + "; new shapes will run uncompiled", _COMPILE_FROZEN)
        else:
            logger.info("ddpm fast sampling: torch.compile(mode=%r) took %.1f s", self.compile_mode, elapsed)
        return out

    def _stop_compiling(self, why: str, state: str) -> None:
        self._compile_state = state
        self.stats.compile_error = why
        self.stats.compile_aborted = True
        if state == _COMPILE_OFF:
            self._compiled = None
        logger.warning("ddpm fast sampling: %s", why)

    # -------------------------------------------------------------------------------------------- running
    def _forward(self, module: Callable[..., Any], sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        """Cast in, run, cast out: the work of each step (and what a graph captures)."""
        unet_dtype, _ = _dtype_and_device(self.unet)
        if module is not self.unet and self.compile_mode in _INDUCTOR_GRAPH_MODES:
            mark_step = getattr(torch.compiler, "cudagraph_mark_step_begin", None)
            if mark_step is not None:
                mark_step()  # a new step: inductor may overwrite the outputs of its previous graph replay
        out = module(sample.to(unet_dtype), timestep, return_dict=False)[0]
        return out.to(sample.dtype)

    def _eager(self, key: _Key, sample: torch.Tensor, timestep: torch.Tensor | int) -> torch.Tensor:
        out = None
        if self._needs_compile(key):
            out = self._compile_first_call(key, lambda: self._forward(self._module_for(key), sample, timestep))
        if out is None:
            module = self._module_for(key)
            out = self._forward(module, sample, timestep)
            if module is not self.unet:
                out = out.clone()  # inductor's graphs own their outputs
        return out

    def _setup(self, key: _Key, mode: str, sample: torch.Tensor, timestep: torch.Tensor | int) -> None:
        """Allocate static buffers for ``key``, copy the inputs in, warm up (compiling if asked) and capture."""
        self.reset()
        start = time.perf_counter()
        device = sample.device
        self._static_sample = torch.empty_like(sample)
        t_shape, t_dtype = _timestep_buffer_meta(timestep)
        self._static_timestep = torch.empty(t_shape, dtype=t_dtype, device=device)
        self._copy_in(sample, timestep)
        static_sample, static_timestep = self._static_sample, self._static_timestep

        def step() -> torch.Tensor:
            return self._forward(self._module_for(key), static_sample, static_timestep)

        def warm_up() -> None:
            if self._needs_compile(key):
                self._compile_first_call(key, step)
            for _ in range(self.warmup):
                step()

        with self._context(device):
            if mode == "cuda_graph":
                self._static_out, self._replay = _capture_cuda(step, warm_up, device)
            else:
                self._static_out, self._replay = _capture_emulated(step, warm_up)
        self._key = key
        self.stats.mode = mode
        self.stats.captures += 1
        self.stats.setup_s = time.perf_counter() - start
        logger.info("ddpm fast sampling: %s set up for %s in %.2f s", mode, tuple(sample.shape), self.stats.setup_s)

    def _copy_in(self, sample: torch.Tensor, timestep: torch.Tensor | int) -> None:
        assert self._static_sample is not None and self._static_timestep is not None
        self._static_sample.copy_(sample)
        if isinstance(timestep, int):
            self._static_timestep.fill_(timestep)  # a kernel argument: no host-to-device copy
        else:
            self._static_timestep.copy_(timestep.reshape(-1))  # device to device for the scheduler's timesteps

    @contextlib.contextmanager
    def _context(self, device: torch.device) -> Iterator[None]:
        """TF32 for a float32 UNet on CUDA, restored afterwards."""
        unet_dtype, _ = _dtype_and_device(self.unet)
        if not (self.tf32 and device.type == "cuda" and unet_dtype == torch.float32):
            yield
            return
        matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
        previous = (matmul.allow_tf32, cudnn.allow_tf32)
        matmul.allow_tf32 = cudnn.allow_tf32 = True
        try:
            yield
        finally:
            matmul.allow_tf32, cudnn.allow_tf32 = previous


def _capture_emulated(
    step: Callable[[], torch.Tensor], warm_up: Callable[[], None]
) -> tuple[torch.Tensor, Callable[[], None]]:
    """The stand-in for a capture off CUDA: the static output is refilled by a plain call at each replay."""
    warm_up()
    static_out = step()

    def replay() -> None:
        static_out.copy_(step())

    return static_out, replay


def _capture_cuda(
    step: Callable[[], torch.Tensor], warm_up: Callable[[], None], device: torch.device
) -> tuple[torch.Tensor, Callable[[], None]]:
    """Warm up on a side stream, then capture ``step`` into a CUDA graph; returns its static output and replay.

    Capture and replay run with ``device`` as the current device (under torchrun a process may sample on
    ``cuda:<LOCAL_RANK>`` while its current device is still ``cuda:0``).
    """
    with torch.cuda.device(device):
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            warm_up()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = step()
        torch.cuda.synchronize(device)  # once per setup, never inside the sampling steps

    def replay() -> None:
        with torch.cuda.device(device):
            graph.replay()

    return static_out, replay


# ------------------------------------------------------------------------------------------------------ helpers


def _timestep_buffer_meta(timestep: torch.Tensor | int) -> tuple[tuple[int, ...], torch.dtype]:
    """Shape and dtype of the static timestep buffer: a Python int goes into the same (1,) int64 buffer as a
    scheduler timestep; a tensor is flattened to 1-d."""
    if isinstance(timestep, int):
        return (1,), torch.int64
    return tuple(timestep.reshape(-1).shape), timestep.dtype


def _dtype_and_device(module: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    raise ValueError("the UNet has no floating-point parameters")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class _Timer:
    fired: bool = False


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[_Timer]:
    """Raise :class:`CompileTimeout` inside the block after ``seconds``, and again every second until it exits.

    Uses ``SIGALRM``, so only on POSIX, in the main thread, and when no other interval timer is running; elsewhere
    the block just runs (the caller still measures its time). The repeat covers code that swallows the first
    exception.
    """
    timer = _Timer()
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0
    )
    if not usable:
        yield timer
        return

    def on_alarm(signum: int, frame: Any) -> None:
        timer.fired = True
        raise CompileTimeout(f"torch.compile ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds), 1.0)  # type: ignore[arg-type]
    try:
        yield timer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)
