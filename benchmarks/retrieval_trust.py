"""Trust checks of a trained retrieval model on real captions and photos: ``mmfuse probe counterfactual`` with the
gender terms of its test captions swapped, and ``mmfuse probe robustness`` (recall@5 under image corruptions and text
perturbations), each with its provenance.

    python benchmarks/retrieval_trust.py --config runs/flickr8k_finetune/version_0/config.yaml \\
        --ckpt runs/flickr8k_finetune/version_0/checkpoints/<best>.ckpt --split test

Writes ``benchmarks/results/<name>_gender_swap.{json,md}`` and ``<name>_robustness.{json,md,png}`` (``--name``
defaults to ``flickr8k``): the probe's report, the command, its wall time and threads, the checkpoint, the resolved
experiment config, and the provenance (git commit and whether the tree was dirty, library versions, machine and CPU
flags, seed). ``--n-gender`` and ``--n-robustness`` count images (each with every caption of it); the defaults take
the whole 1000-image Flickr8k test split. The gender probe's verdict (exit status 1 on FAIL) is recorded, not raised.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmfuse.commands import run_command
from mmfuse.experiment import load_config
from mmfuse.provenance import collect_provenance

REPO = Path(__file__).resolve().parents[1]


def run_probe(kind: str, argv: list[str]) -> tuple[int, float]:
    """Run ``mmfuse probe <kind> argv``; returns its exit status and wall seconds."""
    start = time.perf_counter()
    status = run_command("probe", [kind, *argv])
    return status, time.perf_counter() - start


def record(
    args: argparse.Namespace, command: list[str], seconds: float, report: dict[str, Any], work_dir: str
) -> dict[str, Any]:
    """The result file's content: how it was made (the probe's temporary ``--out`` shown as ``OUT``), the report, the
    resolved config and the provenance."""
    return {
        "checkpoint": str(args.ckpt),
        "command": "mmfuse probe " + " ".join(command).replace(work_dir, "OUT"),
        "seconds": round(seconds, 1),
        "threads": args.threads,
        **report,
        "config": load_config(args.config).to_dict(),  # resolved: base file merged, every default spelled out
        "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
    }


def provenance_line(rec: dict[str, Any]) -> str:
    """One Markdown paragraph: command, time, commit, seed, machine and CPU flags."""
    prov = rec["provenance"]
    git, hw = prov["git"], prov["hardware"]
    commit = str(git.get("commit") or git.get("error"))[:10] + (" (dirty tree)" if git.get("dirty") else "")
    return (
        f"Checkpoint `{rec['checkpoint']}`; `{rec['command']}` ({rec['seconds']:.0f} s, {rec['threads']} threads); "
        f"commit {commit}, seed {prov['seed']}; {hw.get('processor')} x{hw.get('cpu_count')} (flags "
        f"{hw.get('cpu_flags')}), torch {prov['packages'].get('torch')}."
    )


def write(out: Path, stem: str, rec: dict[str, Any], markdown: str) -> list[Path]:
    """``<stem>.json`` and ``<stem>.md`` (the probe's Markdown under a provenance paragraph)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(rec, indent=2, ensure_ascii=False) + "\n")
    title, _, body = markdown.partition("\n")
    md_path.write_text(f"{title}: {stem}\n\n{provenance_line(rec)}\n{body}")
    return [json_path, md_path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--config", type=Path, required=True, help="the run's config.yaml (or the experiment YAML)")
    add("--ckpt", type=Path, required=True)
    add("--name", default="flickr8k", help="result file prefix")
    add("--split", default="test")
    add("--n-gender", type=int, default=1000, help="images of the gender-swap probe")
    add("--n-robustness", type=int, default=1000, help="images of the robustness probe")
    add("--severities", nargs="+", default=["1", "2", "3", "4", "5"])
    add("--image-corruptions", nargs="*", default=None)
    add("--text-perturbations", nargs="*", default=None)
    add("--tolerance", default="0.02", help="largest top-1 flip rate of the gender swap that passes")
    add("--n-boot", type=int, default=1000)
    add("--batch-size", type=int, default=64)
    add("--device", default="cpu")
    add("--seed", type=int, default=0)
    add("--threads", type=int, default=torch.get_num_threads())
    add("--only", choices=["gender", "robustness"], default=None, help="run one of the two probes")
    add("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    common = ["--config", str(args.config), "--ckpt", str(args.ckpt), "--split", args.split, "--seed", str(args.seed),
              "--n-boot", str(args.n_boot), "--batch-size", str(args.batch_size), "--device", args.device]  # fmt: skip
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="retrieval-trust-") as tmp:
        if args.only in (None, "gender"):
            out = Path(tmp) / "gender"
            command = ["counterfactual", *common, "--out", str(out), "--n", str(args.n_gender), "--attributes",
                       "gender", "--tolerance", args.tolerance, "--show", "10"]  # fmt: skip
            status, seconds = run_probe(command[0], command[1:])
            report = json.loads((out / "counterfactual.json").read_text())
            rec = record(args, command, seconds, {"exit_status": status, **report}, tmp)
            written += write(args.results, f"{args.name}_gender_swap", rec, (out / "counterfactual.md").read_text())
        if args.only in (None, "robustness"):
            out = Path(tmp) / "robustness"
            command = ["robustness", *common, "--out", str(out), "--n", str(args.n_robustness), "--severities",
                       *args.severities]  # fmt: skip
            if args.image_corruptions is not None:
                command += ["--image-corruptions", *args.image_corruptions]
            if args.text_perturbations is not None:
                command += ["--text-perturbations", *args.text_perturbations]
            _, seconds = run_probe(command[0], command[1:])
            stem = f"{args.name}_robustness"
            rec = record(args, command, seconds, json.loads((out / "robustness.json").read_text()), tmp)
            markdown = (out / "robustness.md").read_text().replace("(robustness.png)", f"({stem}.png)")
            written += write(args.results, stem, rec, markdown)
            shutil.copyfile(out / "robustness.png", args.results / f"{stem}.png")
            written.append(args.results / f"{stem}.png")
    print("written: " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
