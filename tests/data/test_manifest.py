"""The prepared manifest: prepared once and reused, invalidated by a changed source file or option, atomic."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mmfuse.data import manifest as manifest_module
from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.manifest import load_manifest, prepare_manifest
from tests.data._make import captions_dataset, write_jsonl


def _forbid_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(reader: object) -> None:
        raise AssertionError("the source was read again although the manifest is cached")

    monkeypatch.setattr(manifest_module, "read_source", fail)


def test_second_prepare_reuses_the_cache_without_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = captions_dataset(tmp_path / "caps", num_images=4)
    cfg = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 3, "test": 1})
    first = prepare_manifest(cfg, tmp_path / "cache")
    _forbid_reading(monkeypatch)
    assert prepare_manifest(cfg, tmp_path / "cache") == first
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written left


def test_a_changed_source_file_or_option_prepares_again(tmp_path: Path) -> None:
    root = captions_dataset(tmp_path / "caps", num_images=4)
    cfg = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 3, "test": 1})
    first = prepare_manifest(cfg, tmp_path / "cache")
    captions = root / "captions.txt"
    captions.write_text(captions.read_text() + "img0000.png,one more caption\n")
    second = prepare_manifest(cfg, tmp_path / "cache")
    assert second != first and load_manifest(second).splits["train"]["rows"] == 7
    stat = captions.stat()  # same size, new mtime: prepared again too
    os.utime(captions, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert prepare_manifest(cfg, tmp_path / "cache") not in (first, second)
    other = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 2, "test": 2})
    assert prepare_manifest(other, tmp_path / "cache").name != second.name


def test_an_interrupted_prepare_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = captions_dataset(tmp_path / "caps", num_images=2)
    cfg = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 1, "test": 1})

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(manifest_module, "write_bad_record_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_manifest(cfg, tmp_path / "cache")
    assert list((tmp_path / "cache" / "manifests").iterdir()) == []


def test_two_thousand_tiny_images_prepare_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test-scale version of the 100k-record case that ``benchmarks/data_throughput.py`` runs."""
    from PIL import Image

    root = tmp_path / "many"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(2000):
        Image.new("RGB", (4, 4), (i % 256, i // 256, 7)).save(root / "images" / f"{i:05d}.png")
        rows.append({"file_name": f"images/{i:05d}.png", "text": f"tiny picture {i}", "label": i % 3})
    write_jsonl(root / "metadata.jsonl", rows)
    cfg = FileSourceConfig(format="imagefolder", root=str(root), split_sizes={"train": 0.9, "test": 0.1})
    start = time.perf_counter()
    path = prepare_manifest(cfg, tmp_path / "cache")
    first_s = time.perf_counter() - start
    manifest = load_manifest(path)
    assert manifest.splits["train"]["rows"] == 1800 and manifest.splits["test"]["rows"] == 200
    assert manifest.class_names == ("0", "1", "2") and manifest.num_bad_records == 0
    _forbid_reading(monkeypatch)
    start = time.perf_counter()
    assert prepare_manifest(cfg, tmp_path / "cache") == path
    assert time.perf_counter() - start < max(first_s / 5, 0.05)
