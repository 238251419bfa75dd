"""Benchmarks of training speed: mixed precision (``mmfuse bench amp``), FLOPs and MFU, loss parity across
precisions and the per-step cost of Lightning. Only :mod:`mmfuse.bench.overhead` uses Lightning, and it imports it
inside its functions, so this package imports without Lightning (and without ``datasets``); Accelerate, optional,
is imported only when :mod:`mmfuse.bench.peer_loops` builds its loop. The names below are
imported on first use, so ``mmfuse bench --help`` reads :mod:`mmfuse.bench.config` without importing any model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse._lazy import lazy_exports

if TYPE_CHECKING:
    from mmfuse.bench.amp import CellResult, PreparedModel, add_speedups, prepare_model, run_cell, run_cells
    from mmfuse.bench.config import PRECISIONS, SIZE_NAMES, AmpSweepConfig, PrecisionPlan, get_precision
    from mmfuse.bench.flops import PeakFlops, count_flops, count_step_flops, datasheet_peak, mfu, peak_flops
    from mmfuse.bench.overhead import OVERHEAD_TARGET, OverheadResult, measure_overhead
    from mmfuse.bench.parity import ParityResult, run_parity
    from mmfuse.bench.precision import TrainStep, skip_reason, synthetic_batches
    from mmfuse.bench.report import load_results, render_report
    from mmfuse.bench.sizes import ModelSize, build_size_model, get_size
    from mmfuse.bench.suite import run_amp_benchmark

# Module -> the public names it defines, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "mmfuse.bench.amp": ("CellResult", "PreparedModel", "add_speedups", "prepare_model", "run_cell", "run_cells"),
    "mmfuse.bench.config": ("PRECISIONS", "SIZE_NAMES", "AmpSweepConfig", "PrecisionPlan", "get_precision"),
    "mmfuse.bench.flops": ("PeakFlops", "count_flops", "count_step_flops", "datasheet_peak", "mfu", "peak_flops"),
    "mmfuse.bench.overhead": ("OVERHEAD_TARGET", "OverheadResult", "measure_overhead"),
    "mmfuse.bench.parity": ("ParityResult", "run_parity"),
    "mmfuse.bench.precision": ("TrainStep", "skip_reason", "synthetic_batches"),
    "mmfuse.bench.report": ("load_results", "render_report"),
    "mmfuse.bench.sizes": ("ModelSize", "build_size_model", "get_size"),
    "mmfuse.bench.suite": ("run_amp_benchmark",),
}

__all__ = [
    "OVERHEAD_TARGET",
    "PRECISIONS",
    "SIZE_NAMES",
    "AmpSweepConfig",
    "CellResult",
    "ModelSize",
    "OverheadResult",
    "ParityResult",
    "PeakFlops",
    "PrecisionPlan",
    "PreparedModel",
    "TrainStep",
    "add_speedups",
    "build_size_model",
    "count_flops",
    "count_step_flops",
    "datasheet_peak",
    "get_precision",
    "get_size",
    "load_results",
    "measure_overhead",
    "mfu",
    "peak_flops",
    "prepare_model",
    "render_report",
    "run_amp_benchmark",
    "run_cell",
    "run_cells",
    "run_parity",
    "skip_reason",
    "synthetic_batches",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
