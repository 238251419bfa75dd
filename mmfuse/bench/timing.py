"""Timing of training steps (warm-up excluded, device synchronised around every timed run) and peak memory."""

from __future__ import annotations

import ctypes
import gc
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmfuse.types import Batch

__all__ = ["PeakMemory", "StepTimes", "p10_p90", "release_memory", "synchronize", "time_steps"]


@dataclass
class StepTimes:
    """Timings of one cell.

    Attributes:
        seconds: mean seconds per step of each timed repeat.
        steps_per_repeat: timed steps in every repeat.
        warmup_s: wall time of all warm-up steps (compilation included).
        losses: (S,) float32 CPU tensor, the loss of every step run (warm-up included).
    """

    seconds: list[float]
    steps_per_repeat: int
    warmup_s: float
    losses: Tensor


def time_steps(
    step: Callable[[Batch], Tensor],
    batches: list[Batch],
    device: torch.device,
    warmup: int,
    steps: int,
    repeats: int,
    cell_seconds: float | None = None,
) -> StepTimes:
    """Run ``warmup`` untimed steps, then ``repeats`` timed runs of ``steps`` steps, cycling through ``batches``.

    With ``cell_seconds`` the steps per repeat shrink (to no fewer than 1) so that the timed runs take about that
    long, judged by the last warm-up step.
    """
    losses: list[Tensor] = []
    batch_iter = itertools.cycle(batches)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup - 1):
        losses.append(step(next(batch_iter)))
    synchronize(device)
    probe_start = time.perf_counter()
    losses.append(step(next(batch_iter)))
    synchronize(device)
    probe_s = time.perf_counter() - probe_start
    warmup_s = time.perf_counter() - start
    per_repeat = steps
    if cell_seconds is not None:
        per_repeat = max(1, min(steps, int(cell_seconds / repeats / max(probe_s, 1e-9))))
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(per_repeat):
            losses.append(step(next(batch_iter)))
        synchronize(device)
        seconds.append((time.perf_counter() - start) / per_repeat)
    return StepTimes(seconds, per_repeat, warmup_s, torch.stack(losses).float().cpu())


class PeakMemory:
    """Peak memory of a block of work: ``torch.cuda.max_memory_allocated`` on CUDA (everything allocated, weights
    included); on CPU the growth of the process's peak resident set size (``VmHWM`` reset through
    ``/proc/self/clear_refs``), after returning freed heap memory to the system.

    Args:
        device: the device whose memory is watched.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss_delta"
        self._rss_start = 0

    def start(self) -> None:
        """Reset the peak counter."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _trim_heap()
        if not _reset_peak_rss():
            self.kind = "unavailable"
        self._rss_start = _proc_status_bytes("VmRSS") or 0

    def peak_bytes(self) -> int | None:
        """Peak bytes since :meth:`start` (see the class docstring); None where the OS cannot tell."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        peak = _proc_status_bytes("VmHWM")
        return None if self.kind == "unavailable" or peak is None else max(0, peak - self._rss_start)


def p10_p90(values: list[float]) -> tuple[float, float]:
    """The 10th and 90th percentiles of ``values`` (inclusive method); the one value twice when there is one."""
    if len(values) < 2:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=10, method="inclusive")
    return cuts[0], cuts[-1]


def release_memory() -> None:
    """Collect garbage (reference cycles too) and hand freed heap pages back to the OS, so that one model's freed
    memory does not add to the next one's resident set (glibc keeps large freed blocks otherwise)."""
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc only), so the next cell's RSS growth is its own."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: the RSS delta may then undercount memory reused from the heap
        return
    libc.malloc_trim(0)


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def _proc_status_bytes(key: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024  # reported in kB
    return None


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device``; nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
