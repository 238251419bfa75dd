"""The loops Lightning is timed against: the module's optimizer settings, and the same training either way."""

from __future__ import annotations

import copy

import pytest
import torch

from mmfuse.bench.peer_loops import AccelerateLoop, PlainLoop, accelerate_missing, plain_optimizer
from mmfuse.bench.precision import synthetic_batches
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


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_accelerate_loop_trains_like_the_plain_loop(precision: str) -> None:
    if accelerate_missing():
        pytest.skip(f"the Accelerate peer needs `pip install 'mmfuse[bench]'`: {accelerate_missing()}")
    size, cpu = get_size("tiny"), torch.device("cpu")
    torch.manual_seed(0)
    model = build_size_model(size)
    batches = synthetic_batches(size, batch_size=2, count=3)
    plain = PlainLoop(copy.deepcopy(model), batches, size.optim, precision, cpu)
    accelerate = AccelerateLoop(copy.deepcopy(model), batches, size.optim, precision, cpu)
    for index in range(3):
        for loop in (plain, accelerate):
            torch.manual_seed(index)  # the same dropout masks in both
            assert loop.step(index) > 0
    assert plain.first_step is not None and accelerate.first_step is not None
    assert accelerate.first_step[1] >= accelerate.setup[1] > 0
    # Bit for bit, in bf16 too: Accelerate's loop adds bookkeeping, no arithmetic; the timings compare like with like.
    for (name, ours), theirs in zip(plain.model.named_parameters(), accelerate.model.parameters()):
        assert torch.equal(ours, theirs), name
