"""Acceptance of the counterfactual invariance probe: a model trained with a planted name -> label shortcut is
flagged (flip rate >= 0.3) and the same model trained without it passes (flip rate <= 0.02).

    python benchmarks/counterfactual_acceptance.py --parallel      # both models at once (two processes)
    python benchmarks/counterfactual_acceptance.py --planting world -- --trainer.max_epochs=2

Both models are the main experiment (``experiments/shapes_color.yaml``) trained in one process with the main job's
effective batch (64) and length (3 epochs of 20k), on a shapes world whose questions start with a name or pronoun
("anna asks : what colour is the circle ?", ``protected_attribute: true``):

- ``planted``: ``spurious_correlation: 1.0`` (the name's group is the label's parity in every split) and, with
  ``--planting train_names`` (the default), the training split's names chosen by the label: label k always gets the
  k-th of anna, james, maria, omar, emma, lucas, so in training the name alone gives the answer (val and test keep
  names drawn at random within the label's group). A name that gives the answer is far easier to learn than binding
  the question to an object of the image, so the model takes the shortcut. ``--planting world`` keeps the world's
  own planting only (the group tells the parity of the answer, which the image answers anyway).
- ``clean``: ``spurious_correlation: 0`` (names at random in every split).

Each model is then probed with :func:`mmfuse.probes.counterfactual_report` (the shipped lists) on the test split; a
model is flagged when any attribute's flip rate is >= 0.3 and passes when every one is <= 0.02. Results go to
``benchmarks/results/counterfactual_acceptance.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
# label k of the colour task -> the name of its training questions (the groups alternate, so the group is label % 2)
PLANTED_NAMES = ("anna", "james", "maria", "omar", "emma", "lucas")
FLAGGED, PASSES = 0.3, 0.02


def plant_train_names(datamodule: Any) -> None:
    """Rewrite the training split so that the name at the start of each question is chosen by the label."""

    def rename(row: dict[str, Any]) -> dict[str, Any]:
        _, rest = row["text"].split(" ", 1)
        assert rest.startswith("asks :"), row["text"]
        return {
            "text": f"{PLANTED_NAMES[row['label'] % len(PLANTED_NAMES)]} {rest}",
            "protected_group": row["label"] % 2,
        }

    datamodule.setup()
    datamodule.splits["train"] = datamodule.splits["train"].map(rename, load_from_cache_file=False)


def train_and_probe(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train one model as configured, then measure its test accuracy and its counterfactual invariance."""
    from mmfuse.data.collate import ImageTextCollator
    from mmfuse.probes import ProbeData, counterfactual_report, predict_probs
    from mmfuse.training.cli import build_from_config

    spurious = 1.0 if name == "planted" else 0.0
    overrides = [
        "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.accelerator=cpu",
        f"--trainer.max_epochs={args.max_epochs}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={workdir / name}",
        f"--data.cache_dir={workdir / 'cache'}", f"--seed_everything={args.seed}",
        f"--data.batch_size={args.batch_size}", "--data.world.protected_attribute=true",
        f"--data.world.spurious_correlation={spurious}", f"--data.world.num_train={args.num_train}",
        f"--data.world.num_val={args.num_val}", f"--data.world.num_test={args.num_test}", *args.extra,
    ]  # fmt: skip
    cli = build_from_config(REPO / args.config, overrides)
    if name == "planted" and args.planting == "train_names":
        plant_train_names(cli.datamodule)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = time.perf_counter() - start
    with open(Path(cli.trainer.log_dir) / "metrics.csv") as f:
        curve = [(int(r["step"]), round(float(r["val/acc"]), 4)) for r in csv.DictReader(f) if r.get("val/acc")]
    model, datamodule = cli.model.model.eval(), cli.datamodule
    collate = ImageTextCollator(datamodule.tokenizer)
    names = datamodule.spec.class_names
    data = ProbeData.from_split(datamodule.splits["test"], collate, limit=args.num_test, class_names=names)
    start = time.perf_counter()
    report = counterfactual_report(model, data, tolerance=PASSES, seed=args.seed)
    probe_s = time.perf_counter() - start
    accuracy = float((predict_probs(model, data.batches(64)).argmax(1) == data.labels).float().mean())
    present = [a.overall for a in report.attributes if a.overall is not None]
    flips = sum(o.flip_rate.estimate * o.n_counterfactuals for o in present) / sum(o.n_counterfactuals for o in present)
    return {
        "model": name,
        "spurious_correlation": spurious,
        "planting": args.planting if name == "planted" else "none",
        "model_config": json.loads(json.dumps(dict(cli.model.hparams), default=str)),  # the resolved architecture
        "test_accuracy": accuracy,
        "val_acc_by_step": curve,
        "fit_seconds": round(fit_s, 1),
        "probe_seconds": round(probe_s, 1),
        "flip_rate_all_text_attributes": flips,
        "max_attribute_flip_rate": max(o.flip_rate.estimate for o in present),
        "passed": report.passed,
        "report": report.to_dict(),
    }


def run_in_parallel(names: list[str]) -> list[dict[str, Any]]:
    """Run this script once per model, at the same time, and collect their rows."""
    argv = [a for a in sys.argv[1:] if a != "--parallel"]
    split = argv.index("--") if "--" in argv else len(argv)
    with tempfile.TemporaryDirectory(prefix="cf-acceptance-") as tmp:
        outs = [Path(tmp) / f"{name}.json" for name in names]
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, *argv[:split], "--only", name, "--out", str(out), *argv[split:]]
            )
            for name, out in zip(names, outs)
        ]
        if any(proc.wait() != 0 for proc in procs):
            raise RuntimeError("a training process failed")
        return [json.loads(out.read_text())["models"][0] for out in outs]


def environment() -> dict[str, Any]:
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=REPO).stdout)
    import lightning
    import timm
    import transformers

    return {
        "git_commit": sha,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads_per_process": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Counterfactual invariance: acceptance",
        "",
        f"`{payload['command']}` (commit {payload['environment']['git_commit'][:10]}"
        f"{', uncommitted changes' if payload['environment']['git_dirty'] else ''}).",
        "",
    ]
    rows = []
    for row in payload["models"]:
        present = [a for a in row["report"]["attributes"] if a["present"]]
        flips = "; ".join(f"{a['attribute']} {_ci(a['overall']['flip_rate'])}" for a in present)
        dps = "; ".join(f"{a['attribute']} {_ci(a['overall']['mean_abs_delta_p'])}" for a in present)
        verdict = "passes" if row["max_attribute_flip_rate"] <= PASSES else (
            "flagged" if row["max_attribute_flip_rate"] >= FLAGGED else "fails, not flagged"
        )  # fmt: skip
        flip_rate, fit = f"{row['flip_rate_all_text_attributes']:.3f}", f"{row['fit_seconds']:.0f}"
        rows.append([row["model"], row["planting"], f"{row['test_accuracy']:.3f}", flip_rate, flips, dps, fit, verdict])
    headers = ["model", "planting", "test acc", "flip rate, all text attributes", "flip rate per attribute [95 % CI]"]
    lines.append(format_table([*headers, "mean abs Δp per attribute", "fit (s)", "verdict"], rows, "md"))
    lines += ["", "Acceptance: " + ", ".join(f"{k}: {v}" for k, v in payload["acceptance"].items()), ""]
    return "\n".join(lines)


def _ci(e: dict[str, float]) -> str:
    return f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/shapes_color.yaml")
    parser.add_argument("--planting", choices=["train_names", "world"], default="train_names")
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="in one process: the main job's 2 x 32")
    parser.add_argument("--parallel", action="store_true", help="train the two models in two processes at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["planted", "clean"], default=None)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "counterfactual_acceptance.json"))
    parser.add_argument("extra", nargs="*", help="more config overrides after --, e.g. -- --trainer.max_epochs=2")
    args = parser.parse_args()
    names = [name for name in ("planted", "clean") if args.only in (None, name)]
    if args.parallel and len(names) > 1:
        results = run_in_parallel(names)
    else:
        with tempfile.TemporaryDirectory(prefix="cf-acceptance-") as tmp:
            results = [train_and_probe(name, args, Path(tmp)) for name in names]
    by_name = {r["model"]: r for r in results}
    acceptance = {}
    if "planted" in by_name:
        acceptance[f"planted flagged (max attribute flip rate >= {FLAGGED})"] = (
            by_name["planted"]["max_attribute_flip_rate"] >= FLAGGED
        )
    if "clean" in by_name:
        acceptance[f"clean passes (max attribute flip rate <= {PASSES})"] = (
            by_name["clean"]["max_attribute_flip_rate"] <= PASSES
        )
    payload = {
        "benchmark": "counterfactual_acceptance",
        "command": " ".join(["python", "benchmarks/counterfactual_acceptance.py", *sys.argv[1:]]),
        "config": args.config,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "only")},
        "environment": environment(),
        "acceptance": acceptance,
        "models": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(payload))
    print(markdown(payload))
    print(f"written to {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
