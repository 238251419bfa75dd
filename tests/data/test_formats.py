"""Readers of each layout, on generated layouts and on the real subsets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mmfuse.data.formats import FileSourceConfig, assign_splits
from mmfuse.data.manifest import Manifest, load_manifest, prepare_manifest
from mmfuse.errors import ConfigError
from tests.data._make import captions_dataset, rgb_image, shared_dataset, write_jsonl


def _prepare(cache_dir: Path, **kwargs: object) -> Manifest:
    return load_manifest(prepare_manifest(FileSourceConfig(**kwargs), cache_dir))  # type: ignore[arg-type]


def _rows(manifest: Manifest) -> dict[str, int]:
    return {name: split["rows"] for name, split in manifest.splits.items()}


def _image_ids(manifest: Manifest, split: str) -> set[str]:
    return set(manifest.dataset(split)["image_id"])


def test_flickr8k_captions_csv_splits_800_200_by_image(cache_dir: Path) -> None:
    root = shared_dataset("flickr8k-1k-small")
    manifest = _prepare(cache_dir, format="captions_csv", root=str(root), split_sizes={"train": 800, "test": 200})
    assert manifest.num_bad_records == 0 and manifest.class_names == ()
    assert manifest.splits["train"]["rows"] == 4000 and manifest.splits["train"]["images"] == 800
    assert manifest.splits["test"]["rows"] == 1000 and manifest.splits["test"]["images"] == 200
    train_ids, test_ids = _image_ids(manifest, "train"), _image_ids(manifest, "test")
    assert not train_ids & test_ids and max(train_ids) < min(test_ids)  # first 800 sorted ids train, last 200 test
    test = manifest.dataset("test")
    assert Counter(test["image_id"]).most_common(1)[0][1] == 5 and set(Counter(test["image_id"]).values()) == {5}
    row = test[0]
    assert Path(row["image_path"]).is_file() and row["image_path"].startswith(str(root.resolve()))
    assert row["label"] == -1 and row["text"]


def test_coco_mini_as_it_is(cache_dir: Path) -> None:
    root = shared_dataset("coco-mini")
    manifest = _prepare(cache_dir, format="coco", root=str(root))
    assert manifest.num_bad_records == 0
    assert _rows(manifest) == {"train": 400, "val": 395}
    assert manifest.splits["train"]["images"] == 80 and manifest.splits["val"]["images"] == 79
    val = manifest.dataset("val")
    unannotated = set((root / "val2017_unannotated.txt").read_text().split())
    assert not {Path(p).name for p in val["image_path"]} & unannotated
    assert all("/val2017/" in p for p in val["image_path"]) and set(Counter(val["image_id"]).values()) == {5}
    captions = json.loads((root / "annotations" / "captions_val2017.json").read_text())["annotations"]
    assert val[0]["text"] == captions[0]["caption"] and val[0]["record_id"] == str(captions[0]["id"])


def test_cifar10_sample_as_class_folders(cache_dir: Path) -> None:
    root = shared_dataset("cifar10-test-sample")
    manifest = _prepare(cache_dir, format="imagefolder", root=str(root), verify_images=False)
    assert manifest.class_names[:3] == ("airplane", "automobile", "bird") and len(manifest.class_names) == 10
    assert _rows(manifest) == {"train": 800, "val": 100, "test": 100}
    for split in ("val", "test"):  # a hash order mixes the classes; sorted ids would give whole classes to a split
        assert len(set(manifest.dataset(split)["label"])) >= 8
    row = manifest.dataset("train")[0]
    assert row["text"] == f"a photo of a {manifest.class_names[row['label']]}"


def test_jsonl_hateful_memes_layout(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "memes"
    for i in range(6):
        rgb_image(root / "img" / f"{i:05d}.png", (8, 8))
    write_jsonl(
        root / "train.jsonl",
        [{"id": i, "img": f"img/{i:05d}.png", "text": f"meme {i}", "label": i % 2} for i in range(4)],
    )
    write_jsonl(root / "dev_seen.jsonl", [{"id": 4, "img": "img/00004.png", "text": "meme 4", "label": 1}])
    write_jsonl(root / "test.jsonl", [{"id": 5, "img": "img/00005.png", "text": "meme 5"}])  # no labels
    manifest = _prepare(cache_dir, format="jsonl", root=str(root))
    assert _rows(manifest) == {"train": 4, "val": 1, "test": 1} and manifest.class_names == ("0", "1")
    assert manifest.dataset("train")["label"] == [0, 1, 0, 1] and manifest.dataset("test")[0]["label"] == -1
    assert manifest.dataset("val")[0]["record_id"] == "4" and manifest.dataset("val")[0]["image_id"] == "img/00004.png"


@pytest.mark.parametrize("metadata", ["metadata.jsonl", "metadata.csv"])
def test_imagefolder_metadata_with_split_folders_and_named_labels(
    tmp_path: Path, cache_dir: Path, metadata: str
) -> None:
    root = tmp_path / "folder"
    rows = {"train": [("a.png", "a cat", "cat"), ("b.png", "a dog", "dog")], "test": [("c.png", "a cat", "cat")]}
    for split, items in rows.items():
        for name, _, _ in items:
            rgb_image(root / split / name, (8, 8))
        if metadata.endswith(".jsonl"):
            write_jsonl(root / split / metadata, [{"file_name": n, "caption": t, "label": lab} for n, t, lab in items])
        else:
            lines = ["file_name,text,label", *(f"{n},{t},{lab}" for n, t, lab in items)]
            (root / split / metadata).write_text("\n".join(lines) + "\n")
    manifest = _prepare(cache_dir, format="imagefolder", root=str(root))
    assert _rows(manifest) == {"train": 2, "test": 1} and manifest.class_names == ("cat", "dog")
    assert manifest.dataset("train")["label"] == [0, 1] and manifest.dataset("test")[0]["text"] == "a cat"
    assert manifest.dataset("test")[0]["image_path"] == str((root / "test" / "c.png").resolve())


def test_split_by_image_never_separates_the_captions_of_an_image(tmp_path: Path, cache_dir: Path) -> None:
    root = captions_dataset(tmp_path / "caps", num_images=20, captions_per_image=3)
    manifest = _prepare(
        cache_dir, format="captions_csv", root=str(root), split_sizes={"train": 0.5, "val": 0.25, "test": 0.25}
    )
    assert _rows(manifest) == {"train": 30, "val": 15, "test": 15}
    ids = {split: _image_ids(manifest, split) for split in manifest.splits}
    assert sum(len(v) for v in ids.values()) == len(set().union(*ids.values())) == 20
    resplit = _prepare(
        cache_dir, format="captions_csv", root=str(root), split_sizes={"train": 10, "test": 10}, split_order="hash"
    )
    assert _image_ids(resplit, "train") != ids["train"] and len(_image_ids(resplit, "train")) == 10


def test_assign_splits_checks_sizes() -> None:
    assert assign_splits(["a", "b", "c"], {"train": 0.34, "test": 0.66}) == {"a": "train", "b": "test", "c": "test"}
    assert assign_splits(["a", "b", "c"], {"train": 2}) == {"a": "train", "b": "train"}  # "c" in no split
    assert assign_splits(["a", "b"], {"train": 1, "test": 1}) == {"a": "train", "b": "test"}  # sum > 1: counts
    with pytest.raises(ConfigError, match="fractions summing to at most 1"):
        assign_splits(["a"], {"train": 0.8, "test": 0.8})
    with pytest.raises(ConfigError, match="at most the 3 images"):
        assign_splits(["a", "b", "c"], {"train": 3, "test": 2})


def test_missing_root_and_missing_annotations_are_config_errors(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        _prepare(cache_dir, format="coco", root=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="annotations/captions_"):
        _prepare(cache_dir, format="coco", root=str(tmp_path))
    with pytest.raises(ConfigError, match="no train \\*annotations"):
        (tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json").write_text('{"questions": []}')
        _prepare(cache_dir, format="vqa", root=str(tmp_path))


def test_csv_labels_that_are_numbers_stay_numbers(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "numbers"
    for i in range(12):
        rgb_image(root / f"{i}.png", (4, 4))
    lines = ["file_name,caption,label", *(f"{i}.png,picture {i},{i}" for i in range(11)), "11.png,no label,"]
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    manifest = _prepare(cache_dir, format="imagefolder", root=str(root), split_sizes={"train": 1.0})
    assert manifest.class_names == tuple(str(i) for i in range(11))  # numeric order, not "0", "1", "10", "2"...
    assert sorted(manifest.dataset("train")["label"]) == [-1, *range(11)]


def test_class_text_may_only_use_label() -> None:
    with pytest.raises(ConfigError, match="class_text"):
        FileSourceConfig(class_text="a photo of {what}")
