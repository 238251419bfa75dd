"""The whole AMP benchmark in one call: eager cells of every size, loss parity, Lightning overhead, then the compiled
cells (slowest to start, so they come last), saving ``amp.json`` after every result and the tables and plots at
the end (see :mod:`mmfuse.bench.report`). Each part is a :mod:`mmfuse.progress` stage (reported by ``mmfuse bench``,
silent otherwise)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmfuse.bench.amp import (
    CellResult,
    PreparedModel,
    add_speedups,
    load_size,
    prepare_model,
    run_cells,
)
from mmfuse.bench.config import AmpSweepConfig
from mmfuse.bench.overhead import OverheadResult, measure_overhead
from mmfuse.bench.parity import ParityResult, run_parity
from mmfuse.bench.report import collect_environment, render_report, write_json
from mmfuse.progress import Stage, stage, track

__all__ = ["run_amp_benchmark"]

logger = logging.getLogger(__name__)
_PRECISION_NOTES = {
    "32-true": "float32, TF32 off for matmuls and cuDNN convolutions",
    "tf32": "float32 storage, TF32 matmuls and convolutions (set_float32_matmul_precision('high'))",
    "bf16-mixed": "float32 weights, forward under torch.autocast(bfloat16)",
    "16-mixed": "float32 weights, forward under torch.autocast(float16), GradScaler",
    "bf16-true": "model, images and AdamW state in bfloat16",
}


@dataclass
class _Run:
    """What the benchmark has measured so far, and where it goes."""

    cfg: AmpSweepConfig
    out: Path
    start: float
    environment: dict[str, Any]
    sizes: dict[str, Any] = field(default_factory=dict)
    cells: list[CellResult] = field(default_factory=list)
    parity: list[ParityResult] = field(default_factory=list)
    overhead: dict[str, Any] | None = None
    finished: bool = False

    @property
    def deadline(self) -> float | None:
        return None if self.cfg.time_budget_s is None else self.start + self.cfg.time_budget_s

    def payload(self) -> dict[str, Any]:
        add_speedups(self.cells)
        settings = dataclasses.asdict(self.cfg) | {"precision_notes": _PRECISION_NOTES}
        return {
            "schema_version": 1,
            "environment": self.environment,
            "settings": settings,
            "sizes": self.sizes,
            "cells": [dataclasses.asdict(cell) for cell in self.cells],
            "parity": [dataclasses.asdict(item) for item in self.parity],
            "overhead": self.overhead,
            "elapsed_s": time.perf_counter() - self.start,
            "finished": self.finished,
        }

    def save(self) -> None:
        write_json(self.out, self.payload())

    def add_cell(self, cell: CellResult) -> None:
        self.cells.append(cell)
        self.save()

    def cell_saver(self, progress: Stage) -> Callable[[CellResult], None]:
        """``on_cell`` of :func:`run_cells`: keep and save the cell, and count it as done in ``progress``."""

        def on_cell(cell: CellResult) -> None:
            self.add_cell(cell)
            compiled = "+compile" if cell.compile else ""
            progress.advance(detail=f"{cell.size} {cell.precision}{compiled} B={cell.batch_size}")

        return on_cell


def _describe(prepared: PreparedModel) -> dict[str, Any]:
    size = prepared.size
    return {
        "description": size.description,
        "params": sum(p.numel() for p in prepared.model.parameters()),
        "seq_len": size.seq_len,
        "image_size": size.spec.image_size,
        "num_classes": size.spec.num_classes,
        "vocab_size": size.spec.vocab_size,
        "model": dataclasses.asdict(size.model),
    }


def _run_overhead(run: _Run) -> None:
    cfg = run.cfg
    assert cfg.overhead_size is not None
    if run.deadline is not None and time.perf_counter() > run.deadline:
        run.overhead = {"status": "skipped", "reason": f"time budget of {cfg.time_budget_s:g} s used up"}
        return
    logger.info("overhead: Lightning vs plain and Accelerate loops, size %s on %s", cfg.overhead_size, cfg.device)
    result: OverheadResult = measure_overhead(
        load_size(cfg.overhead_size, cfg),
        cfg.torch_device,
        batch_size=cfg.overhead_batch_size,
        steps=cfg.overhead_steps,
        rounds=cfg.overhead_rounds,
        precision=cfg.overhead_precision,
        seed=cfg.seed,
    )
    run.overhead = {"status": "ok", **dataclasses.asdict(result)}
    logger.info(
        "overhead: lightning / plain = %.3f (bare Lightning %.3f), accelerate / plain = %s",
        result.ratio,
        result.ratio_bare,
        "not run" if result.ratio_accelerate is None else f"{result.ratio_accelerate:.3f}",
    )


def run_amp_benchmark(cfg: AmpSweepConfig, out: str | Path, plots: bool = True) -> dict[str, Any]:
    """Run everything ``cfg`` asks for and write the results directory ``out``; returns the ``amp.json`` content.

    Order: eager cells per size, parity per size (``cfg.parity_steps > 0``), Lightning overhead
    (``cfg.overhead_size``), compiled cells (``cfg.compile_precisions``). Cells that would start after
    ``cfg.time_budget_s`` are recorded as skipped.
    """
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run_all(cfg, Path(out), plots)
    finally:
        torch.set_num_threads(threads)


def _run_all(cfg: AmpSweepConfig, out: Path, plots: bool) -> dict[str, Any]:
    run = _Run(cfg, out, time.perf_counter(), collect_environment(cfg.torch_device))
    prepared: dict[str, PreparedModel] = {}
    eager = len(cfg.sizes) * len(cfg.batch_sizes) * len(cfg.precisions)
    with stage("eager cells", total=eager, unit="cells") as current:
        for name in cfg.sizes:
            prepared[name] = prepare_model(load_size(name, cfg), cfg.torch_device, seed=cfg.seed)
            run.sizes[name] = _describe(prepared[name])
            run_cells(prepared[name], cfg, use_compile=False, deadline=run.deadline, on_cell=run.cell_saver(current))
            flops = prepared[name].step_flops
            run.sizes[name]["step_gflop_per_sample"] = next((f / b / 1e9 for b, f in flops.items()), None)
    if cfg.parity_steps:
        parity_batch = cfg.parity_batch_size or min(cfg.batch_sizes)
        for name in track(cfg.sizes, "loss parity", unit="sizes", detail=str):
            run.parity += run_parity(prepared[name], cfg.precisions, cfg.parity_steps, parity_batch, cfg.lr, cfg.seed)
            run.save()
    if cfg.overhead_size is not None:
        with stage("Lightning overhead"):
            _run_overhead(run)
        run.save()
    if cfg.compile_precisions:
        batch_sizes = cfg.compile_batch_sizes or cfg.batch_sizes
        compiled = len(cfg.sizes) * len(batch_sizes) * len(cfg.compile_precisions)
        with stage("compiled cells", total=compiled, unit="cells") as current:
            for name in cfg.sizes:
                run_cells(prepared[name], cfg, use_compile=True, deadline=run.deadline, on_cell=run.cell_saver(current))
    run.finished = True
    run.save()
    with stage("report"):
        render_report(run.out, plots=plots)
    logger.info("wrote %s in %.0f s", run.out, time.perf_counter() - run.start)
    return run.payload()
