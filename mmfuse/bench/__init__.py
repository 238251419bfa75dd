"""Benchmarks of training speed: mixed precision (``mmfuse bench amp``), FLOPs and MFU, loss parity across
precisions and the per-step cost of Lightning. Only :mod:`mmfuse.bench.overhead` uses Lightning, and it imports it
inside its functions, so this package imports without Lightning (and without ``datasets``)."""

from mmfuse.bench.amp import AmpSweepConfig, CellResult, PreparedModel, add_speedups, prepare_model, run_cell, run_cells
from mmfuse.bench.flops import PeakFlops, count_flops, count_step_flops, datasheet_peak, mfu, peak_flops
from mmfuse.bench.overhead import OVERHEAD_TARGET, OverheadResult, measure_overhead
from mmfuse.bench.parity import ParityResult, run_parity
from mmfuse.bench.precision import PRECISIONS, PrecisionPlan, TrainStep, get_precision, skip_reason, synthetic_batches
from mmfuse.bench.report import load_results, render_report
from mmfuse.bench.sizes import SIZE_NAMES, ModelSize, build_size_model, get_size
from mmfuse.bench.suite import run_amp_benchmark

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
