"""Recall@K of finished retrieval runs, gathered into one table with each run's provenance.

    python benchmarks/retrieval_rows.py --name flickr8k_retrieval \
        --row "a) from scratch=runs/flickr8k_retrieval/version_0" \
        --row "b) frozen pretrained=runs/flickr8k_frozen/version_0" \
        --row "c) fine-tuned=runs/flickr8k_finetune/version_0" \
        --row "d) fine-tuned + ITM re-ranking=runs/flickr8k_finetune/version_0:_itm"

``--keep "label[=former label]"`` carries a row of the existing ``<name>.json`` over unchanged (renamed when a former
label is given), for rows whose run directories are gone.

Each row names a run directory written by ``mmfuse fit`` or ``mmfuse validate`` (its ``metrics.csv``,
``config.yaml`` and ``provenance.json``); the last validation row of ``metrics.csv`` gives text->image and
image->text recall@1/5/10 (``val/t2i_r5``...; a ``:_itm`` suffix reads the ITM re-ranked columns,
``val/t2i_r5_itm``...). Writes ``benchmarks/results/<name>.json`` and ``.md``: the table, and per row the commit (and
whether the tree was dirty), argv, seed, machine, CPU flags and the run's wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import yaml

from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
KEYS = [f"{d}_r{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)]


def read_row(run_dir: Path, suffix: str) -> dict[str, Any]:
    """Recall of the last validation row of a run, with its provenance."""
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"val/t2i_r5{suffix}")]
    if not rows:
        raise SystemExit(f"{run_dir}/metrics.csv has no val/t2i_r5{suffix} row")
    last = rows[-1]
    provenance = json.loads((run_dir / "provenance.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    elapsed = [float(r["time/fit_elapsed_s"]) for r in rows if r.get("time/fit_elapsed_s")]
    return {
        "run_dir": str(run_dir),
        "epoch": int(last["epoch"]),
        "recall": {key: float(last[f"val/{key}{suffix}"]) for key in KEYS},
        "git_commit": provenance.get("git", {}).get("commit"),
        "git_dirty": provenance.get("git", {}).get("dirty"),
        "argv": provenance.get("argv"),
        "seed": config.get("seed_everything"),
        "hardware": provenance.get("hardware"),
        "fit_elapsed_s": elapsed[-1] if elapsed else None,
    }


def to_markdown(name: str, rows: dict[str, dict[str, Any]]) -> str:
    cells = []
    for label, row in rows.items():
        recall = [f"{100 * row['recall'][key]:.1f} %" for key in KEYS]
        wall = f"{row['fit_elapsed_s']:.0f}" if row["fit_elapsed_s"] else "-"
        cells.append([label, *recall, row["epoch"] + 1, wall])
    headers = ["row", *(f"{key[:3]} R@{key[5:]}" for key in KEYS), "epochs", "fit wall (s)"]
    lines = [f"# {name}", "", format_table(headers, cells, "md", "l" + "r" * (len(headers) - 1)), "", "Runs:", ""]
    for label, row in rows.items():
        hw = row["hardware"] or {}
        dirty = " (dirty tree)" if row["git_dirty"] else ""
        lines.append(
            f"- {label}: `{' '.join(row['argv'] or [])}` in `{row['run_dir']}`, commit {str(row['git_commit'])[:10]}"
            f"{dirty}, seed {row['seed']}, {hw.get('processor')} x{hw.get('cpu_count')} "
            f"(flags {hw.get('cpu_flags')}), {hw.get('torch_num_threads')} threads"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="result file stem under benchmarks/results/")
    parser.add_argument("--row", action="append", default=[], help="'label=run_dir[:_itm]'")
    parser.add_argument("--keep", action="append", default=[], help="'label[=former label]' of the existing file")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if not args.row and not args.keep:
        parser.error("give at least one --row or --keep")
    rows: dict[str, dict[str, Any]] = {}
    if args.keep:
        existing = json.loads((args.out / f"{args.name}.json").read_text())
        for spec in args.keep:
            label, _, former = spec.partition("=")
            if (former or label) not in existing:
                raise SystemExit(f"--keep {spec!r}: {args.name}.json has no row {former or label!r}: {list(existing)}")
            rows[label] = existing[former or label]
    for spec in args.row:
        label, _, target = spec.partition("=")
        run_dir, _, suffix = target.partition(":")
        rows[label] = read_row(Path(run_dir), suffix)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = to_markdown(args.name, rows)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
