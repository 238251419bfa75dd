"""How far attribution maps move when they are made under bf16 or fp16 autocast: the rank agreement with the fp32
maps per method that ``mmfuse explain --precision`` reports, on N examples of a trained model, plus provenance.

    python benchmarks/explain_precision.py --config runs/shapes_color/version_0/config.yaml \\
        --ckpt runs/shapes_color/version_0/checkpoints/<best>.ckpt --label shapes_color --n 64
    python benchmarks/explain_precision.py --config runs/flickr8k_finetune/version_0/config.yaml \\
        --ckpt runs/flickr8k_finetune/version_0/checkpoints/<best>.ckpt --label flickr8k_retrieval --n 32

Every method explains each example once in fp32 and once under each reduced precision, for the same class: the
model's fp32 answer (a retrieval model: the ITM match logit of the image-caption pair). Per example, the Spearman
correlation between the two maps (image: patch grid; text: real tokens), then its mean with a bootstrap 95%
interval, the share of examples whose fp32 peak stays a peak, and the largest gap between the normalised maps
(:func:`mmfuse.attribution.amp.agreement_report`). ``mmfuse explain --precision`` explains the answer at the
reduced precision instead; the two agree wherever that answer is the fp32 one (``answers_changed`` counts the
others). A precision whose autocast does not run on the device (fp16 on a CPU whose torch lacks it, bf16 on a GPU
without bf16 units) is recorded as not supported, with the reason.

Writes ``benchmarks/results/explain_precision_<label>.json`` (figures, seconds per precision, ``fp32_accuracy``: the
share of examples whose fp32 answer is their label, for a retrieval model the true pairs its ITM head calls a match;
the command-line settings, the resolved config, commit, library versions, machine with its CPU flags, seed) and
``.md``. fp16 on a CPU without fp16 units is slow (its convolutions take a reference path), so
``--precisions bf16-mixed`` leaves it out.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from mmfuse.attribution.amp import PRECISIONS, agreement_report, unsupported_reason
from mmfuse.commands import explain
from mmfuse.experiment import load_config
from mmfuse.heads import MATCH
from mmfuse.io import write_atomic, write_json
from mmfuse.provenance import collect_provenance
from mmfuse.stats import Interval
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
REDUCED = [name for name, dtype in PRECISIONS.items() if dtype is not None]


def measure(inputs: explain.ExplainInputs, precisions: list[str], batch_size: int, seed: int) -> dict[str, Any]:
    """fp32 maps once, then per reduced precision its maps and their agreement with the fp32 ones."""
    device = next(inputs.model.parameters()).device
    start = time.perf_counter()
    fp32 = explain.explain_examples(inputs, batch_size, "32-true")
    fp32_s = time.perf_counter() - start
    classes = torch.full_like(fp32.predictions, MATCH) if inputs.is_retrieval else fp32.predictions
    results: dict[str, Any] = {}
    for precision in precisions:
        dtype = PRECISIONS[precision]
        assert dtype is not None
        reason = unsupported_reason(device, dtype)
        if reason is not None:
            results[precision] = {"supported": False, "reason": reason}
            print(f"{precision}: not supported ({reason})")
            continue
        start = time.perf_counter()
        answers = explain.predict_classes(inputs.model, fp32.batch, batch_size, precision)
        maps = explain.explain_batch(inputs, fp32.batch, classes, batch_size, precision)
        seconds = time.perf_counter() - start
        agreement = agreement_report(maps, fp32.attributions, fp32.batch.attention_mask, precision, seed=seed)
        changed = int((answers != fp32.predictions).sum())
        results[precision] = {"supported": True, "seconds": round(seconds, 1), "answers_changed": changed, **agreement}
        print(f"{precision}: {seconds:.0f} s, {changed} answers changed")
    labels = fp32.batch.labels
    accuracy = None if labels is None else float((fp32.predictions == labels).float().mean())
    return {"fp32_seconds": round(fp32_s, 1), "fp32_accuracy": accuracy, "precisions": results}


def to_markdown(record: dict[str, Any]) -> str:
    """The result as a Markdown page: one row per method and map, one column pair per precision."""
    precisions = record["precisions"]
    supported = [p for p, r in precisions.items() if r["supported"]]
    keys = dict.fromkeys((m, mod) for p in supported for m, mods in precisions[p]["methods"].items() for mod in mods)
    rows = []
    for method, modality in keys:
        cells: list[str] = [method, modality]
        for p in supported:
            values = precisions[p]["methods"].get(method, {}).get(modality)
            if values is None:
                cells += ["–", "–"]
                continue
            s = values["spearman"]
            cells += [Interval(s["mean"], s["ci_low"], s["ci_high"], s["n"]).format(), f"{values['same_peak']:.2f}"]
        rows.append(cells)
    headers = ["method", "map", *(h for p in supported for h in (f"ρ {p} vs fp32", f"same peak {p}"))]
    hw, git = record["provenance"]["hardware"], record["provenance"]["git"]
    commit = f"`{str(git.get('commit'))[:7]}`" + (" (uncommitted changes)" if git.get("dirty") else "")
    flags = ", ".join(hw.get("cpu_flags") or []) or "not read"
    lines = [
        f"# Explanations in mixed precision: {record['label']}",
        "",
        f"`{record['config_path']}`, checkpoint `{record['checkpoint']}`; {record['n_examples']} examples of the "
        f"{record['split']} split, target: {record['target']}; {record['device']}, {record['threads']} threads, "
        f"seed {record['seed']}; commit {commit}; {hw['processor']} x {hw['cpu_count']} (flags {flags}); "
        f"torch {record['provenance']['packages']['torch']}.",
        "",
        "Spearman ρ between each example's reduced-precision map and its fp32 map (image: patch grid; text: real "
        "tokens), mean [bootstrap 95% CI over examples]; same peak: share of examples whose fp32 maximum is also a "
        "maximum of the reduced-precision map.",
        "",
        format_table(headers, rows, "md", align="ll" + "rr" * len(supported)),
        "",
        f"fp32 maps: {record['fp32_seconds']:.0f} s.",
    ]
    for p, result in precisions.items():
        if result["supported"]:
            lines.append(f"{p}: {result['seconds']:.0f} s; answers that differ from fp32: {result['answers_changed']}.")
        else:
            lines.append(f"{p}: not supported here ({result['reason']}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the run's config.yaml (or experiment YAML)")
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--label", required=True, help="names the result files: explain_precision_<label>")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--split", default=None, help="default: val, else the data's validation split")
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--precisions", nargs="+", default=REDUCED, choices=REDUCED)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    argv = ["--config", str(args.config), "--ckpt", str(args.ckpt), "--n", str(args.n), "--device", args.device]
    argv += ["--seed", str(args.seed), *(["--split", args.split] if args.split else [])]
    argv += ["--methods", *args.methods] if args.methods else []
    command = argparse.ArgumentParser()
    explain.add_arguments(command)
    # NOTE: the command requires an output folder; preparing the inputs writes nothing there.
    inputs = explain.prepare(command.parse_args([*argv, "--out", os.devnull]))
    measured = measure(inputs, args.precisions, args.batch_size, args.seed)
    record = {
        "label": args.label,
        "config_path": str(args.config),
        "checkpoint": str(args.ckpt),
        "split": inputs.split,
        "n_examples": len(inputs.indices),
        "methods": inputs.methods,
        "target": "the ITM match logit" if inputs.is_retrieval else "the fp32 answer's logit",
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "seed": args.seed,
        **measured,
        "config": load_config(args.config).to_dict(),  # resolved: every default spelled out
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    json_path = write_json(args.results / f"explain_precision_{args.label}.json", record)
    write_atomic(json_path.with_suffix(".md"), to_markdown(record))
    print(f"wrote {json_path} and {json_path.with_suffix('.md')}")


if __name__ == "__main__":
    main()
