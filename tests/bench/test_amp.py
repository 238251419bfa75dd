"""The sweep's cells on CPU: what each records, skips, out-of-memory, speedups and bad values."""

from __future__ import annotations

import pytest
import torch

import mmfuse.bench.amp as amp
from mmfuse.bench.amp import CellResult, PreparedModel, add_speedups, run_cells
from mmfuse.bench.config import AmpSweepConfig
from mmfuse.errors import ConfigError
from tests.bench.conftest import fast_config


def test_tiny_cells_record_time_memory_flops_and_mfu(tiny: PreparedModel) -> None:
    cfg = fast_config(precisions=("32-true", "bf16-mixed", "16-mixed"))
    seen: list[CellResult] = []
    cells = add_speedups(run_cells(tiny, cfg, use_compile=False, on_cell=seen.append))
    assert seen == cells and [c.status for c in cells] == ["ok", "ok", "skipped"]
    for cell in cells[:2]:
        assert cell.step_s_median is not None and cell.step_s_p10 <= cell.step_s_median <= cell.step_s_p90  # type: ignore[operator]
        assert cell.samples_per_s == pytest.approx(2 / cell.step_s_median)
        assert cell.step_flops == tiny.step_flops[2] and cell.step_flops > 0
        assert cell.mfu is not None and cell.mfu > 0 and cell.peak_source.startswith("measured:")  # type: ignore[union-attr]
        assert cell.memory_kind in ("cpu_peak_rss_delta", "unavailable") and cell.steps_run == 1 + 2
        assert cell.nonfinite_losses == 0 and cell.scaler_skipped_steps is None
    assert cells[0].speedup_vs_32_true == 1.0 and cells[1].speedup_vs_32_true is not None
    assert "fp16 autocast on CPU is not a training precision" in (cells[2].reason or "")


def test_out_of_memory_is_recorded_and_the_sweep_goes_on(tiny: PreparedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> CellResult:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB\nmore detail")

    monkeypatch.setattr(amp, "_measure_cell", out_of_memory)
    cells = run_cells(tiny, fast_config(precisions=("32-true", "bf16-mixed")), use_compile=False)
    assert [(c.status, c.reason) for c in cells] == [("oom", "CUDA out of memory. Tried to allocate 80.00 GiB")] * 2


def test_cells_after_the_deadline_are_skipped(tiny: PreparedModel) -> None:
    cells = run_cells(tiny, fast_config(precisions=("32-true",), time_budget_s=0.0), use_compile=False, deadline=0.0)
    assert cells[0].status == "skipped" and "time budget" in (cells[0].reason or "")


def test_speedups_use_eager_32_true_and_the_eager_cell() -> None:
    def cell(precision: str, seconds: float, compiled: bool = False) -> CellResult:
        return CellResult("tiny", precision, 8, compiled, step_s_median=seconds)

    cells = add_speedups([cell("32-true", 1.0), cell("bf16-mixed", 0.5), cell("bf16-mixed", 0.25, compiled=True)])
    assert [c.speedup_vs_32_true for c in cells] == [1.0, 2.0, 4.0]
    assert cells[2].speedup_vs_eager == 2.0 and cells[1].speedup_vs_eager is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"sizes": ("huge",)}, "'huge'"),
        ({"precisions": ("fp8",)}, "'fp8'"),
        ({"compile_precisions": ("int4",)}, "'int4'"),
        ({"device": "tpu"}, "'tpu'"),
        ({"batch_sizes": (0,)}, "batch size must be >= 1, got 0"),
        ({"repeats": 0}, "repeats must be >= 1, got 0"),
        ({"overhead_size": "medium"}, "'medium'"),
    ],
)
def test_bad_values_are_config_errors_naming_them(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        AmpSweepConfig(**overrides)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        AmpSweepConfig(device="cuda")
