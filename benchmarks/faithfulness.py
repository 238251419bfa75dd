"""Faithfulness of every attribution method on a trained model: ``mmfuse explain --evaluate`` plus provenance.

    python benchmarks/faithfulness.py --config experiments/shapes_color.yaml \\
        --ckpt runs/shapes_color/version_0/checkpoints/<best>.ckpt --n 200 --threads 1

Runs the command on the first N examples of the split (gallery under ``--gallery``), then writes
``benchmarks/results/faithfulness_<experiment>.json`` (the report, the acceptance checks, git SHA, library versions,
device, seed, the experiment YAML) and ``.md``. Acceptance: pointing game >= 0.8 for ``gradcam`` and
``fusion_relevance`` (checked on pixels at zero tolerance and on the maps' own patch grid; ``hirescam`` is reported
beside them), and the randomization correlation after full re-initialisation <= 0.3.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from mmfuse.commands import run_command
from mmfuse.experiment import load_config
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
POINTING_TARGET, RANDOMIZATION_TARGET = 0.8, 0.3
ACCEPTED_METHODS = ("gradcam", "hirescam", "fusion_relevance")
POINTING_GAMES = {"pointing_game": "pointing game (pixels)", "pointing_game_patch": "pointing game (patch grid)"}


def acceptance(report: dict[str, Any]) -> dict[str, Any]:
    """The acceptance checks: (value, target, passed) per method and criterion."""
    checks: dict[str, Any] = {}
    for method in ACCEPTED_METHODS:
        metrics = report["methods"].get(method, {})
        for key, title in POINTING_GAMES.items():
            pointing = (metrics.get(key) or {}).get("mean")
            checks[f"{method} {title} >= {POINTING_TARGET}"] = _check(
                pointing, pointing is not None and pointing >= POINTING_TARGET
            )
        rho = (metrics.get("randomization_spearman_image") or {}).get("mean")
        checks[f"{method} randomized rho (image) <= {RANDOMIZATION_TARGET}"] = _check(
            rho, rho is not None and rho <= RANDOMIZATION_TARGET
        )
    return checks


def _check(value: float | None, passed: bool) -> dict[str, Any]:
    return {"value": value, "passed": bool(passed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "shapes_color.yaml")
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--split", default="val")
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--randomization-examples", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery", type=Path, default=None, help="output of the command (default runs/explain/<exp>)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = args.config.stem
    out = args.gallery or REPO / "runs" / "explain" / name
    argv = ["--config", str(args.config), "--ckpt", str(args.ckpt), "--out", str(out), "--n", str(args.n)]
    argv += ["--split", args.split, "--evaluate", "--device", args.device, "--seed", str(args.seed)]
    argv += ["--randomization-examples", str(args.randomization_examples)]
    argv += ["--methods", *args.methods] if args.methods else []
    start = time.perf_counter()
    run_command("explain", argv)
    seconds = time.perf_counter() - start
    report = json.loads((out / "faithfulness.json").read_text())
    record = {
        "experiment": name,
        "checkpoint": str(args.ckpt),
        "command": "mmfuse explain " + " ".join(argv),
        "seconds": round(seconds, 1),
        "threads": args.threads,
        "acceptance": acceptance(report),
        **report,
        "config": load_config(args.config).to_dict(),  # resolved: base file merged, every default spelled out
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    json_path = args.results / f"faithfulness_{name}.json"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"Checkpoint `{args.ckpt}`; `{record['command']}` ({seconds:.0f} s, {args.threads} threads).", ""]
    rows = [
        [check, "–" if result["value"] is None else f"{result['value']:.3f}", "yes" if result["passed"] else "no"]
        for check, result in record["acceptance"].items()
    ]
    lines += ["## Acceptance", "", format_table(["check", "value", "passed"], rows, "md")]
    body = (out / "faithfulness.md").read_text().replace("# Faithfulness of the explanations", "## Results")
    md = f"# Faithfulness of the explanations: {name}\n\n" + "\n".join(lines) + "\n\n" + body
    (args.results / f"faithfulness_{name}.md").write_text(md)
    print(f"wrote {json_path} and {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
