"""Export an experiment's model to torch.export and ONNX; check parity and time CPU inference at batch 1 and 32.

    python benchmarks/export_latency.py --config experiments/shapes_color.yaml --threads 1

Nothing is trained: the architecture of the experiment (random init) is saved with ``save_pretrained`` to a
temporary directory and passed to :func:`mmfuse.export.export_model`, exactly as ``mmfuse export`` would. Parity and
latency do not depend on the weights. Results go to ``benchmarks/results/export_latency.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from mmfuse.export import FORMATS, export_model
from mmfuse.provenance import collect_provenance
from mmfuse.training.cli import build_from_config

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["--trainer.devices=1", "--trainer.strategy=auto"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "shapes_color.yaml")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seq-len", type=int, default=16, help="text length of the timed inputs")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    args.config = args.config.resolve()  # relative to the working directory, recorded relative to the repo
    cli = build_from_config(args.config, OVERRIDES)  # seeds everything with the experiment's seed
    model = cli.model.model.eval()
    with tempfile.TemporaryDirectory(prefix="mmfuse-export-") as tmp:
        model_dir = model.save_pretrained(Path(tmp) / "model", cli.datamodule.tokenizer, cli.datamodule.spec)
        report = export_model(
            model_dir,
            Path(tmp) / "export",
            formats=args.formats,
            atol=args.atol,
            repeats=args.repeats,
            warmup=args.warmup,
            threads=args.threads,
            seq_len=args.seq_len,
        )
        markdown = (Path(tmp) / "export" / "export_report.md").read_text()
    report["model_dir"] = f"{args.config.relative_to(REPO)} (random init)"
    payload = {
        "config": str(args.config.relative_to(REPO)),
        "overrides": OVERRIDES,
        "seed": cli.config["seed_everything"],
        "resolved_config": {key: cli.config.as_dict()[key] for key in ("model", "data")},
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "provenance": collect_provenance(repo_dir=REPO, seed=cli.config["seed_everything"]),
        "report": report,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "export_latency.json"
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    git, hw = payload["provenance"]["git"], payload["provenance"]["hardware"]
    header = (
        f"Config `{payload['config']}` at {str(git.get('commit', '?'))[:10]}{' (dirty)' if git.get('dirty') else ''}; "
        f"{hw.get('processor')}, {hw.get('cpu_count')} logical CPUs; CPU flags {', '.join(hw.get('cpu_flags') or [])}"
    )
    markdown = markdown.replace(markdown.splitlines()[0], f"# Export latency: {payload['config']}\n\n{header}.", 1)
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
