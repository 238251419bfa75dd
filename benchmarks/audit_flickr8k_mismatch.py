"""Caption-image mismatch detection of ``mmfuse audit`` on Flickr8k with planted caption swaps.

    python benchmarks/audit_flickr8k_mismatch.py --config RUN/config.yaml --ckpt RUN/checkpoints/X.ckpt
    python benchmarks/audit_flickr8k_mismatch.py --config ... --ckpt ... --splits train test --itm

For each split of ``--splits`` (a retrieval run's data: Flickr8k-1k, 800 training and 200 test images with 5
captions each): ``--fraction`` (10 %) of its caption rows, drawn with ``--seed``, swap their captions among
themselves so that every chosen caption moves to a row of another image; the detector of ``mmfuse audit``
(:func:`mmfuse.audit.audit_captions` on the embeddings of :func:`mmfuse.audit.extract_retrieval_features`, with the
audit's default settings) then flags rows of the swapped split, and its flags are scored against the swapped rows:
precision and recall with Wilson intervals, the average precision of the ranking, and the estimated against the
planted mismatched fraction. For comparison, confident learning (``cleanlab.filter.find_label_issues``,
``prune_by_noise_rate``) is run on the same probe's probabilities of the real and random pairs.

Which setting a split measures: the model was trained on the unswapped training split, so ``train`` is the
optimistic setting (its pairs were learnt, so a swapped caption fits its new image very badly); ``test`` is held
out: its pairs were never seen, and the model's retrieval there is far from perfect.

Writes ``benchmarks/results/audit_flickr8k_mismatch.{json,md}`` with the commit, the config, the seed, the machine
and its CPU flags (:func:`mmfuse.provenance.collect_provenance`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.io import read_yaml, write_atomic, write_json
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
NAME = "audit_flickr8k_mismatch"
ACCEPT = {"precision": 0.8, "recall": 0.7}
SETTING = {
    "train": "optimistic: the model was trained on this split's unswapped pairs",
    "test": "held out: the model never saw this split's pairs",
}


def plant_swaps(image_of: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose captions are swapped, and where each takes its caption from.

    Args:
        image_of: (n,) each row's image.
        fraction: share of the rows swapped.
        seed: seed of the draw.

    Returns:
        (m,) the chosen rows (sorted) and (m,) the row whose caption each receives, always of another image.
    """
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(image_of), size=int(round(fraction * len(image_of))), replace=False))
    source = chosen[rng.permutation(len(chosen))]
    for _ in range(100):  # repair rows that kept a caption of their own image by swapping with a random partner
        clash = np.flatnonzero(image_of[source] == image_of[chosen])
        if not len(clash):
            return chosen, source
        for i in clash:
            j = rng.integers(len(chosen))
            source[i], source[j] = source[j], source[i]
    raise SystemExit("could not move every chosen caption to another image; use a smaller --fraction")


def measure(inputs: Any, split: Any, cfg: Any, args: argparse.Namespace, fraction: float, seed: int) -> dict[str, Any]:
    """Swap ``fraction`` of the rows of ``split`` (``seed``), read the embeddings of the swapped split (``args``: the
    audit command's batch size and device), detect, and score."""
    from sklearn.metrics import average_precision_score

    from mmfuse.audit import AuditReport, audit_captions
    from mmfuse.commands.audit import read_retrieval_features

    chosen, source = plant_swaps(split.image_of(), fraction, seed)
    texts = list(split.texts)
    for row, giver in zip(chosen.tolist(), source.tolist()):
        texts[row] = split.texts[giver]
    swapped = dataclasses.replace(split, texts=texts)
    truth = np.zeros(len(split), dtype=bool)
    truth[chosen] = True
    start = time.perf_counter()
    features = read_retrieval_features(inputs, {split.name: swapped}, cfg, args)
    read_seconds = time.perf_counter() - start
    report = AuditReport((), cfg)
    audit_captions(report, {split.name: swapped}, features, {split.name: truth})
    found = report.caption_mismatches[split.name]
    assert found.ground_truth is not None
    gt = found.ground_truth
    return {
        "split": split.name, "setting": SETTING.get(split.name, "other"), "captions": found.n,
        "images": found.num_images, "swapped": int(truth.sum()), "flagged": len(found.indices),
        "true_positives": gt.true_positives, "precision": gt.precision.as_dict(), "recall": gt.recall.as_dict(),
        "average_precision": round(float(average_precision_score(truth, found.posterior)), 4),
        "estimated_mismatch_fraction": found.prior.as_dict(), "planted_fraction": round(float(truth.mean()), 4),
        "separation_auc": round(found.separation, 4), "features": list(found.feature_names),
        "confident_learning": confident_learning(features[split.name], swapped, truth, cfg),
        "embedding_seconds": round(read_seconds, 1), "detector_seconds": round(report.seconds["caption_mismatches"], 1),
        "passes_precision": (gt.precision.estimate or 0.0) >= ACCEPT["precision"],
        "passes_recall": (gt.recall.estimate or 0.0) >= ACCEPT["recall"],
    }  # fmt: skip


def confident_learning(features: Any, split: Any, truth: np.ndarray, cfg: Any) -> dict[str, Any]:
    """Confident learning on the probe's probabilities: real pairs given ``matched``, random pairs ``not
    matched``; the real pairs it finds are scored against the swaps."""
    from cleanlab.filter import find_label_issues

    from mmfuse.audit.caption_mismatch import mismatch_probabilities
    from mmfuse.audit.label_errors import detection_score
    from mmfuse.audit.report import other_images

    found = mismatch_probabilities(features, other_images(split, cfg), cfg.folds, cfg.seed)
    n = len(found.random_pair)
    g = np.r_[found.random_pair, found.random_pairs.reshape(-1)]  # P(random pair)
    given = np.r_[np.ones(n, dtype=np.int64), np.zeros(g.size - n, dtype=np.int64)]  # 1 = matched
    probs = np.stack([g, 1.0 - g], axis=1)  # (P, 2) columns: not matched, matched
    issues = find_label_issues(given, probs, filter_by="prune_by_noise_rate", n_jobs=1)  # (P,) bool
    flagged = np.flatnonzero(issues[:n]).tolist()
    score = detection_score(flagged, truth, cfg.level)
    return {"flagged": len(flagged), **score.as_dict()}


def markdown(result: dict[str, Any]) -> str:
    rows = []
    for r in result["settings"]:
        p, rc, est = r["precision"], r["recall"], r["estimated_mismatch_fraction"]
        cl = r["confident_learning"]
        rows.append([
            f"{r['split']} ({r['setting'].split(':')[0]})", f"{r['swapped']} / {r['captions']}", r["flagged"],
            f"{p['estimate']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]",
            f"{rc['estimate']:.3f} [{rc['ci_low']:.3f}, {rc['ci_high']:.3f}]", f"{r['average_precision']:.3f}",
            f"{est['estimate']:.3f} [{est['ci_low']:.3f}, {est['ci_high']:.3f}]",
            f"{cl['precision']['estimate'] or 0:.3f} / {cl['recall']['estimate'] or 0:.3f}",
        ])  # fmt: skip
    headers = ["split (setting)", "swapped", "flagged", "precision", "recall", "AP", "est. fraction",
               "cleanlab P / R"]  # fmt: skip
    prov, hw = result["provenance"], result["provenance"]["hardware"]
    git = prov["git"]
    lines = [
        f"# Audit: caption-image mismatches on Flickr8k ({100 * result['fraction']:g} % of captions swapped)",
        "",
        f"Checkpoint `{result['ckpt']}` with `{result['config']}`; swap seed {result['seed']}; detector settings "
        f"{result['detector']}. Intervals: Wilson, {round(100 * result['level'])} %. Acceptance: precision >= "
        f"{ACCEPT['precision']}, recall >= {ACCEPT['recall']}.",
        "",
        format_table(headers, rows, "md", "l" + "r" * (len(headers) - 1)),
        "",
        "**Read the training row as the optimistic setting**: the model was trained on the unswapped training split, "
        "so every original pair there was learnt and a swapped caption fits its new image much worse than a caption "
        "the model never saw would. The test row is held out (the model never saw those pairs; its text-to-image "
        "recall@1 there is far below 1) and is the better guide to data the model was not trained on.",
        "",
        "AP: average precision of the ranking by estimated mismatch probability (threshold-free). Est. fraction: the "
        "detector's estimate of the mismatched share of the split (bootstrap over images), to compare with the "
        "planted share. Cleanlab P / R: confident learning (`find_label_issues`, `prune_by_noise_rate`) on the same "
        "probe's probabilities of real and random pairs, for comparison.",
        "",
        f"Machine: {hw.get('processor')} x{hw.get('cpu_count')} (flags {hw.get('cpu_flags')}), "
        f"{hw.get('torch_num_threads')} torch threads; load average {result['load_before']} before, "
        f"{result['load_after']} after. Commit {str(git.get('commit'))[:10]}"
        f"{' (dirty tree)' if git.get('dirty') else ''}.",
        "",
        "Cost (s): "
        + "; ".join(
            f"{r['split']}: embeddings {r['embedding_seconds']:.0f}, detector {r['detector_seconds']:.1f}"
            for r in result["settings"]
        ),  # fmt: skip
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the retrieval run's config.yaml")
    parser.add_argument("--ckpt", type=Path, required=True, help="its checkpoint")
    parser.add_argument("--splits", nargs="+", default=["train"], help="splits to plant swaps in (train, test)")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of caption rows swapped")
    parser.add_argument("--seed", type=int, default=0, help="seed of the swaps")
    parser.add_argument("--itm", action="store_true", help="also read the ITM head's match probabilities")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / NAME, help="scratch directory (not written)")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if not 0.0 < args.fraction < 1.0:
        parser.error(f"--fraction {args.fraction}: must lie strictly between 0 and 1")

    from mmfuse.audit import AuditConfig, splits_of
    from mmfuse.commands import audit as command
    from mmfuse.provenance import collect_provenance

    audit_args = argparse.ArgumentParser()
    command.add_arguments(audit_args)
    given = ["--config", str(args.config), "--ckpt", str(args.ckpt), "--out", str(args.work),
             "--batch-size", str(args.batch_size), "--device", args.device]  # fmt: skip
    cmd_args = audit_args.parse_args(given)
    cfg = AuditConfig(caption_itm=args.itm)
    load_before = [round(x, 2) for x in os.getloadavg()]
    inputs = command.prepare(cmd_args, need_model=True)
    splits = splits_of(inputs.datamodule, args.splits)
    settings = [measure(inputs, split, cfg, cmd_args, args.fraction, args.seed) for split in splits.values()]
    fingerprint = inputs.datamodule.fingerprint() if hasattr(inputs.datamodule, "fingerprint") else None
    result = {
        "fraction": args.fraction, "seed": args.seed, "level": cfg.level, "ckpt": str(args.ckpt),
        "config": str(args.config), "model": inputs.origin,
        "detector": {k: getattr(cfg, k) for k in ("caption_negatives", "caption_mismatch_threshold", "caption_itm",
                                                  "folds", "seed")},
        "accept": ACCEPT, "settings": settings, "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "resolved_config": read_yaml(args.config, "--config"),
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed, data_fingerprint=fingerprint),
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"{NAME}.json", result)
    text = markdown(result)
    write_atomic(args.results / f"{NAME}.md", text)
    print(text)


if __name__ == "__main__":
    main()
