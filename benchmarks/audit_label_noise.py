"""Label-error detection and cost of ``mmfuse audit`` on the shapes world with injected label noise.

    python benchmarks/audit_label_noise.py                              # trains the noisy model first (~40 min)
    python benchmarks/audit_label_noise.py --ckpt runs/noisy/version_0/checkpoints/X.ckpt

1. Without ``--ckpt``: ``mmfuse fit`` of ``experiments/shapes_color.yaml`` on the world with ``--noise`` (10 %) of
   its training labels replaced by another class, single process (batch 64, as the two-process main job sees per
   step), keeping a checkpoint at every validation; the best by (clean) validation accuracy is audited.
2. ``mmfuse audit`` of that checkpoint, as its own timed process (imports, data, features, every detector, plots):
   the wall time is the audit cost on train + val + test (20 000 + 2 000 + 2 000 examples by default). The
   world's ``is_noisy`` column gives the precision and recall of the training split's flagged label errors.
3. ``--mismatch``: image-text mismatches planted in a copy of the test split (a question about a shape the image
   lacks) and scored by the matching probe fit on the validation split: precision, recall and false alarms.

Writes ``benchmarks/results/audit_label_noise.{json,md}`` with the git commit, versions, hardware and load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "shapes_color.yaml"
ACCEPT = {"precision": 0.8, "recall": 0.7, "seconds": 300.0}


def train(work: Path, noise: float, epochs: int, extra: list[str]) -> tuple[Path, Path, float]:
    """Fit on the noisy world; returns (run config, best checkpoint, wall seconds)."""
    root = work / "fit"
    cmd = [sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(CONFIG), f"--data.world.label_noise={noise}",
           "--data.batch_size=64", f"--trainer.max_epochs={epochs}", "--trainer.devices=1", "--trainer.strategy=auto",
           f"--trainer.default_root_dir={root}", "--checkpoint.save_top_k=-1", "--trainer.enable_progress_bar=false",
           *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    run = max(root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    return run / "config.yaml", best_checkpoint(run / "checkpoints"), wall


def best_checkpoint(directory: Path) -> Path:
    """The checkpoint with the highest validation accuracy in its name (``epochNN-acc0.XXXX.ckpt``)."""
    scored = [
        (float(m.group(1)), p) for p in directory.glob("*.ckpt") if (m := re.search(r"acc([0-9.]+)\.ckpt", p.name))
    ]
    if not scored:
        raise SystemExit(f"no epochNN-accX.ckpt checkpoint in {directory}")
    return max(scored)[1]


def audit(config: Path, ckpt: Path, out: Path, threads: int) -> tuple[dict[str, Any], float]:
    """Run ``mmfuse audit`` as its own process; returns (audit.json, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "mmfuse.cli", "audit", "--config", str(config), "--ckpt", str(ckpt), "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "audit.json").read_text()), time.perf_counter() - start


def planted_mismatches(config: Path, ckpt: Path, fraction: float, seed: int) -> dict[str, Any]:
    """Plant mismatches in a copy of the test split; score them with the matching probe fit on the val split."""
    import numpy as np

    from mmfuse.audit import SplitData, extract_features, find_mismatches, matching_probabilities, splits_of
    from mmfuse.audit.mismatch import derangement
    from mmfuse.audit.source import ShuffledPairs
    from mmfuse.commands import audit as command
    from mmfuse.data.shapes import SHAPES

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--config", str(config), "--ckpt", str(ckpt), "--out", str(REPO / "runs" / "unused")])
    inputs = command.prepare(args, need_model=True)
    splits = splits_of(inputs.datamodule, ["val", "test"])
    val, test = splits["val"], splits["test"]
    rng = np.random.default_rng(seed)
    planted = rng.random(len(test)) < fraction
    shapes = inputs.datamodule.splits["test"]["shapes"]
    rows, texts = [], list(test.texts)
    for i in range(len(test)):
        if planted[i]:
            texts[i] = f"what colour is the {rng.choice([s for s in SHAPES if s not in shapes[i]])} ?"
        rows.append({"image": test.rows[i]["image"], "text": texts[i], "label": int(test.labels[i])})
    read = {"tokenizer": inputs.tokenizer, "batch_size": 128}
    positives = extract_features(inputs.model, val.rows, **read).fused
    order = np.arange(len(val))
    negatives = extract_features(inputs.model, ShuffledPairs(val, order, order[derangement(len(val), seed)]), **read)
    scored = extract_features(inputs.model, SplitData("test", rows, test.labels, texts).rows, **read).fused
    found = find_mismatches("test", matching_probabilities(positives, negatives.fused, scored))
    flagged = np.zeros(len(test), dtype=bool)
    flagged[found.indices] = True
    hits = int((flagged & planted).sum())
    return {
        "planted": int(planted.sum()), "flagged": int(flagged.sum()), "true_positives": hits,
        "precision": hits / max(int(flagged.sum()), 1), "recall": hits / max(int(planted.sum()), 1),
        "false_alarm_rate": int((flagged & ~planted).sum()) / max(int((~planted).sum()), 1),
        "n": len(test), "mismatch_z": 3.0, "reference_split": "val", "negatives": len(val),
    }  # fmt: skip


def summarise(report: dict[str, Any], wall: float) -> dict[str, Any]:
    """Precision / recall of the training split's flagged label errors and the cost."""
    train = report["label_errors"]["train"]
    truth = train["ground_truth"]
    n_examples = sum(sum(c["count"] for c in b["classes"]) for b in report["balance"].values())
    return {
        "flagged": train["flagged"],
        "noisy": truth["recall"]["n"],
        "true_positives": truth["true_positives"],
        "precision": truth["precision"],
        "recall": truth["recall"],
        "probe_accuracy_on_given_labels": train["probe_accuracy"],
        "audit_wall_seconds": round(wall, 1),
        "audit_stage_seconds": report["seconds"],
        "examples_audited": n_examples,
        "passes_precision": truth["precision"]["estimate"] >= ACCEPT["precision"],
        "passes_recall": truth["recall"]["estimate"] >= ACCEPT["recall"],
        "passes_cost": wall <= ACCEPT["seconds"],
    }


def _interval(figure: dict[str, float]) -> str:
    return f"[{figure['ci_low']:.3f}, {figure['ci_high']:.3f}]"


def markdown(result: dict[str, Any]) -> str:
    s = result["label_errors"]
    p, r = s["precision"], s["recall"]
    lines = [
        f"# Audit: label-error detection and cost (shapes world, {100 * result['noise']:g} % label noise)",
        "",
        f"Checkpoint `{Path(result['ckpt']).name}` (trained on the noisy world); {s['examples_audited']} examples "
        f"audited; {result['threads']} torch thread(s); load average {result['load_before']} before, "
        f"{result['load_after']} after.",
        "",
        format_table(
            ["figure", "measured", "95 % interval", "acceptance"],
            [
                ["label-error precision (train)", f"{p['estimate']:.3f}", _interval(p), "≥ 0.8"],
                ["label-error recall (train)", f"{r['estimate']:.3f}", _interval(r), "≥ 0.7"],
                ["audit wall time (s, whole process)", f"{s['audit_wall_seconds']:.0f}", "—", "≤ 300"],
            ],
            "md",
        ),
        "",
        f"Flagged {s['flagged']} of the training split; {s['noisy']} labels were noisy, {s['true_positives']} found. "
        "Stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in s["audit_stage_seconds"].items()) + ".",
    ]
    if result.get("mismatch"):
        m = result["mismatch"]
        found = f"precision {m['precision']:.3f}, recall {m['recall']:.3f}, false alarms {m['false_alarm_rate']:.4f}"
        lines += ["", f"Planted image-text mismatches (in a copy of the test split, {m['planted']} of {m['n']}; probe "
                  f"fit on val): {found} of clean pairs."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, help="audit this checkpoint instead of training one")
    parser.add_argument("--config", type=Path, help="its run's config.yaml (default: next to the checkpoint)")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the audit process")
    parser.add_argument("--mismatch", action="store_true", help="also score planted image-text mismatches")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "audit_label_noise")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("extra", nargs="*", help="extra `mmfuse fit` overrides")
    args = parser.parse_args()
    result: dict[str, Any] = {"noise": args.noise, "threads": args.threads}
    if args.ckpt is None:
        config, ckpt, fit_wall = train(args.work, args.noise, args.epochs, args.extra)
        result["fit_wall_seconds"] = round(fit_wall, 1)
    else:
        ckpt = args.ckpt
        config = args.config or ckpt.resolve().parent.parent / "config.yaml"
    result |= {"ckpt": str(ckpt), "config": str(config), "load_before": [round(x, 2) for x in os.getloadavg()]}
    report, wall = audit(config, ckpt, args.work / "audit", args.threads)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["label_errors"] = summarise(report, wall)
    if args.mismatch:
        result["mismatch"] = planted_mismatches(config, ckpt, 0.05, seed=0)

    from mmfuse.provenance import collect_provenance

    result["provenance"] = collect_provenance(repo_dir=REPO, seed=0)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "audit_label_noise.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "audit_label_noise.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
