"""Train the main shapes-world experiment and its baselines; write a table of accuracy and wall time.

    python benchmarks/shapes_baselines.py                       # main job + image-only + text-only + concat
    python benchmarks/shapes_baselines.py --only shapes_color   # just the main job (updates its row)
    python benchmarks/shapes_baselines.py --name shapes_hard --only shapes_relation -- --trainer.devices=1

Each experiment runs as its own ``mmfuse fit`` process (timed from launch to exit, imports and data preparation
included) and is read back from its ``metrics.csv``. Results go to ``benchmarks/results/<name>.{json,md}``; rows of
experiments that were not run this time are kept.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["shapes_color", "shapes_color_image_only", "shapes_color_text_only", "shapes_color_concat"]


def run_experiment(name: str, out_dir: Path, extra: list[str]) -> dict:
    """Fit one experiment in a subprocess and summarise its validation curve."""
    root = out_dir / name
    cmd = [sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(REPO / "experiments" / f"{name}.yaml")]
    cmd += [f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false", *extra]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-4000:]}")
    run_dir = max(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc")]
    curve = [(int(r["epoch"]), float(r["val/acc"]), float(r["time/fit_elapsed_s"])) for r in rows]
    first_95 = next((t for _, acc, t in curve if acc >= 0.95), None)
    # From launch: the whole process time minus what ran after that validation (an upper bound: it includes the
    # imports and data preparation before fit and the tear-down after the last validation).
    launch_95 = None if first_95 is None else wall - (curve[-1][2] - first_95)
    return {
        "experiment": name,
        "final_val_acc": curve[-1][1],
        "best_val_acc": max(acc for _, acc, _ in curve),
        "val_curve": curve,
        "fit_seconds_to_val_acc_0.95": first_95,
        "launch_seconds_to_val_acc_0.95": None if launch_95 is None else round(launch_95, 1),
        "process_wall_seconds": round(wall, 1),
        "run_dir": str(run_dir),
    }


def provenance(run_dir: Path) -> dict:
    """Commit, packages, processor and CPU flags, and the run's seed (from the ``config.yaml`` it saved)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    return collect_provenance(repo_dir=REPO, seed=(config or {}).get("seed_everything"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=EXPERIMENTS, help="experiments to run (YAML stems)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks", help="run directories")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default="shapes_baselines", help="results file stem")
    parser.add_argument("extra", nargs="*", help="extra CLI overrides passed to every run")
    args = parser.parse_args()
    fresh = {name: run_experiment(name, args.out, args.extra) for name in args.only}
    for row in fresh.values():
        row["provenance"], row["overrides"] = provenance(Path(row["run_dir"])), args.extra
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{args.name}.json"
    previous = {r["experiment"]: r for r in json.loads(path.read_text())["results"]} if path.is_file() else {}
    results = list({**previous, **fresh}.values())
    path.write_text(json.dumps({"results": results}, indent=2))
    rows = []
    for r in results:
        t95 = "—" if r.get("launch_seconds_to_val_acc_0.95") is None else f"{r['launch_seconds_to_val_acc_0.95']:.0f}"
        accuracy = [f"{r['final_val_acc']:.4f}", f"{r['best_val_acc']:.4f}"]
        rows.append([r["experiment"], *accuracy, t95, f"{r['process_wall_seconds']:.0f}"])
    headers = ["experiment", "final val acc", "best val acc", "val acc >= 0.95 after (s from launch)"]
    table = format_table([*headers, "whole process (s)"], rows, "md")
    (args.results / f"{args.name}.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
