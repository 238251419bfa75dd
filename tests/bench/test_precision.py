"""Precision plans, skip reasons, TF32 switches, synthetic batches and the plain training step."""

from __future__ import annotations

import pytest
import torch

from mmfuse.bench.amp import PreparedModel
from mmfuse.bench.config import PRECISIONS, get_precision
from mmfuse.bench.precision import TrainStep, precision_mode, skip_reason, synthetic_batches
from mmfuse.errors import ConfigError

CPU = torch.device("cpu")


def test_cpu_skips_fp16_and_tf32_with_reasons() -> None:
    reason = skip_reason(PRECISIONS["16-mixed"], CPU)
    assert reason is not None and "fp16 autocast on CPU is not a training precision" in reason and "bf16" in reason
    assert "TF32" in (skip_reason(PRECISIONS["tf32"], CPU) or "")
    assert all(skip_reason(PRECISIONS[name], CPU) is None for name in ("32-true", "bf16-mixed", "bf16-true"))


def test_unknown_precision_is_named() -> None:
    with pytest.raises(ConfigError, match="'fp8'"):
        get_precision("fp8")


def test_precision_mode_sets_and_restores_tf32() -> None:
    before = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    with precision_mode(PRECISIONS["tf32"]):
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    with precision_mode(PRECISIONS["32-true"]):
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == before


def test_synthetic_batches_are_seeded_and_well_formed(tiny: PreparedModel) -> None:
    first, again = synthetic_batches(tiny.size, 3, seed=5), synthetic_batches(tiny.size, 3, seed=5)
    torch.testing.assert_close(first[1].images, again[1].images)
    batch, spec = first[0], tiny.size.spec
    assert batch.images.shape == (3, 3, spec.image_size, spec.image_size) and 0 <= batch.images.min() <= 1
    assert batch.input_ids.shape == batch.attention_mask.shape == (3, tiny.size.seq_len)
    assert batch.attention_mask.dtype == torch.bool and batch.attention_mask[:, 0].all()  # >= 1 real token
    assert (batch.input_ids[~batch.attention_mask] == spec.pad_token_id).all()
    assert batch.labels is not None and int(batch.labels.max()) < spec.num_classes


@pytest.mark.parametrize("name", ["32-true", "bf16-mixed", "bf16-true"])
def test_train_step_changes_weights_and_returns_a_float_loss(tiny: PreparedModel, name: str) -> None:
    plan = PRECISIONS[name]
    model = tiny.reset().to(plan.param_dtype)
    batch = synthetic_batches(tiny.size, 2)[0]
    batch.images = batch.images.to(plan.param_dtype)
    before = [p.detach().clone() for p in model.head.parameters()]
    step = TrainStep(model, plan, CPU, lr=1e-2)
    loss = step(batch)
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    assert step.scaler_stats() == (None, None)
    assert all(p.dtype == plan.param_dtype for p in model.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.head.parameters()))
    tiny.reset()
