"""Is data the bottleneck? Samples/s of an experiment's training loader alone next to the samples/s its training steps
consume, and their ratio (the issue asks for a pipeline at least 3x faster than training).

    python benchmarks/data_vs_train.py      # the main shapes job and the Flickr retrieval experiment
    python benchmarks/data_vs_train.py --config experiments/X.yaml --override=--data.init_args.num_workers=2

Both rates are per training process, built exactly as ``mmfuse fit --config X.yaml`` builds them (one process;
under DDP every process has its own loader and its own share of the batches, so the per-process ratio is the one
that matters):

* pipeline: the configured training loader (its batch size and ``num_workers``) iterated without a model: decode,
  resize, tokenise, collate; 2 warm-up batches (worker start-up) excluded.
* training: forward, backward and AdamW step of the experiment's task objective on batches already in memory
  (the loss the LightningModule computes, without Lightning's per-step overhead, see ``overhead_peers.json``);
  2 warm-up steps excluded.

Each is timed ``--repeats`` times, alternating, and the median reported: the machine is shared, so a single timing
can be slowed by other jobs. Results go to ``benchmarks/results/data_vs_train.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import torch

from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table
from mmfuse.training.cli import build_from_config
from mmfuse.types import Batch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = [REPO / "experiments" / "shapes_color.yaml", REPO / "experiments" / "flickr8k_retrieval.yaml"]
WARMUP = 2
SINGLE_PROCESS = ["--trainer.devices=1", "--trainer.strategy=auto"]


def pipeline_rate(loader: Any, batches: int) -> float:
    """Samples/s of ``batches`` batches of a fresh pass over ``loader`` (after ``WARMUP`` batches)."""
    iterator = iter(loader)
    for _ in range(WARMUP):
        next(iterator)
    start, samples = time.perf_counter(), 0
    for batch in islice(iterator, batches):
        samples += len(batch)
    return samples / (time.perf_counter() - start)


def training_rate(module: Any, batches: list[Batch], steps: int) -> float:
    """Samples/s of ``steps`` optimiser steps of the task objective on in-memory ``batches`` (after ``WARMUP``)."""
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=module.optim.lr, weight_decay=module.optim.weight_decay)

    def step(batch: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        module.objective.training_step(module.model, module._prepared(batch)).loss.backward()
        optimizer.step()

    stream = cycle(batches)
    for _ in range(WARMUP):
        step(next(stream))
    start, samples = time.perf_counter(), 0
    for batch in islice(stream, steps):
        step(batch)
        samples += len(batch)
    return samples / (time.perf_counter() - start)


def measure(config: Path, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as run_dir:
        cli = build_from_config(config, [*SINGLE_PROCESS, f"--trainer.default_root_dir={run_dir}", *overrides])
        dm, module = cli.datamodule, cli.model
        dm.prepare_data()
        dm.setup("fit")
        loader = dm.train_dataloader()
        in_memory = list(islice(iter(loader), args.memory_batches))
        pipeline, training = [], []
        for _ in range(args.repeats):
            pipeline.append(pipeline_rate(loader, args.batches))
            training.append(training_rate(module, in_memory, args.steps))
        resolved = cli.config.as_dict()
    data_args = resolved["data"].get("init_args", resolved["data"])
    pipeline_median, training_median = statistics.median(pipeline), statistics.median(training)
    return {
        "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
        "overrides": overrides,
        "task": resolved["model"]["task"],
        "batch_size": data_args["batch_size"],
        "num_workers": data_args["num_workers"],
        "configured_devices": args.devices.get(str(config), 1),
        "pipeline_samples_per_s": round(pipeline_median, 1),
        "training_samples_per_s": round(training_median, 1),
        "ratio": round(pipeline_median / training_median, 2),
        "pipeline_runs": [round(v, 1) for v in pipeline],
        "training_runs": [round(v, 1) for v in training],
        "resolved_config": {"model": resolved["model"], "data": resolved["data"], "seed": resolved["seed_everything"]},
    }


def write_markdown(path: Path, record: dict[str, Any]) -> None:
    git, hw = record["provenance"]["git"], record["provenance"]["hardware"]
    lines = [
        "# Data pipeline vs training (samples/s per training process)",
        "",
        f"Commit `{str(git.get('commit', '?'))[:10]}`{' (dirty)' if git.get('dirty') else ''}; {hw['processor']}, "
        f"{hw['cpu_count']} logical CPUs shared with other jobs while measured; torch threads "
        f"{record['torch_threads']}. Median of {record['settings']['repeats']} alternating timings of "
        f"{record['settings']['batches']} loader batches and {record['settings']['steps']} training steps.",
        "",
        format_table(
            ["config", "task", "batch", "workers", "pipeline samples/s", "training samples/s", "pipeline / training"],
            [
                [
                    r["config"],
                    r["task"],
                    r["batch_size"],
                    r["num_workers"],
                    r["pipeline_samples_per_s"],
                    r["training_samples_per_s"],
                    f"{r['ratio']}x",
                ]
                for r in record["results"]
            ],  # fmt: skip
            "md",
            "llrrrrr",
        ),
        "",
        "The main shapes job runs 2 DDP processes, each with its own loader and the same per-process batch, so its "
        "per-process ratio above is the ratio of the run.",
    ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, nargs="*", default=DEFAULT_CONFIGS)
    parser.add_argument("--override", action="append", default=[], help="a command-line override for every config")
    parser.add_argument("--batches", type=int, default=30, help="timed loader batches per repeat")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per repeat")
    parser.add_argument("--memory-batches", type=int, default=4, help="distinct in-memory batches for training")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.devices = {str(DEFAULT_CONFIGS[0]): 2}  # the main job's DDP processes (for the table's note)
    results = []
    for config in args.config:
        results.append(measure(config.resolve(), args.override, args))
        print({k: v for k, v in results[-1].items() if k != "resolved_config"})
    record = {
        "provenance": collect_provenance(repo_dir=REPO),
        "torch_threads": torch.get_num_threads(),
        "settings": {k: v for k, v in vars(args).items() if k in ("batches", "steps", "memory_batches", "repeats")},
        "results": results,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "data_vs_train.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    write_markdown(args.results / "data_vs_train.md", record)
    print(f"wrote {args.results / 'data_vs_train.json'} and .md")


if __name__ == "__main__":
    main()
