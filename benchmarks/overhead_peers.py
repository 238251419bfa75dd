"""Lightning against plain PyTorch and Accelerate per training step, sizes ``small`` and ``base``, at ``32-true``
and ``bf16-mixed``.

    python benchmarks/overhead_peers.py --threads 2
    python benchmarks/overhead_peers.py --device cuda --results benchmarks/results/amp_h200

Each cell is one :func:`mmfuse.bench.measure_overhead` call: mmfuse's ``FusionLitModule`` under ``lightning.Trainer``,
with one step of the plain PyTorch loop and one of the Accelerate loop run after every Lightning step, each loop on
its own copy of the same initial weights, on the same batches with the same optimizer settings (see
:mod:`mmfuse.bench.overhead` for the clocks and what a step holds). Per cell it reports each loop's median step, its
ratio to the fastest loop, the median per-step ratio to the paired plain step, and the time to the first step.
``base`` takes about 7 s a step on a 2-core CPU, so it runs fewer, smaller steps in one round and without the
``lightning_bare`` variant (:data:`SETTINGS`); on a GPU both sizes run as ``small`` does on a CPU
(:data:`CUDA_SETTINGS`), timed on the wall clock after a synchronize. The load average is recorded before and after
every cell. Results go to ``benchmarks/results/overhead_peers.json`` (rewritten after every cell) and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mmfuse.bench import get_size, measure_overhead
from mmfuse.bench.timing import PeakMemory
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
# steps per fit = warm-up + counted steps + 1 (the last Lightning step has no end mark).
SETTINGS: dict[str, dict[str, Any]] = {
    "small": {"batch_size": 32, "steps": 20, "warmup": 3, "rounds": 3, "bare": True},
    "base": {"batch_size": 8, "steps": 9, "warmup": 2, "rounds": 1, "bare": False},
}
CUDA_SETTINGS: dict[str, dict[str, Any]] = {
    size: {"batch_size": 32, "steps": 24, "warmup": 3, "rounds": 3, "bare": True} for size in SETTINGS
}
LOOPS = ("lightning", "plain", "accelerate")


def run_cell(size: str, precision: str, seed: int, device: torch.device) -> dict[str, Any]:
    """One size at one precision, with the load average around it."""
    memory = PeakMemory(device)
    memory.start()  # frees the previous cell's models, then watches the peak memory from here
    settings = (CUDA_SETTINGS if device.type == "cuda" else SETTINGS)[size]
    before, start = os.getloadavg(), time.perf_counter()
    result = measure_overhead(get_size(size), device, precision=precision, seed=seed, **settings)
    return {
        **dataclasses.asdict(result),
        "settings": settings,
        "seconds": time.perf_counter() - start,
        "load_average_before": before,
        "load_average_after": os.getloadavg(),
        "peak_memory_kind": memory.kind,
        "peak_rss_growth_bytes": memory.peak_bytes(),
    }


def cell_rows(cell: dict[str, Any]) -> list[list[str]]:
    """One row per loop: median step, x fastest, paired ratio to plain, time to the first step."""
    steps, firsts, firsts_cpu = cell["step_s"], cell["first_step_wall_s"], cell["first_step_s"]
    paired = {"lightning": cell["ratio"], "plain": 1.0, "accelerate": cell["ratio_accelerate"]}
    spread = cell.get("ratio_p10_p90", {})
    rows = []
    for loop in LOOPS:
        if loop not in cell["ratio_to_fastest"]:
            continue
        median = steps[loop if loop == "lightning" else f"{loop} (lightning)"]
        rows.append(
            [
                cell["size"],
                cell["precision"],
                str(cell["batch_size"]),
                loop,
                f"{median * 1e3:.1f}",
                f"{cell['ratio_to_fastest'][loop]:.3f}",
                f"{paired[loop]:.3f}",
                "–".join(f"{v:.3f}" for v in spread[loop]) if loop in spread else "",
                f"{cell['system_s'][loop] * 1e3:.0f}",
                f"{firsts[loop]:.2f}",
                f"{firsts_cpu[loop]:.2f}",
            ]
        )
    return rows


def write(record: dict[str, Any], results: Path) -> str:
    """``overhead_peers.json`` and ``.md``; returns the Markdown."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / "overhead_peers.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    header = ["size", "precision", "B", "loop", "median ms/step", "x fastest", "x plain (paired)", "p10–p90"]
    header += ["of it kernel ms"]
    header += ["first step s (wall)", "first step s (CPU)"]
    rows = [row for cell in record["cells"] for row in cell_rows(cell)]
    cuda = record.get("device", "cpu") == "cuda"
    gpus = (record["provenance"]["hardware"].get("cuda") or {}).get("devices") or [{"name": "cuda"}]
    where = gpus[0]["name"] if cuda else f"cpu ({record['threads']} threads)"
    clock = "the wall clock after a CUDA synchronize" if cuda else "the process CPU-time clock"
    peak = "peak GPU memory allocated GB" if cuda else "peak RSS growth GB"
    lines = [
        f"# Lightning against plain PyTorch and Accelerate: training step on {where}",
        "",
        f"Step times on {clock}, over the Lightning (not the bare) fits; `x fastest`: median step over the fastest "
        "loop's; `x plain (paired)`: median over steps of loop_i / plain_i, the plain step run right after, and "
        "`p10–p90` the spread of those per-step ratios. Time to the first step: setup (Trainer, or optimizer and "
        "scheduler, or Accelerator and prepare) plus the first step, median over counted fits. `of it kernel ms`: "
        "the kernel's CPU time in a step (page faults on freshly mapped memory), median over every counted step. "
        "Accelerate "
        f"{record['accelerate_version']}, Lightning {record['provenance']['packages'].get('lightning')}.",
        "",
        format_table(header, rows, "md"),
        "",
        f"| size | precision | settings | load average before -> after (1, 5, 15 min) | minutes | {peak} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for cell in record["cells"]:
        load = " -> ".join(
            "/".join(f"{v:.2f}" for v in cell[key]) for key in ("load_average_before", "load_average_after")
        )
        settings = ", ".join(f"{k} {v}" for k, v in cell["settings"].items())
        peak = cell["peak_rss_growth_bytes"]
        peak_gb = "n/a" if peak is None else f"{peak / 2**30:.1f}"
        lines.append(
            f"| {cell['size']} | {cell['precision']} | {settings} | {load} | {cell['seconds'] / 60:.1f} | {peak_gb} |"
        )
    for cell in record["cells"]:
        for loop, reason in cell["skipped"].items():
            lines.append(f"\n{cell['size']} {cell['precision']}: {loop} not run: {reason}")
    lines += ["", f"Command: `{record['command']}`"]
    markdown = "\n".join(lines) + "\n"
    path.with_suffix(".md").write_text(markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {
        "command": f"python benchmarks/overhead_peers.py --device {args.device} --sizes {' '.join(args.sizes)} "
        f"--precisions {' '.join(args.precisions)} --threads {args.threads} --seed {args.seed}",
        "device": args.device,
        "threads": args.threads,
        "accelerate_version": _version("accelerate"),
        "cells": [],
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }
    for size in args.sizes:
        for precision in args.precisions:
            record["cells"].append(run_cell(size, precision, args.seed, torch.device(args.device)))
            write(record, args.results)
    print(write(record, args.results))


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
