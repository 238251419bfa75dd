"""Peak training memory per precision, with activation checkpointing off and on, for the ``base`` size (ViT-B/16 +
BERT-base, 224 px).

    python benchmarks/activation_memory.py --threads 2
    python benchmarks/activation_memory.py --device cuda --batch-sizes 32 128

Each cell is one :func:`mmfuse.bench.amp.run_cell` of the AMP sweep (the same plain training step, the same seeded
weights and synthetic batches), on a model built once per setting: ``off`` as the sweep builds it, ``on`` with
``speed.activation_checkpointing`` switched on by :func:`mmfuse.training.lit_module.apply_speed_switches`, the
function ``mmfuse fit`` uses (timm's block-by-block ``set_grad_checkpointing`` for the ViT, transformers'
non-reentrant gradient checkpointing for BERT). Peak memory: on CPU the growth of the process's peak resident set
during the cell (activations, gradients and AdamW's state; the weights were built before it), on CUDA
``torch.cuda.max_memory_allocated`` (everything). The step time comes with it: checkpointing trades memory for a
second forward pass through each checkpointed block. Results go to
``benchmarks/results/activation_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from mmfuse.bench import get_size
from mmfuse.bench.amp import prepare_model, run_cell
from mmfuse.bench.config import AmpSweepConfig, get_precision
from mmfuse.bench.precision import synthetic_batches
from mmfuse.config import SpeedConfig
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table
from mmfuse.training.lit_module import apply_speed_switches

REPO = Path(__file__).resolve().parents[1]


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (checkpointing, batch size, precision) cell, checkpointing off first."""
    cfg = AmpSweepConfig(
        sizes=(args.size,), precisions=tuple(args.precisions), batch_sizes=tuple(args.batch_sizes), device=args.device,
        warmup=1, steps=args.steps, repeats=1, parity_steps=0, seed=args.seed, threads=args.threads,
    )  # fmt: skip
    size = get_size(args.size)
    cells = []
    for checkpointing in (False, True):
        prepared = prepare_model(size, cfg.torch_device, seed=args.seed)
        if checkpointing:
            apply_speed_switches(prepared.model, SpeedConfig(activation_checkpointing=True))
        for batch_size in args.batch_sizes:
            batches = synthetic_batches(size, batch_size, seed=args.seed, device=cfg.torch_device)
            for name in args.precisions:
                cell = run_cell(prepared, get_precision(name), batches, cfg, use_compile=False)
                cells.append({"activation_checkpointing": checkpointing, **dataclasses.asdict(cell)})
                peak = cell.peak_memory_bytes
                logging.info("checkpointing %s B=%d %s: %s, peak %s MiB, %.2f s/step", "on" if checkpointing else "off",
                             batch_size, name, cell.status, None if peak is None else peak >> 20,
                             cell.step_s_median or 0)  # fmt: skip
            del batches
        del prepared
    return cells


def write(record: dict[str, Any], results: Path) -> str:
    """``activation_memory.json`` and ``.md``; returns the Markdown."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "activation_memory.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    git, hw = record["provenance"]["git"], record["provenance"]["hardware"]
    by = {(c["activation_checkpointing"], c["batch_size"], c["precision"]): c for c in record["cells"]}
    rows = []
    for batch_size, name in itertools.product(record["batch_sizes"], record["precisions"]):
        off, on = by[(False, batch_size, name)], by[(True, batch_size, name)]
        if off["status"] != "ok" or on["status"] != "ok":
            rows.append([str(batch_size), name, off["status"], on["status"], "", "", "", ""])
            continue
        rows.append(
            [
                str(batch_size),
                name,
                f"{off['peak_memory_bytes'] / 2**20:,.0f}",
                f"{on['peak_memory_bytes'] / 2**20:,.0f}",
                f"{on['peak_memory_bytes'] / off['peak_memory_bytes']:.2f}",
                f"{off['step_s_median']:.2f}",
                f"{on['step_s_median']:.2f}",
                f"{on['step_s_median'] / off['step_s_median']:.2f}",
            ]
        )
    memory = "peak RSS growth" if record["device"] == "cpu" else "peak allocated"
    where = (
        f"{hw.get('processor')}, {record['threads']} threads; CPU flags {', '.join(hw.get('cpu_flags') or []) or 'n/a'}"
        if record["device"] == "cpu"
        else ((hw.get("cuda") or {}).get("devices") or [{"name": "cuda"}])[0]["name"]
    )
    lines = [
        f"# Activation checkpointing: peak memory per precision, size {record['size']}",
        "",
        f"Commit `{str(git.get('commit', '?'))[:10]}`{' (dirty)' if git.get('dirty') else ''}; {where}; seed "
        f"{record['seed']}; 1 warm-up step, then {record['steps']} timed. Memory: {memory} of one training step "
        "(forward, backward, AdamW). Command: `" + record["command"] + "`.",
        "",
        format_table(
            [
                "B",
                "precision",
                f"off: {memory} MiB",
                f"on: {memory} MiB",
                "on / off",
                "off: s/step",
                "on: s/step",
                "on / off",
            ],
            rows,
            "md",
            "rlrrrrrr",
        ),  # fmt: skip
    ]
    markdown = "\n".join(lines) + "\n"
    (results / "activation_memory.md").write_text(markdown)
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="base")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed", "bf16-true"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {
        "command": f"python benchmarks/activation_memory.py --size {args.size} --precisions "
        f"{' '.join(args.precisions)} --batch-sizes {' '.join(map(str, args.batch_sizes))} --steps {args.steps} "
        f"--device {args.device} "
        f"--threads {args.threads} --seed {args.seed}",
        **{key: getattr(args, key) for key in ("size", "precisions", "batch_sizes", "steps", "device", "threads")},
        "seed": args.seed,
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }
    record["cells"] = measure(args)
    print(write(record, args.results))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
