"""Data-pipeline throughput of ``ImageTextDataModule``: images/s through the training DataLoader (decode, EXIF,
RGB, resize + centre crop, tokenise, collate), per worker count, plus the one-off prepare time and its cached reuse.

    python benchmarks/data_throughput.py                      # flickr8k subset + a generated 100k manifest
    python benchmarks/data_throughput.py --synthetic 0        # flickr8k subset only

Datasets: the Flickr8k subset in ``../shared/data/flickr8k-1k-small`` (skipped when absent) and a generated
image folder of ``--synthetic`` tiny JPEGs with a ``metadata.jsonl`` (generated once, cached under ``/tmp``).
Two warm-up batches (worker start-up) are timed separately; the throughput is over the next ``--batches``.
Results go to ``benchmarks/results/data_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmfuse.data.files import ImageTextDataModule
from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.manifest import load_manifest, prepare_manifest
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
WARMUP_BATCHES = 2


def generate_synthetic(root: Path, count: int, side: int = 32) -> Path:
    """``count`` tiny JPEGs in folders of 1000 plus ``metadata.jsonl`` (written last: its presence means complete)."""
    metadata = root / "metadata.jsonl"
    if metadata.is_file():
        return root
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        relative = f"images/{i // 1000:04d}/{i:07d}.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        Image.new("RGB", (side, side), color).save(root / relative, quality=90)
        lines.append(json.dumps({"file_name": relative, "text": f"a small square number {i % 977}", "label": i % 10}))
    tmp = metadata.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(metadata)
    return root


def time_prepare(source: FileSourceConfig, cache_dir: Path) -> dict[str, Any]:
    """Seconds of the first prepare (0-ish when a previous run cached it) and of a second, cached one."""
    start = time.perf_counter()
    path = prepare_manifest(source, cache_dir)
    first = time.perf_counter() - start
    start = time.perf_counter()
    prepare_manifest(source, cache_dir)
    second = time.perf_counter() - start
    manifest = load_manifest(path)
    records = sum(split["rows"] for split in manifest.splits.values())
    return {"records": records, "first_prepare_s": round(first, 3), "second_prepare_s": round(second, 4)}


def time_loader(source: FileSourceConfig, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """Images/s of the shuffled training loader with ``workers`` worker processes."""
    dm = ImageTextDataModule(
        source, image_size=args.image_size, batch_size=args.batch_size, num_workers=workers, cache_dir=str(args.cache)
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = iter(loader)
    start = time.perf_counter()
    for _ in range(WARMUP_BATCHES):
        next(batches)
    warmup = time.perf_counter() - start
    start, images = time.perf_counter(), 0
    for _ in range(min(args.batches, len(loader) - WARMUP_BATCHES)):
        images += len(next(batches))
    elapsed = time.perf_counter() - start
    del batches, loader
    return {"workers": workers, "images": images, "seconds": round(elapsed, 3),
            "images_per_s": round(images / elapsed, 1), "warmup_s": round(warmup, 3)}  # fmt: skip


def sources(args: argparse.Namespace) -> dict[str, FileSourceConfig]:
    found = {}
    if args.flickr.is_dir():
        found["flickr8k-1k-small"] = FileSourceConfig(
            format="captions_csv", root=str(args.flickr), split_sizes={"train": 800, "test": 200}
        )
    else:
        print(f"skipping the flickr8k subset: {args.flickr} not found")
    if args.synthetic > 0:
        root = generate_synthetic(
            args.synthetic_root or Path(f"/tmp/mmfuse-bench/synthetic-{args.synthetic}"), args.synthetic
        )
        found[f"synthetic-{args.synthetic}"] = FileSourceConfig(format="imagefolder", root=str(root))
    return found


def write_markdown(path: Path, record: dict[str, Any]) -> None:
    git = record["provenance"]["git"]
    hw = record["provenance"]["hardware"]
    lines = [
        "# Data-pipeline throughput",
        "",
        f"Commit `{str(git.get('commit', '?'))[:10]}`{' (dirty)' if git.get('dirty') else ''}; {hw['processor']}, "
        f"{hw['cpu_count']} logical CPUs (shared with other jobs while measured). "
        f"Batch {record['config']['batch_size']}, images resized and centre-cropped to "
        f"{record['config']['image_size']} px, shuffled training loader, {WARMUP_BATCHES} warm-up batches excluded "
        "(shown as warm-up).",
        "",
        _table(record["prepare"], {"dataset": "dataset", "records": "records", "first_prepare_s": "first prepare s",
                                   "second_prepare_s": "cached prepare s"}),
        "",
        _table(record["throughput"], {"dataset": "dataset", "workers": "workers", "images": "images",
                                      "images_per_s": "images/s", "warmup_s": "warm-up s"}),
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def _table(rows: list[dict[str, Any]], columns: dict[str, str]) -> str:
    """The ``columns`` (key -> header) of each row as a Markdown table, the numbers right-aligned."""
    cells = [[row[key] for key in columns] for row in rows]
    return format_table(list(columns.values()), cells, "md", "l" + "r" * (len(columns) - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flickr", type=Path, default=REPO.parent / "shared" / "data" / "flickr8k-1k-small")
    parser.add_argument("--synthetic", type=int, default=100_000, help="generated records (0 = none)")
    parser.add_argument("--synthetic-root", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/mmfuse-bench/cache"))
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=40, help="timed batches per configuration")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    prepare, throughput = [], []
    for name, source in sources(args).items():
        prepare.append({"dataset": name, **time_prepare(source, args.cache)})
        print(prepare[-1])
        for workers in args.workers:
            throughput.append({"dataset": name, **time_loader(source, args, workers)})
            print(throughput[-1])
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    record = {
        "provenance": collect_provenance(repo_dir=REPO),
        "config": config,
        "prepare": prepare,
        "throughput": throughput,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "data_throughput.json").write_text(json.dumps(record, indent=2) + "\n")
    write_markdown(args.results / "data_throughput.md", record)
    print(f"wrote {args.results / 'data_throughput.json'} and .md")


if __name__ == "__main__":
    main()
