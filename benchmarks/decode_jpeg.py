"""JPEG decoding at 224 px: mmfuse's PIL path against ``torchvision.io.decode_jpeg``, in a DataLoader with 0, 1 and
2 workers, on the real photos of ``../shared/data/flickr8k-1k-small``.

    python benchmarks/decode_jpeg.py

Both paths turn a file into the (3, 224, 224) uint8 tensor a batch is made of, resized so that the shorter side is
224 (bicubic, antialiased) and centre-cropped:

* ``pil``: :func:`mmfuse.data.images.decode_image` (PIL: ``draft`` for large JPEGs, EXIF orientation, every mode
  to RGB, the pixel limit), then to a tensor;
* ``torchvision``: ``torchvision.io.decode_jpeg(read_file(path), mode=RGB)``, then ``torchvision.transforms.v2``'s
  ``resize`` and ``center_crop`` on the tensor.

Images/s over all photos, batches of 32, the two paths taking turns, median of ``--repeats``; the mean absolute
difference between their pixels says whether they give the same images. The samples/s one fp32 training step
consumes is read from ``benchmarks/results/stream_throughput.json`` (measured on this kind of machine). Results go
to ``benchmarks/results/decode_jpeg.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from mmfuse.data.images import decode_image
from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "flickr8k-1k-small" / "images"
SIDE = 224


def pil(path: str) -> torch.Tensor:
    return torch.from_numpy(np.asarray(decode_image(path, SIDE))).permute(2, 0, 1).contiguous()


def tv(path: str) -> torch.Tensor:
    image = decode_jpeg(read_file(path), mode=ImageReadMode.RGB)
    image = TF.resize(image, SIDE, interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(image, [SIDE, SIDE])


DECODERS = {"pil": pil, "torchvision": tv}


class Photos(Dataset):
    def __init__(self, paths: list[str], decoder: str) -> None:
        self.paths, self.decoder = paths, decoder

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return DECODERS[self.decoder](self.paths[index])


def rate(paths: list[str], decoder: str, workers: int) -> float:
    loader = DataLoader(Photos(paths, decoder), batch_size=32, num_workers=workers, collate_fn=torch.stack)
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    paths = sorted(str(p) for p in PHOTOS.glob("*.jpg"))
    if not paths:
        raise SystemExit(f"no photos in {PHOTOS}: the shared data is absent")
    torch.set_num_threads(1)
    diffs = [float((pil(p).float() - tv(p).float()).abs().mean()) for p in paths[:100]]
    cells = []
    for workers in (0, 1, 2):
        runs: dict[str, list[float]] = {name: [] for name in DECODERS}
        for _ in range(args.repeats):
            for name in DECODERS:  # taking turns: load from other processes hits both alike
                runs[name].append(rate(paths, name, workers))
        for name, values in runs.items():
            cells.append({"decoder": name, "workers": workers, "images_per_s": round(statistics.median(values), 1),
                          "runs": [round(v, 1) for v in values]})  # fmt: skip
            print(cells[-1])
    stream = json.loads((REPO / "benchmarks" / "results" / "stream_throughput.json").read_text())
    training = {t["size"]: t for t in stream["training"]}
    record: dict[str, Any] = {
        "provenance": collect_provenance(seed=0, repo_dir=REPO),
        "command": "python benchmarks/decode_jpeg.py",
        "photos": len(paths), "side": SIDE, "torch_threads": torch.get_num_threads(),
        "mean_abs_pixel_difference": round(statistics.mean(diffs), 3), "cells": cells,
        "training_consumes": {"source": "stream_throughput.json", **training},
    }  # fmt: skip
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "decode_jpeg.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    git, hw = record["provenance"]["git"], record["provenance"]["hardware"]
    by = {(c["decoder"], c["workers"]): c["images_per_s"] for c in cells}
    rows = [
        [w, by[("pil", w)], by[("torchvision", w)], f"{by[('torchvision', w)] / by[('pil', w)]:.2f}x"]
        for w in (0, 1, 2)
    ]
    lines = [
        "# JPEG decoding at 224 px: PIL (mmfuse) against torchvision.io.decode_jpeg",
        "",
        f"Commit `{str(git.get('commit', '?'))[:10]}`{' (dirty)' if git.get('dirty') else ''}; {hw.get('processor')}, "
        f"{hw.get('cpu_count')} logical CPUs; CPU flags {', '.join(hw.get('cpu_flags') or []) or 'n/a'}; "
        f"{len(paths)} Flickr8k photos (about 200 px wide); batches of 32; median of {args.repeats}. "
        f"Command: `{record['command']}`.",
        "",
        format_table(["workers", "PIL images/s", "torchvision images/s", "torchvision / PIL"], rows, "md", "rrrr"),
        "",
        f"Mean absolute pixel difference between the two (0-255): {record['mean_abs_pixel_difference']}. One fp32 "
        f"training step consumes {training['base']['samples_per_s']} samples/s for the base model at 224 px and "
        f"{training['small']['samples_per_s']} for the main job's model at 64 px "
        "(`stream_throughput.json`).",
    ]
    (args.results / "decode_jpeg.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.results / 'decode_jpeg.json'} and .md")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
