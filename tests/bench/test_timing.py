"""Step timing (warm-up excluded, steps per repeat) and peak memory on CPU."""

from __future__ import annotations

import torch

from mmfuse.bench.timing import PeakMemory, time_steps
from mmfuse.types import Batch

CPU = torch.device("cpu")


def _batches() -> list[Batch]:
    return [Batch(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2, dtype=torch.bool))]


def test_time_steps_runs_warmup_plus_repeats_times_steps() -> None:
    calls: list[int] = []

    def step(batch: Batch) -> torch.Tensor:
        calls.append(1)
        return torch.tensor(float(len(calls)))

    timing = time_steps(step, _batches(), CPU, warmup=2, steps=3, repeats=4)
    assert len(calls) == 2 + 3 * 4 and timing.steps_per_repeat == 3
    assert len(timing.seconds) == 4 and all(s >= 0 for s in timing.seconds)
    assert timing.losses.tolist() == [float(i) for i in range(1, 15)] and timing.warmup_s >= 0


def test_cell_seconds_shrinks_steps_per_repeat_to_at_least_one() -> None:
    def step(batch: Batch) -> torch.Tensor:
        return torch.zeros(())

    timing = time_steps(step, _batches(), CPU, warmup=1, steps=50, repeats=2, cell_seconds=1e-9)
    assert timing.steps_per_repeat == 1 and timing.losses.numel() == 1 + 2


def test_cpu_peak_memory_sees_a_big_allocation() -> None:
    memory = PeakMemory(CPU)
    memory.start()
    block = torch.ones(64, 1024, 1024, dtype=torch.uint8)  # 64 MiB, touched
    peak = memory.peak_bytes()
    del block
    assert memory.kind in ("cpu_peak_rss_delta", "unavailable")
    if memory.kind == "cpu_peak_rss_delta":
        assert peak is not None and peak >= 60 * 2**20
