"""Writing image-text pairs as WebDataset tar shards in the layout ``img2dataset`` writes for CC3M, CC12M and LAION:
``000000.tar`` holding ``<key>.jpg``, ``<key>.txt`` and ``<key>.json`` per pair, with ``000000_stats.json`` beside it.

:func:`write_shapes_shards` fills such shards from the shapes world, for tests and for the data-path benchmark
(``benchmarks/stream_throughput.py``).
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmfuse.data.shapes import ShapesWorldConfig, answer_vocabulary, render_example
from mmfuse.errors import ConfigError

__all__ = ["write_pair", "write_shapes_shards"]


def write_pair(tar: tarfile.TarFile, key: str, files: dict[str, bytes]) -> None:
    """Add one pair's files (extension -> bytes, e.g. ``{"jpg": ..., "txt": ..., "json": ...}``) under ``key``."""
    for extension, data in files.items():
        info = tarfile.TarInfo(f"{key}.{extension}")
        info.size = len(data)
        info.mtime = 0  # byte-identical shards from identical inputs
        tar.addfile(info, io.BytesIO(data))


def write_shapes_shards(
    out_dir: str | Path,
    num_pairs: int,
    shard_size: int = 1000,
    world: ShapesWorldConfig = ShapesWorldConfig(),
    quality: int = 90,
    seed: int = 0,
) -> list[Path]:
    """Render ``num_pairs`` shapes-world pairs (JPEG, the question as caption, the answer's index as ``label`` in
    the JSON) into shards of ``shard_size`` pairs; deterministic in the arguments.

    Returns:
        The shard files, in order.
    """
    if num_pairs <= 0 or shard_size <= 0:
        raise ConfigError(f"num_pairs={num_pairs} and shard_size={shard_size} must be positive")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(world, seed=seed)
    answers = answer_vocabulary(cfg)
    rng = np.random.default_rng([seed, 7])
    digits = max(4, len(str(shard_size - 1)))
    shards = []
    for shard in range(-(-num_pairs // shard_size)):
        path = out / f"{shard:06d}.tar"
        start, count = time.perf_counter(), min(shard_size, num_pairs - shard * shard_size)
        with tarfile.open(path, "w") as tar:
            for i in range(count):
                example = render_example(rng, cfg, "train")
                image = Image.open(io.BytesIO(example["image"]["bytes"])).convert("RGB")
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=quality)
                key = f"{shard:06d}{i:0{digits}d}"
                meta: dict[str, Any] = {
                    "key": key, "caption": example["text"], "status": "success", "url": None,
                    "width": image.width, "height": image.height, "label": int(example["label"]),
                    "answer": answers[example["label"]],
                }  # fmt: skip
                write_pair(tar, key, {"jpg": buffer.getvalue(), "txt": example["text"].encode(),
                                      "json": json.dumps(meta).encode()})  # fmt: skip
        stats = {"count": count, "successes": count, "failed_to_download": 0, "failed_to_resize": 0,
                 "duration": time.perf_counter() - start, "status": "success"}  # fmt: skip
        (out / f"{shard:06d}_stats.json").write_text(json.dumps(stats) + "\n")
        shards.append(path)
    return shards
