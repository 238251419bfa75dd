"""The Lightning-vs-plain comparison runs its three loops in one process and reports ratios (never judged)."""

from __future__ import annotations

import math

import torch

from mmfuse.bench.overhead import measure_overhead, plain_optimizer
from mmfuse.bench.sizes import build_size_model, get_size


def test_plain_optimizer_mirrors_the_lightning_module() -> None:
    size = get_size("tiny")
    model = build_size_model(size)
    optimizer, scheduler = plain_optimizer(model, size.optim, total_steps=20)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == size.optim.weight_decay and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert scheduler.get_last_lr()[0] == 0.0  # warm-up starts at zero, as in FusionLitModule


def test_measure_overhead_reports_all_loops() -> None:
    result = measure_overhead(get_size("tiny"), torch.device("cpu"), batch_size=2, steps=5, rounds=1, warmup=3)
    loops = {"lightning", "plain (lightning)", "lightning_bare", "plain (lightning_bare)"}
    assert set(result.step_s) == loops and result.clock == "process_cpu_time"
    assert all(seconds > 0 for seconds in result.step_s.values()) and set(result.extra_s) == {
        "lightning",
        "lightning_bare",
    }
    assert len(result.per_round) == 1 and set(result.per_round[0]) == loops
    assert result.ratio is not None and math.isfinite(result.ratio) and result.ratio > 0
    assert result.ratio_bare is not None and result.metric_update_s is not None and result.meets_target is not None
