"""Streaming at scale: 100,000 shapes-world pairs written as WebDataset shards in the img2dataset layout, read back
through :class:`~mmfuse.data.streaming.StreamDataset` (decode, resize, tokenise, collate) in data-loader workers.

    python benchmarks/stream_throughput.py                       # 100k pairs at 64 px, 5k at 224 px
    python benchmarks/stream_throughput.py --pairs 20000 --skip-epoch

Reports, into ``benchmarks/results/stream_throughput.{json,md}``:

* loader throughput, samples/s over ``--batches`` batches of 32 after 2 warm-up batches, with 1 and 2 workers, at
  64 px (the 100k shards, stored at 64 px) and at 224 px (shards stored at 224 px), next to the samples/s one
  training step consumes: the main job's model at 64 px and the base-size model (ViT-B/16 + BERT-base) at 224 px,
  fp32 (plain forward, backward and AdamW steps on batches in memory);
* time to the first batch, with the row counts not yet cached (a fresh cache: every shard is read once to count it)
  and cached;
* the memory (proportional set size of the main process plus its workers) sampled over a whole epoch of the 100k
  pairs: it should stay flat, since rows are read shard by shard through a bounded shuffle buffer.

The shards are generated once under ``--out`` (default ``/tmp/mmfuse-stream-bench``) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mmfuse.bench.amp import prepare_model
from mmfuse.bench.config import get_precision
from mmfuse.bench.precision import TrainStep, synthetic_batches
from mmfuse.bench.sizes import get_size
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.image_text import SkipBadCollator
from mmfuse.data.shapes import ShapesWorldConfig, text_vocabulary
from mmfuse.data.shards import write_shapes_shards
from mmfuse.data.streaming import StreamDataset, StreamSource, StreamSourceConfig
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
WARMUP = 2
BATCH = 32


def shards(out: Path, pairs: int, shard_size: int, side: int) -> tuple[Path, float]:
    """The shard directory for ``pairs`` pairs of ``side`` px (generated unless complete) and the seconds taken."""
    directory = out / f"{pairs}x{side}px"
    done = directory / "COMPLETE"
    if done.is_file():  # generated before: the time it took then
        return directory, json.loads(done.read_text())["seconds"]
    shutil.rmtree(directory, ignore_errors=True)
    scale = side / 64
    world = ShapesWorldConfig(image_size=side, min_object_size=int(10 * scale), max_object_size=int(16 * scale))
    start = time.perf_counter()
    write_shapes_shards(directory, pairs, shard_size, world)
    seconds = time.perf_counter() - start
    done.write_text(json.dumps({"pairs": pairs, "seconds": seconds}))
    return directory, seconds


def loader(directory: Path, cache: Path, side: int, workers: int, tokenizer: Any) -> DataLoader:
    source = StreamSource(StreamSourceConfig("webdataset", str(directory), columns={"label": "json.label"}), cache)
    stream = StreamDataset([source], "train", BATCH, side, seed=0, buffer_size=1000)
    collate = SkipBadCollator(ImageTextCollator(tokenizer))
    return DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=collate, generator=torch.Generator())


def throughput(make: Any, batches: int) -> float:
    iterator = iter(make())
    for _ in range(WARMUP):
        next(iterator)
    start, samples = time.perf_counter(), 0
    for batch in islice(iterator, batches):
        samples += len(batch)
    return samples / (time.perf_counter() - start)


def first_batch_s(make: Any) -> float:
    start = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start


def _pss_bytes(pid: int) -> int:
    """Proportional set size: resident pages, each shared page divided among the processes sharing it (forked
    workers share the parent's pages; their plain RSS would count them again)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def epoch_rss(make: Any, every: int) -> dict[str, Any]:
    """Memory (PSS) of this process and its workers every ``every`` batches of one whole epoch."""
    pid, points, samples = os.getpid(), [], 0
    start = time.perf_counter()
    for i, batch in enumerate(make(), 1):
        samples += len(batch)
        if i % every == 0:
            workers = sum(_pss_bytes(c) for c in _children(pid))
            points.append({"batches": i, "samples": samples, "main_mib": _pss_bytes(pid) / 2**20,
                           "workers_mib": workers / 2**20})  # fmt: skip
    seconds = time.perf_counter() - start
    totals = [p["main_mib"] + p["workers_mib"] for p in points]
    return {"samples": samples, "seconds": round(seconds, 1), "samples_per_s": round(samples / seconds, 1),
            "points": [{k: round(v, 1) for k, v in p.items()} for p in points],
            "total_mib_first": round(totals[0], 1), "total_mib_last": round(totals[-1], 1),
            "total_mib_max": round(max(totals), 1)}  # fmt: skip


def training_rate(size_name: str, batch_size: int, steps: int) -> dict[str, Any]:
    """Samples/s of fp32 training steps of a benchmark size on batches in memory (after 2 warm-up steps)."""
    size = get_size(size_name)
    prepared = prepare_model(size, torch.device("cpu"))
    step = TrainStep(prepared.reset(), get_precision("32-true"), torch.device("cpu"), lr=1e-4)
    batches = synthetic_batches(size, batch_size, count=2)
    for i in range(WARMUP):
        step(batches[i % 2])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step(batches[i % 2])
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"size": size_name, "image_size": size.spec.image_size, "batch_size": batch_size, "step_s": round(median, 3),
            "samples_per_s": round(batch_size / median, 1), "description": size.description}  # fmt: skip


def write_markdown(path: Path, record: dict[str, Any]) -> None:
    prov = record["provenance"]
    git, hw = prov["git"], prov["hardware"]
    train = {r["image_size"]: r for r in record["training"]}
    rows = []
    for r in record["throughput"]:
        consumer = train.get(r["image_size"])
        ratio = f"{r['samples_per_s'] / consumer['samples_per_s']:.1f}x" if consumer else "-"
        model, rate = (consumer["size"], consumer["samples_per_s"]) if consumer else ("-", "-")
        rows.append([f"{r['image_size']} px", r["workers"], r["samples_per_s"], model, rate, ratio])
    lines = [
        "# Streaming WebDataset shards: loader throughput, first batch, memory over an epoch",
        "",
        f"Commit `{str(git.get('commit', '?'))[:10]}`{' (dirty)' if git.get('dirty') else ''}; {hw.get('processor')}, "
        f"{hw.get('cpu_count')} logical CPUs; CPU flags {', '.join(hw.get('cpu_flags') or []) or 'n/a'}; torch threads "
        f"{record['torch_threads']}; batch {BATCH}; seed 0. Command: `{record['command']}`.",
        "",
        f"Shards: {record['pairs']} pairs at 64 px in shards of {record['shard_size']} (img2dataset layout), and "
        f"{record['pairs_224']} pairs at 224 px; generated in {record['generation_s']['64px']:.0f} s and "
        f"{record['generation_s']['224px']:.0f} s.",
        "",
        "## Loader throughput next to what a training step consumes (fp32, one process)",
        "",
        format_table(
            ["images", "workers", "loader samples/s", "model", "training samples/s", "loader / training"],
            rows,
            "md",
            "lrrlrr",
        ),  # fmt: skip
        "",
        "## Time to the first batch (64 px shards)",
        "",
        format_table(
            ["row counts", "workers", "seconds"],
            [[r["counts"], r["workers"], r["seconds"]] for r in record["first_batch"]],
            "md",
            "lrr",
        ),
        "",
    ]
    epoch = record.get("epoch")
    if epoch:
        lines += [
            f"## Memory (PSS: shared pages divided among the processes) over a whole epoch ({epoch['samples']} "
            f"samples, {epoch['workers']} workers, "
            f"{epoch['samples_per_s']} samples/s)",
            "",
            format_table(
                ["batches", "samples", "main MiB", "workers MiB"],
                [[p["batches"], p["samples"], p["main_mib"], p["workers_mib"]] for p in epoch["points"]],
                "md",
                "rrrr",
            ),  # fmt: skip
            "",
            f"Total: {epoch['total_mib_first']} MiB at the first sample point, {epoch['total_mib_last']} MiB at "
            f"the last, {epoch['total_mib_max']} MiB at most.",
        ]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--pairs-224", type=int, default=5_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=60, help="timed batches per throughput cell")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--skip-epoch", action="store_true", help="leave out the whole-epoch memory run")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mmfuse-stream-bench"))
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    small, gen_small = shards(args.out, args.pairs, args.shard_size, 64)
    large, gen_large = shards(args.out, args.pairs_224, args.shard_size, 224)
    tokenizer = train_word_tokenizer(text_vocabulary(ShapesWorldConfig()))
    cache = args.out / "cache"

    first = []
    for workers in (1, 2):
        fresh = args.out / f"fresh-cache-{workers}"
        shutil.rmtree(fresh, ignore_errors=True)
        make = partial(loader, small, fresh, 64, workers, tokenizer)
        first.append({"counts": "not cached", "workers": workers, "seconds": round(first_batch_s(make), 2)})
        first.append({"counts": "cached", "workers": workers, "seconds": round(first_batch_s(make), 2)})
        print(first[-2:])
    epoch = None
    if not args.skip_epoch:  # first, while this process holds no model
        epoch = epoch_rss(partial(loader, small, cache, 64, 2, tokenizer), every=200)
        epoch["workers"] = 2
        print({k: v for k, v in epoch.items() if k != "points"})
    loader(large, cache, 224, 0, tokenizer).dataset.sources[0].shard_rows  # noqa: B018  (counted outside the timing)

    cells = []
    for side, directory in ((64, small), (224, large)):
        for workers in (1, 2):
            rate = throughput(partial(loader, directory, cache, side, workers, tokenizer), args.batches)
            cells.append({"image_size": side, "workers": workers, "samples_per_s": round(rate, 1)})
            print(cells[-1])
    training = [training_rate("small", BATCH, args.steps), training_rate("base", 8, args.steps)]
    print(training)
    record = {
        "provenance": collect_provenance(seed=0, repo_dir=REPO),
        "command": "python benchmarks/stream_throughput.py" + (" --skip-epoch" if args.skip_epoch else ""),
        "torch_threads": torch.get_num_threads(),
        "pairs": args.pairs, "pairs_224": args.pairs_224, "shard_size": args.shard_size, "batch_size": BATCH,
        "generation_s": {"64px": gen_small, "224px": gen_large},
        "first_batch": first, "throughput": cells, "training": training, "epoch": epoch,
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "stream_throughput.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    write_markdown(args.results / "stream_throughput.md", record)
    print(f"wrote {args.results / 'stream_throughput.json'} and .md")


if __name__ == "__main__":
    main()
