"""Fixtures of the benchmark tests: the tiny size built once, one thread, the smallest batches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from mmfuse.bench.amp import PreparedModel, prepare_model
from mmfuse.bench.config import AmpSweepConfig
from mmfuse.bench.sizes import get_size

# Few and small steps: the tests check what is recorded, never how fast it was.
FAST = {"warmup": 1, "steps": 1, "repeats": 2, "threads": 1, "peak_matmul_side": 64}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: other processes on a small machine make two-thread steps slow and erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny() -> PreparedModel:
    """The tiny size on the CPU with its initial weights (cells reset it before use)."""
    return prepare_model(get_size("tiny"), torch.device("cpu"))


def fast_config(**overrides: object) -> AmpSweepConfig:
    """A tiny CPU sweep of one batch size of 2 with the fewest steps."""
    values: dict[str, object] = {"sizes": ("tiny",), "batch_sizes": (2,), "device": "cpu", **FAST}
    return AmpSweepConfig(**(values | overrides))  # type: ignore[arg-type]
