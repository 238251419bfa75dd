"""The baseline ladder of a trained checkpoint, as ``mmfuse baselines`` writes it, kept as a benchmark result.

    python benchmarks/audit_baselines.py --ckpt runs/shapes_color/version_0/checkpoints/X.ckpt

Runs ``mmfuse baselines`` (its own timed process) with the run's ``config.yaml`` and copies ``baselines.json`` /
``baselines.md`` to ``benchmarks/results/audit_baselines.{json,md}``, adding the git commit, versions, hardware,
the wall time and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="its run's config.yaml (default: next to the checkpoint)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "audit_baselines")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    config = args.config or args.ckpt.resolve().parent.parent / "config.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mmfuse.cli", "baselines", "--config", str(config), "--ckpt", str(args.ckpt),
           "--out", str(args.work)]  # fmt: skip
    load_before = [round(x, 2) for x in os.getloadavg()]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start

    from mmfuse.provenance import collect_provenance

    ladder = json.loads((args.work / "baselines.json").read_text())
    load_after = [round(x, 2) for x in os.getloadavg()]
    ladder |= {"ckpt": str(args.ckpt), "process_wall_seconds": round(wall, 1), "load_before": load_before,
               "load_after": load_after, "provenance": collect_provenance(repo_dir=REPO)}  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "audit_baselines.json").write_text(json.dumps(ladder, indent=2) + "\n")
    page = (args.work / "baselines.md").read_text()
    page += f"\nCheckpoint `{args.ckpt}`; `mmfuse baselines` took {wall:.0f} s (whole process, 1 torch thread).\n"
    (args.results / "audit_baselines.md").write_text(page)
    print(page)


if __name__ == "__main__":
    main()
