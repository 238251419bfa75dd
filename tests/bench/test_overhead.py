"""The Lightning-vs-peers comparison runs its loops in one process and reports ratios (never judged)."""

from __future__ import annotations

import math

import pytest
import torch

from mmfuse.bench.overhead import measure_overhead
from mmfuse.bench.sizes import get_size


def test_measure_overhead_reports_all_loops() -> None:
    result = measure_overhead(
        get_size("tiny"), torch.device("cpu"), batch_size=2, steps=5, rounds=1, warmup=3, accelerate=False
    )
    loops = {"lightning", "plain (lightning)", "lightning_bare", "plain (lightning_bare)"}
    assert set(result.step_s) == loops and result.clock == "process_cpu_time"
    assert all(seconds > 0 for seconds in result.step_s.values()) and set(result.extra_s) == {
        "lightning",
        "lightning_bare",
    }
    assert len(result.per_round) == 1 and set(result.per_round[0]) == loops
    assert result.ratio is not None and math.isfinite(result.ratio) and result.ratio > 0
    assert result.ratio_bare is not None and result.metric_update_s is not None and result.meets_target is not None
    assert result.ratio_accelerate is None and "accelerate=False" in result.skipped["accelerate"]
    assert set(result.first_step_s) == set(result.first_step_wall_s) == {"lightning", "lightning_bare", "plain"}
    assert set(result.ratio_to_fastest) == {"lightning", "plain"} and min(result.ratio_to_fastest.values()) == 1.0
    assert set(result.system_s) == {"lightning", "lightning_bare", "plain"}
    assert set(result.ratio_p10_p90) == {"lightning", "lightning_bare"}
    low, high = result.ratio_p10_p90["lightning"]
    assert low <= result.ratio <= high  # the median lies inside its own spread


def test_accelerate_is_a_third_peer() -> None:
    pytest.importorskip("accelerate", reason="the Accelerate peer needs `pip install 'mmfuse[bench]'`")
    result = measure_overhead(
        get_size("tiny"), torch.device("cpu"), batch_size=2, steps=5, rounds=1, warmup=3, bare=False
    )
    loops = {"lightning", "plain (lightning)", "accelerate (lightning)"}
    assert set(result.per_round[0]) == loops and set(result.step_s) == loops | {"plain", "accelerate"}
    assert result.ratio_accelerate is not None and math.isfinite(result.ratio_accelerate)
    assert result.ratio_bare is None and set(result.skipped) == {"lightning_bare"}
    assert set(result.extra_s) == {"lightning", "accelerate"}
    assert set(result.ratio_to_fastest) == {"lightning", "plain", "accelerate"}
    assert min(result.ratio_to_fastest.values()) == 1.0
    assert set(result.first_step_s) == {"lightning", "plain", "accelerate"}
    assert all(seconds > 0 for seconds in result.first_step_wall_s.values())
    assert set(result.system_s) == {"lightning", "plain", "accelerate"}
    assert result.ratio_accelerate is not None
    low, high = result.ratio_p10_p90["accelerate"]
    assert low <= result.ratio_accelerate <= high
