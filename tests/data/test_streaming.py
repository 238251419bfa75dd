"""Streamed sources: every format opens through ``datasets``; every row of an epoch reaches exactly one rank and
worker; a resumed epoch continues where it stopped; mixing keeps its proportions; bad rows fail or are counted."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from mmfuse.data.bad_records import LOAD_REPORT_FILE, BadRecordError
from mmfuse.data.shards import write_pair
from mmfuse.data.streaming import StreamDataset, StreamSource, StreamSourceConfig, expand_paths, plan_epoch
from mmfuse.errors import ConfigError
from tests.conftest import STREAM_PAIRS

WDS = {"format": "webdataset", "columns": {"label": "json.label"}}


def _source(path: Path | str, cache: Path | None = None, **kwargs: object) -> StreamSource:
    return StreamSource(StreamSourceConfig(**{**WDS, "path": str(path), **kwargs}), cache)  # type: ignore[arg-type]


def _epoch(sources: list[StreamSource], world: int, workers: int, epoch: int = 0, start: int = 0,
           batch_size: int = 4, **kwargs: object) -> list[list[str]]:  # fmt: skip
    """Per rank, the image ids of one epoch's batches in the order a DataLoader hands them out."""
    ranks = []
    for rank in range(world):
        stream = StreamDataset(sources, "train", batch_size, 48, world=world, rank=rank, buffer_size=8, **kwargs)
        stream.epoch, stream.start_batch = epoch, start
        loader = DataLoader(stream, batch_size=None, num_workers=workers, collate_fn=lambda rows: rows)
        ranks.append([[row["image_id"] for row in batch] for batch in loader])
    return ranks


def test_every_row_once_per_epoch_over_ranks_and_workers(stream_shards: Path, tmp_path: Path) -> None:
    source = _source(stream_shards, tmp_path)
    assert source.shard_rows == [16, 16, 16, 16] and source.columns["image"] == "jpg"
    for world, workers in [(1, 0), (2, 2), (2, 0), (4, 2)]:
        ranks = _epoch([source], world, workers)
        assert len({len(batches) for batches in ranks}) == 1  # equal batches on every rank: DDP never waits
        ids = [i for batches in ranks for batch in batches for i in batch]
        assert len(ids) == len(set(ids)) == STREAM_PAIRS, (world, workers)
    # 3 ranks, 4 shards: every 3rd row (the ``examples`` strategy); 64 // 3 = 21 rows each, 5 batches of 4
    ranks = _epoch([source], 3, 2)
    ids = [i for batches in ranks for batch in batches for i in batch]
    assert [len(batches) for batches in ranks] == [5, 5, 5] and len(ids) == len(set(ids)) == 60


def test_order_is_a_function_of_seed_and_epoch(stream_shards: Path, tmp_path: Path) -> None:
    source = _source(stream_shards, tmp_path)
    first = _epoch([source], 2, 2)
    assert _epoch([source], 2, 0) == first  # the worker count does not change the order
    assert _epoch([source], 2, 2, epoch=1) != first
    assert _epoch([source], 2, 2, seed=1) != first


@pytest.mark.parametrize("start", [1, 5])
def test_a_resumed_epoch_continues_after_its_last_batch(stream_shards: Path, tmp_path: Path, start: int) -> None:
    source = _source(stream_shards, tmp_path)
    full = _epoch([source], 2, 2, epoch=3)
    assert _epoch([source], 2, 2, epoch=3, start=start) == [batches[start:] for batches in full]


def test_mixing_takes_rows_in_proportion(stream_shards: Path, stream_parquet: Path, tmp_path: Path) -> None:
    shards = _source(stream_shards, tmp_path, weight=3.0)
    parquet = StreamSource(StreamSourceConfig("parquet", str(stream_parquet), weight=1.0), tmp_path)
    stream = StreamDataset([shards, parquet], "train", 4, 48, world=2, rank=0)
    # 32 rows of each per rank; 3 : 1 -> 32 + 10 = 42 rows, 10 batches of 4 (the last 2 rows wait for next epoch)
    assert stream.plan().take == [32, 10] and len(stream) == 10
    counts = stream.source_counts()
    assert sum(counts.values()) == 80 and counts[stream_parquet.name] in range(16, 21)
    ranks = _epoch([shards, parquet], 2, 2)
    ids = [i for batches in ranks for batch in batches for i in batch]
    assert len(ids) == len(set(ids)) == 80
    assert sum(i.startswith(stream_parquet.name) for i in ids) == counts[stream_parquet.name]
    plan = plan_epoch([[16] * 4, [8, 8]], [3.0, 1.0], 0, 0, 2, 0)  # 32 and 8 rows per rank: 8 limits it
    assert plan.take == [24, 8] and np.bincount(plan.order).tolist() == [24, 8]


def test_formats_open_through_datasets(stream_parquet: Path, tmp_path: Path) -> None:
    parquet = StreamSource(StreamSourceConfig("parquet", str(stream_parquet)), tmp_path)
    assert parquet.num_shards == 2 and sum(parquet.shard_rows) == 64
    assert parquet.columns == {"image": "image", "text": "text", "label": "label", "key": "key"}
    files = sorted(map(str, stream_parquet.glob("*.parquet")))
    table = datasets.Dataset.from_parquet(files, cache_dir=str(tmp_path / "hf"))
    table = table.cast_column("image", datasets.Image(decode=False))
    table.save_to_disk(str(tmp_path / "saved"))
    arrow = StreamSource(StreamSourceConfig("arrow", str(tmp_path / "saved"), num_shards=4), tmp_path)
    assert arrow.shard_rows == [16, 16, 16, 16]
    # imagefolder: JPEG files with a metadata.jsonl; JSON lines: an image path column
    folder = tmp_path / "folder" / "train"
    folder.mkdir(parents=True)
    lines = []
    for i, row in enumerate(table.select(range(8))):
        (folder / f"{i}.jpg").write_bytes(row["image"]["bytes"])
        lines.append({"file_name": f"{i}.jpg", "text": row["text"], "label": row["label"]})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    imagefolder = StreamSource(StreamSourceConfig("imagefolder", str(tmp_path / "folder")), tmp_path)
    rows = _epoch([imagefolder], 1, 0, batch_size=2)[0]
    assert sum(map(len, rows)) == 8
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"img": f"folder/train/{line['file_name']}", "caption": line["text"]}) + "\n" for line in lines
        )
    )  # fmt: skip  (paths relative to the JSON file)
    source = StreamSource(StreamSourceConfig("json", str(jsonl)), tmp_path)
    assert source.columns == {"image": "img", "text": "caption"}
    stream = StreamDataset([source], "train", 4, 48, shuffle=False, drop_last=False)
    batch = next(iter(stream))
    assert batch[0]["image"].size == (48, 48) and batch[0]["label"] == -1


def _bad_shard(path: Path, good: Path) -> None:
    """A shard of 4 pairs: the 2nd image truncated, the 3rd caption empty."""
    with tarfile.open(next(good.glob("*.tar"))) as tar:
        jpeg = tar.extractfile(sorted(m for m in tar.getnames() if m.endswith(".jpg"))[0]).read()  # type: ignore[union-attr]
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            image = jpeg[: len(jpeg) // 3] if i == 1 else jpeg
            caption = b"" if i == 2 else b"a red ring"
            write_pair(tar, f"k{i}", {"jpg": image, "txt": caption, "json": json.dumps({"label": 0}).encode()})


def test_bad_rows_fail_naming_the_row_or_are_counted(stream_shards: Path, tmp_path: Path) -> None:
    _bad_shard(tmp_path / "bad.tar", stream_shards)
    source = _source(tmp_path / "bad.tar", tmp_path)
    stream = StreamDataset([source], "train", 4, 48, shuffle=False)
    with pytest.raises(BadRecordError, match=r"bad\.tar shard 0 key k1.*skip_bad"):
        next(iter(stream))
    report = tmp_path / "report"
    stream = StreamDataset([source], "train", 4, 48, shuffle=False, skip_bad=True, report_dir=report)
    (batch,) = list(stream)
    assert [row["image_id"] for row in batch] == ["bad.tar/k0", "bad.tar/k3"]
    reasons = [json.loads(line)["reason"] for line in (report / LOAD_REPORT_FILE).read_text().splitlines()]
    assert sorted(reasons) == ["corrupt_image", "missing_text"]


def test_bad_configs_fail_in_one_line(stream_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"matches no file|no such file"):
        expand_paths(str(stream_shards / "{000000..000009}.tar"), "webdataset")
    with pytest.raises(ConfigError, match=r"format='tfrecord'"):
        StreamSourceConfig("tfrecord", "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"columns.text='caption'.*has no such column"):
        _ = _source(stream_shards, columns={"text": "caption"}).columns
    with pytest.raises(ConfigError, match=r"weight=0"):
        StreamSourceConfig("parquet", "x", weight=0)
    # a shard that lost rows after it was counted
    source = _source(stream_shards / "000000.tar", tmp_path)
    stream = StreamDataset([source], "train", 4, 48, shuffle=False)
    source.shard_rows[0] = 20  # what a stale count would say
    with pytest.raises(ConfigError, match="fewer rows than were counted"):
        list(stream)


def test_brace_patterns_and_directories_name_the_same_shards(stream_shards: Path) -> None:
    by_pattern = expand_paths(str(stream_shards / "{000000..000003}.tar"), "webdataset")
    assert by_pattern == expand_paths(str(stream_shards), "webdataset") == sorted(map(str, stream_shards.glob("*.tar")))


def test_decoded_images_are_the_shard_images(stream_shards: Path, tmp_path: Path) -> None:
    source = _source(stream_shards / "000000.tar", tmp_path)
    row = next(source.rows([0]))
    stream = StreamDataset([source], "train", 16, 48, shuffle=False)
    item = next(iter(stream))[0]
    expected = Image.open(io.BytesIO(row["jpg"]["bytes"])).convert("RGB")
    assert item["image"].size == expected.size == (48, 48)
    assert np.array_equal(np.asarray(item["image"]), np.asarray(expected))
    assert item["label"] == row["json"]["label"] and item["text"] == row["txt"]


def test_stream_loader_state_resumes_after_its_batches(stream_shards: Path, tmp_path: Path) -> None:
    from mmfuse.data.stream_module import StreamLoader

    source = _source(stream_shards, tmp_path)

    def loader(batch_size: int = 4) -> StreamLoader:
        stream = StreamDataset([source], "train", batch_size, 48, world=2, rank=1, buffer_size=8)
        return StreamLoader(stream, num_workers=2, collate_fn=lambda rows: [row["image_id"] for row in rows])

    first = loader()
    epoch0 = list(first)
    assert first.state_dict()["epoch"] == 1 and len(epoch0) == len(first) == 8  # a full pass advances the epoch
    batches = iter(first)
    head = [next(batches) for _ in range(3)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches_done": 3, "batch_size": 4, "num_replicas": 2, "seed": 0}
    resumed = loader()
    resumed.load_state_dict(state)
    reference = loader()
    list(reference)  # epoch 0
    assert head + list(resumed) == list(reference)  # epoch 1, uninterrupted
    with pytest.raises(ConfigError, match="batch_size 4 -> 8"):
        loader(batch_size=8).load_state_dict(state)
