"""Loss parity: 32-true against itself is exact, bf16 is close, fp16 on CPU is skipped with its reason."""

from __future__ import annotations

import math

from mmfuse.bench.amp import PreparedModel
from mmfuse.bench.parity import run_parity


def test_parity_gaps(tiny: PreparedModel) -> None:
    results = run_parity(tiny, ("32-true", "bf16-mixed", "16-mixed"), steps=3, batch_size=2, lr=1e-3, num_batches=2)
    same, bf16, fp16 = results
    assert same.status == "ok" and same.losses == same.reference_losses and same.max_step_gap == 0.0
    assert bf16.status == "ok" and len(bf16.losses) == 3 and bf16.nonfinite_losses == 0
    assert bf16.final_loss_gap is not None and math.isfinite(bf16.final_loss_gap) and bf16.max_step_gap < 0.5  # type: ignore[operator]
    assert fp16.status == "skipped" and "fp16 autocast on CPU" in (fp16.reason or "") and fp16.losses == []
