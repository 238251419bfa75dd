"""FLOP counts against hand counts, the datasheet table and MFU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmfuse.bench.amp import PreparedModel
from mmfuse.bench.flops import count_flops, count_step_flops, datasheet_peak, measure_matmul_flops, mfu
from mmfuse.bench.precision import synthetic_batches


@pytest.mark.parametrize("input_grad", [False, True])
def test_linear_forward_backward_matches_hand_count(input_grad: bool) -> None:
    batch, d_in, d_out = 8, 16, 4
    layer = nn.Linear(d_in, d_out)
    x = torch.randn(batch, d_in, requires_grad=input_grad)
    flops = count_flops(lambda: layer(x).sum().backward())
    one_matmul = 2 * batch * d_in * d_out  # the bias add is elementwise and counts zero
    # forward, weight gradient, and the input gradient only when the input needs one
    assert flops == one_matmul * (3 if input_grad else 2)


def test_matmul_and_attention_match_hand_counts() -> None:
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    assert count_flops(lambda: a @ b) == 2 * 5 * 7 * 3
    batch, heads, length, head_dim = 2, 3, 8, 4
    q = torch.randn(batch, heads, length, head_dim)
    # CPU SDPA is a fused kernel FlopCounterMode does not know: QK^T and AV, 2 * B * nh * L * L * hd each.
    expected = 2 * (2 * batch * heads * length * length * head_dim)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == expected


def test_step_flops_are_linear_in_the_batch(tiny: PreparedModel) -> None:
    counts = []
    for batch_size in (2, 4):
        batch = synthetic_batches(tiny.size, batch_size, count=1)[0]
        assert batch.labels is not None
        model = tiny.reset()
        counts.append(count_step_flops(model, batch.images, batch.input_ids, batch.attention_mask, batch.labels))
        assert all(p.grad is None for p in model.parameters())
    assert counts[0] > 0 and counts[1] == 2 * counts[0]


def test_datasheet_lookup() -> None:
    h200 = datasheet_peak("NVIDIA H200", "bf16")
    assert h200 is not None and h200.flops_per_s == 989.5e12 and h200.source == "datasheet:H100/H200 SXM"
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "tf32").flops_per_s == 494.5e12  # type: ignore[union-attr]
    assert datasheet_peak("NVIDIA H100 PCIe", "bf16").flops_per_s == 756e12  # type: ignore[union-attr]
    assert datasheet_peak("NVIDIA H200 NVL", "fp16").flops_per_s == 835.5e12  # type: ignore[union-attr]
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "fp32").flops_per_s == 19.5e12  # type: ignore[union-attr]
    assert datasheet_peak("NVIDIA A10", "bf16").flops_per_s == 125e12  # type: ignore[union-attr]
    assert datasheet_peak("NVIDIA A10G", "bf16") is None  # no NVIDIA datasheet: measured instead
    assert datasheet_peak("Some Future GPU", "bf16") is None


def test_measured_peak_and_mfu() -> None:
    peak = measure_matmul_flops("fp32", torch.device("cpu"), side=64, repeats=2)
    assert peak.flops_per_s > 0 and peak.source == "measured:64x64 matmul" and peak.kind == "fp32"
    assert mfu(2e12, 0.5, 8e12) == pytest.approx(0.5)
