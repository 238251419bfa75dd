"""What mixed precision buys: a plain PyTorch training step timed per precision x batch size x model size
(optionally under ``torch.compile``), with throughput, peak memory, speedup over ``32-true``, FLOPs and MFU.

Each cell: a fresh AdamW on the same initial weights, warm-up steps (compilation included) that are not timed, then
``repeats`` timed runs of ``steps`` steps each, the device synchronised around every timed run. See
:mod:`mmfuse.bench.precision` for what each precision does.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmfuse.bench.config import AmpSweepConfig, PrecisionPlan, get_precision
from mmfuse.bench.flops import PeakFlops, count_step_flops, mfu, peak_flops
from mmfuse.bench.precision import TrainStep, precision_mode, skip_reason, synthetic_batches
from mmfuse.bench.sizes import ModelSize, build_size_model, get_size
from mmfuse.bench.timing import PeakMemory, p10_p90, time_steps
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch

__all__ = [
    "CellResult",
    "PreparedModel",
    "add_speedups",
    "load_size",
    "prepare_model",
    "run_cell",
    "run_cells",
]

logger = logging.getLogger(__name__)


@dataclass
class CellResult:
    """One (size, precision, batch size, compile) cell.

    Attributes:
        size: model size name.
        precision: precision name.
        batch_size: batch size B.
        compile: whether the step ran under ``torch.compile``.
        status: ``ok``, ``skipped`` (``reason`` says why), ``oom`` or ``error`` (compile failures only).
        reason: why the cell did not run, or the error message.
        step_s_median: median over repeats of the mean seconds per step.
        step_s_p10: 10th percentile of the same.
        step_s_p90: 90th percentile of the same.
        step_times_s: mean seconds per step of every repeat.
        steps_per_repeat: timed steps in each repeat.
        warmup_s: wall time of the warm-up steps (includes compilation).
        samples_per_s: B / step_s_median.
        peak_memory_bytes: see ``memory_kind``.
        memory_kind: ``cuda_max_allocated`` (all allocations, weights included) or ``cpu_peak_rss_delta`` (growth
            of the peak resident set during the cell; weights built earlier are not in it).
        speedup_vs_32_true: step time of eager ``32-true`` (same size and B) over this cell's.
        speedup_vs_eager: for compiled cells, the eager cell of the same precision over this one.
        step_flops: FLOPs of forward + backward (counted by FlopCounterMode).
        achieved_tflops: step_flops / step_s_median, in TFLOP/s.
        peak_tflops: the peak MFU divides by, in TFLOP/s.
        peak_source: ``datasheet:<GPU>`` or ``measured:<n>x<n> matmul``.
        mfu: achieved over peak.
        steps_run: all steps run (warm-up included).
        nonfinite_losses: steps whose loss was inf or NaN.
        scaler_skipped_steps: ``16-mixed``: optimizer steps the GradScaler skipped.
        scaler_final_scale: ``16-mixed``: the loss scale at the end.
        final_loss: loss of the last step.
    """

    size: str
    precision: str
    batch_size: int
    compile: bool
    status: str = "ok"
    reason: str | None = None
    step_s_median: float | None = None
    step_s_p10: float | None = None
    step_s_p90: float | None = None
    step_times_s: list[float] = field(default_factory=list)
    steps_per_repeat: int | None = None
    warmup_s: float | None = None
    samples_per_s: float | None = None
    peak_memory_bytes: int | None = None
    memory_kind: str | None = None
    speedup_vs_32_true: float | None = None
    speedup_vs_eager: float | None = None
    step_flops: int | None = None
    achieved_tflops: float | None = None
    peak_tflops: float | None = None
    peak_source: str | None = None
    mfu: float | None = None
    steps_run: int | None = None
    nonfinite_losses: int | None = None
    scaler_skipped_steps: int | None = None
    scaler_final_scale: float | None = None
    final_loss: float | None = None


@dataclass
class PreparedModel:
    """A size's model on its device with its initial weights, so every cell starts from the same point.

    Attributes:
        size: the model size.
        model: the model (float32 after :meth:`reset`).
        init_state: a copy of the initial state dict, on the CPU.
        step_flops: FLOPs per training step by batch size, counted once.
    """

    size: ModelSize
    model: ImageTextModel
    init_state: dict[str, Tensor]
    step_flops: dict[int, int] = field(default_factory=dict)

    def reset(self) -> ImageTextModel:
        """The model back in float32 with its initial weights, no gradients, in train mode."""
        self.model.float().load_state_dict(self.init_state)
        self.model.zero_grad(set_to_none=True)
        return self.model.train()

    def flops(self, batch: Batch) -> int:
        """FLOPs of one float32 training step on ``batch`` (cached by batch size)."""
        if len(batch) not in self.step_flops:
            assert batch.labels is not None
            model = self.reset()
            self.step_flops[len(batch)] = count_step_flops(
                model, batch.images, batch.input_ids, batch.attention_mask, batch.labels
            )
        return self.step_flops[len(batch)]


def prepare_model(size: ModelSize, device: torch.device, seed: int = 0) -> PreparedModel:
    """Build ``size`` with seeded random weights on ``device`` and keep a copy of them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_size_model(size).to(device)
    # Kept on the CPU, so that GPU peak memory holds only what training needs.
    init_state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    return PreparedModel(size, model, init_state)


@functools.cache
def _peak(kind: str, device: str, side: int | None) -> PeakFlops:
    """Peak per (kind, device, matmul side), looked up or measured once per process."""
    return peak_flops(kind, torch.device(device), side=side)


def run_cell(
    prepared: PreparedModel, plan: PrecisionPlan, batches: list[Batch], cfg: AmpSweepConfig, use_compile: bool
) -> CellResult:
    """Time one cell; out-of-memory becomes status ``oom``, and a failed compilation status ``error``.

    Args:
        prepared: the size's model and initial weights.
        plan: the precision.
        batches: float32 batches on the device, all of batch size B.
        cfg: warm-up, steps, repeats, learning rate.
        use_compile: run under ``torch.compile``.
    """
    device = cfg.torch_device
    result = CellResult(prepared.size.name, plan.name, len(batches[0]), use_compile)
    reason = skip_reason(plan, device)
    if reason is not None:
        return dataclasses.replace(result, status="skipped", reason=reason)
    try:
        return _measure_cell(prepared, plan, batches, cfg, use_compile, result)
    except torch.OutOfMemoryError as err:
        result = dataclasses.replace(result, status="oom", reason=str(err).splitlines()[0])
    except Exception as err:  # only compile failures (toolchain, tracing) are recorded, not raised
        if not use_compile:
            raise
        logger.exception("compiled cell %s %s B=%d failed", result.size, plan.name, result.batch_size)
        result = dataclasses.replace(result, status="error", reason=f"{type(err).__name__}: {err}".splitlines()[0])
    _release(prepared, device)  # after the except blocks: the exception no longer pins tensors
    return result


def _measure_cell(
    prepared: PreparedModel,
    plan: PrecisionPlan,
    batches: list[Batch],
    cfg: AmpSweepConfig,
    use_compile: bool,
    result: CellResult,
) -> CellResult:
    device = cfg.torch_device
    step_flops = prepared.flops(batches[0])
    model = prepared.reset().to(plan.param_dtype)
    batches = [Batch(b.images.to(plan.param_dtype), b.input_ids, b.attention_mask, b.labels) for b in batches]
    memory = PeakMemory(device)
    memory.start()
    if use_compile:
        torch.compiler.reset()
    with precision_mode(plan):
        step = TrainStep(model, plan, device, lr=cfg.lr, use_compile=use_compile)
        timing = time_steps(step, batches, device, cfg.warmup, cfg.steps, cfg.repeats, cfg.cell_seconds)
    skipped, final_scale = step.scaler_stats()
    median = statistics.median(timing.seconds)
    p10, p90 = p10_p90(timing.seconds)
    peak = _peak(plan.peak_kind, str(device), cfg.peak_matmul_side)
    return dataclasses.replace(
        result,
        step_s_median=median,
        step_s_p10=p10,
        step_s_p90=p90,
        step_times_s=timing.seconds,
        steps_per_repeat=timing.steps_per_repeat,
        warmup_s=timing.warmup_s,
        samples_per_s=result.batch_size / median,
        peak_memory_bytes=memory.peak_bytes(),
        memory_kind=memory.kind,
        step_flops=step_flops,
        achieved_tflops=step_flops / median / 1e12,
        peak_tflops=peak.flops_per_s / 1e12,
        peak_source=peak.source,
        mfu=mfu(step_flops, median, peak.flops_per_s),
        steps_run=int(timing.losses.numel()),
        nonfinite_losses=int((~torch.isfinite(timing.losses)).sum()),
        scaler_skipped_steps=skipped,
        scaler_final_scale=final_scale,
        final_loss=float(timing.losses[-1]),
    )


def _release(prepared: PreparedModel, device: torch.device) -> None:
    """Drop what a failed cell left behind (gradients, compiled graphs, cached blocks)."""
    prepared.model.zero_grad(set_to_none=True)
    torch.compiler.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_cells(
    prepared: PreparedModel,
    cfg: AmpSweepConfig,
    use_compile: bool,
    deadline: float | None = None,
    on_cell: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """All cells of one size: every batch size x precision (``cfg.compile_precisions`` when compiling).

    Args:
        prepared: the size's model.
        cfg: the sweep.
        use_compile: the compiled cells instead of the eager ones.
        deadline: ``time.perf_counter()`` value after which cells are skipped with a "time budget" reason.
        on_cell: called with each result as soon as it is known (e.g. to save partial results).
    """
    precisions = cfg.compile_precisions if use_compile else cfg.precisions
    batch_sizes = (cfg.compile_batch_sizes or cfg.batch_sizes) if use_compile else cfg.batch_sizes
    results = []
    for batch_size in batch_sizes:
        batches = synthetic_batches(prepared.size, batch_size, seed=cfg.seed, device=cfg.torch_device)
        for name in precisions:
            cell = CellResult(prepared.size.name, name, batch_size, use_compile, status="skipped")
            if deadline is not None and time.perf_counter() > deadline:
                cell.reason = f"time budget of {cfg.time_budget_s:g} s used up before this cell"
            else:
                cell = run_cell(prepared, get_precision(name), batches, cfg, use_compile)
            _log_cell(cell)
            results.append(cell)
            if on_cell is not None:
                on_cell(cell)
    return results


def _log_cell(cell: CellResult) -> None:
    label = f"{cell.size} {cell.precision}{'+compile' if cell.compile else ''} B={cell.batch_size}"
    if cell.status != "ok" or cell.step_s_median is None:
        logger.info("%s: %s (%s)", label, cell.status, cell.reason)
        return
    logger.info(
        "%s: %.1f ms/step, %.1f samples/s, %.2f TFLOP/s, MFU %.1f%%, warm-up %.1f s",
        label,
        cell.step_s_median * 1e3,
        cell.samples_per_s,
        cell.achieved_tflops,
        100 * (cell.mfu or 0.0),
        cell.warmup_s,
    )


def add_speedups(cells: list[CellResult]) -> list[CellResult]:
    """Fill ``speedup_vs_32_true`` (eager ``32-true`` of the same size and B as baseline) and, for compiled cells,
    ``speedup_vs_eager`` (the eager cell of the same precision); in place, and returned."""
    eager = {(c.size, c.precision, c.batch_size): c for c in cells if not c.compile and c.step_s_median}
    for cell in cells:
        if cell.step_s_median is None:
            continue
        base = eager.get((cell.size, "32-true", cell.batch_size))
        same = eager.get((cell.size, cell.precision, cell.batch_size))
        cell.speedup_vs_32_true = None if base is None else base.step_s_median / cell.step_s_median  # type: ignore[operator]
        if cell.compile and same is not None:
            cell.speedup_vs_eager = same.step_s_median / cell.step_s_median  # type: ignore[operator]
    return cells


def load_size(name: str, cfg: AmpSweepConfig) -> ModelSize:
    """The size ``name`` (``small`` from ``cfg.experiment`` when set)."""
    return get_size(name, experiment=cfg.experiment)
