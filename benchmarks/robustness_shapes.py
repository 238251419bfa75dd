"""Robustness outside the lab of a trained shapes-world model: ``mmfuse probe robustness`` on its test split and on
the world's shifted split, kept as ``benchmarks/results/robustness_<name>.{json,md,png}``.

    python benchmarks/robustness_shapes.py --config /work/ckpt/shapes_color/version_0/config.yaml \\
        --ckpt /work/ckpt/shapes_color/version_0/checkpoints/epoch02-acc0.9795.ckpt --n 500

The world is the checkpoint's own with ``shift: true`` added (a ``shift`` split: grey background, pixel noise and
colour-shape pairs never seen in training; the other splits then leave those pairs out too).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--name", default="shapes_color")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    from mmfuse.commands import run_command
    from mmfuse.provenance import collect_provenance

    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        argv = ["robustness", "--config", args.config, "--ckpt", args.ckpt, "--out", tmp, "--n", str(args.n)]
        argv += ["--seed", str(args.seed), "--data.world.shift", "true"]
        start = time.perf_counter()
        run_command("probe", argv)
        seconds = time.perf_counter() - start
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report = json.loads((Path(tmp) / "robustness.json").read_text())
        report["benchmark"] = {
            "command": " ".join(["python", "benchmarks/robustness_shapes.py", *sys.argv[1:]]),
            "probe_seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
            "provenance": collect_provenance(repo_dir=REPO, seed=args.seed),
        }  # fmt: skip
        stem = f"robustness_{args.name}"
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        markdown = (Path(tmp) / "robustness.md").read_text().replace("(robustness.png)", f"({stem}.png)")
        header = f"`{report['benchmark']['command']}` ({seconds:.0f} s, {torch.get_num_threads()} threads).\n\n"
        (out / f"{stem}.md").write_text(markdown.replace("\n\n", "\n\n" + header, 1))
        shutil.copyfile(Path(tmp) / "robustness.png", out / f"{stem}.png")
    print(f"written: {out / stem}.json, .md, .png")


if __name__ == "__main__":
    main()
