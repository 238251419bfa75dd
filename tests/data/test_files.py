"""ImageTextDataModule: typed batches from files, bad records refused by default or skipped, counted and reported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from mmfuse.data.bad_records import LOAD_REPORT_FILE, REPORT_FILE, BadRecordError
from mmfuse.data.files import ImageTextDataModule
from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.image_text import ImageTextDataset
from mmfuse.data.transforms import AugmentConfig, PreprocessConfig
from mmfuse.data.vqa import UNKNOWN_ANSWER
from mmfuse.types import Batch
from tests.data._make import (
    captions_dataset,
    exif_rotated_jpeg,
    garbage_file,
    rgb_image,
    shared_dataset,
    truncated_jpeg,
    write_jsonl,
)
from tests.data.test_vqa import vqa_layout

MAX_PIXELS = 5000  # the good images are 8x8, the truncated JPEG 64x64; the "too large" one is 100x100


def _good(root: Path, count: int = 4) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        rgb_image(root / "img" / f"{i:05d}.png", (8, 8), (40 * i, 100, 200))
        rows.append({"id": i, "img": f"img/{i:05d}.png", "text": f"meme number {i}", "label": i % 2})
    return rows


def _bad_row(root: Path, case: str) -> dict[str, Any] | str:
    """One bad record of kind ``case`` with its own image ``img/bad_<case>.png`` (the files it needs are created)."""
    image = root / "img" / f"bad_{case}.png"
    row: dict[str, Any] = {"id": 99, "img": f"img/{image.name}", "text": "a bad one", "label": 0}
    if case in ("empty_text", "missing_text", "malformed_record"):
        rgb_image(image, (8, 8))
    if case == "empty_text":
        row["text"] = "  "
    elif case == "missing_text":
        del row["text"]
    elif case == "malformed_record":
        return f'{{"id": 99, "img": "img/{image.name}", "text": '
    elif case == "corrupt_image":
        garbage_file(image)
    elif case == "truncated_image":
        truncated_jpeg(image)  # JPEG data under a .png name: PIL goes by the content
    elif case == "absolute_path":
        row["img"] = str(rgb_image(image, (8, 8)))
    elif case == "path_escapes_root":
        rgb_image(root.parent / "outside.png", (8, 8))
        row["img"] = "img/../../outside.png"
    elif case == "too_many_pixels":
        rgb_image(image, (100, 100))
    return row


REASON_OF = {
    "corrupt_image": "corrupt_image",
    "truncated_image": "corrupt_image",
    "missing_file": "missing_file",
    "empty_text": "empty_text",
    "missing_text": "empty_text",
    "absolute_path": "absolute_path",
    "path_escapes_root": "path_escapes_root",
    "too_many_pixels": "too_many_pixels",
    "malformed_record": "malformed_record",
}


def memes(root: Path, cases: list[str]) -> Path:
    """A Hateful-Memes-style layout: 4 good training records, then one bad record per case; 1 validation record."""
    good = _good(root, 5)
    write_jsonl(root / "train.jsonl", [*good[:4], *(_bad_row(root, case) for case in cases)])
    write_jsonl(root / "dev.jsonl", good[4:])
    return root


def _rows(loader: object) -> int:
    """Records behind an evaluation loader."""
    assert isinstance(loader, DataLoader) and isinstance(loader.dataset, ImageTextDataset)
    return len(loader.dataset)


def _module(root: Path, tmp_path: Path, **kwargs: Any) -> ImageTextDataModule:
    source = FileSourceConfig(format="jsonl", root=str(root), max_pixels=MAX_PIXELS)
    kwargs = {"image_size": 16, "batch_size": 2, "cache_dir": str(tmp_path / "cache"), **kwargs}
    return ImageTextDataModule(source, **kwargs)


@pytest.mark.parametrize("case", list(REASON_OF))
def test_a_bad_record_is_an_error_naming_the_record_and_file(tmp_path: Path, case: str) -> None:
    root = memes(tmp_path / "memes", [case])
    dm = _module(root, tmp_path)
    with pytest.raises(BadRecordError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert f"train record 4 (id '{'train.jsonl:5' if case == 'malformed_record' else '99'}')" in message
    assert f": {REASON_OF[case]}: " in message and "train.jsonl" in message and "skip_bad" in message
    if case not in ("empty_text", "missing_text", "malformed_record"):
        assert ("outside.png" if case == "path_escapes_root" else f"bad_{case}.png") in message
    assert info.value.record is not None and info.value.record.reason == REASON_OF[case]


def test_skip_bad_skips_counts_and_reports_every_case(tmp_path: Path) -> None:
    root = memes(tmp_path / "memes", list(REASON_OF))
    run_dir = tmp_path / "run"
    dm = _module(root, tmp_path, skip_bad=True, report_dir=str(run_dir))
    dm.setup("fit")
    report_text = (run_dir / REPORT_FILE).read_text()
    report = json.loads(report_text)
    assert report["total"] == len(REASON_OF)
    expected = {reason: list(REASON_OF.values()).count(reason) for reason in set(REASON_OF.values())}
    assert report["counts"] == expected
    lines = [line for line in report_text.splitlines() if '"reason"' in line]
    assert len(lines) == len(REASON_OF) and all(json.loads(line.strip().rstrip(",")) for line in lines)
    assert {r["index"] for r in report["records"]} == set(range(4, 4 + len(REASON_OF)))
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and all(len(b) == 2 for b in batches)  # only the 4 good training records
    assert len(dm.datasets["train"]) == 4  # type: ignore[index]


def test_valid_modes_are_converted_not_rejected(tmp_path: Path) -> None:
    root = tmp_path / "modes"
    images = {
        "gray.png": Image.new("L", (10, 8), 30),
        "palette.png": Image.new("RGB", (10, 8), (0, 200, 0)).convert("P"),
        "cmyk.jpg": Image.new("CMYK", (10, 8), (0, 255, 255, 0)),
        "rgba.png": Image.new("RGBA", (10, 8), (0, 0, 0, 0)),
        "deep.png": Image.fromarray(np.full((8, 10), 65535, dtype=np.uint16)),
    }
    for name, image in images.items():
        (root / "img").mkdir(parents=True, exist_ok=True)
        image.save(root / "img" / name)
    exif_rotated_jpeg(root / "img" / "rotated.jpg")
    names = [*images, "rotated.jpg"]
    write_jsonl(root / "train.jsonl", [{"id": n, "img": f"img/{n}", "text": n, "label": 0} for n in names])
    dm = _module(root, tmp_path, batch_size=6)
    dm.setup("fit")
    assert dm.manifest.num_bad_records == 0
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (6, 3, 16, 16) and 0 <= float(batch.images.min()) <= float(batch.images.max()) <= 1


def test_a_file_broken_after_preparing_is_caught_at_load_time(tmp_path: Path) -> None:
    root = memes(tmp_path / "memes", [])
    _module(root, tmp_path).prepare_data()
    garbage_file(root / "img" / "00002.png")  # the manifest's cache key does not see image files
    strict = _module(root, tmp_path, batch_size=4)
    strict.setup("fit")
    with pytest.raises(BadRecordError, match=r"00002\.png.*corrupt_image|corrupt_image.*00002\.png"):
        list(strict._eval_loader("train"))
    run_dir = tmp_path / "run"
    lenient = _module(root, tmp_path, batch_size=4, skip_bad=True, report_dir=str(run_dir))
    lenient.setup("fit")
    batch = next(iter(lenient._eval_loader("train")))
    assert len(batch) == 3  # the broken record left its batch
    assert json.loads((run_dir / LOAD_REPORT_FILE).read_text())["stage"] == "load"
    lenient.teardown("fit")
    report = json.loads((run_dir / REPORT_FILE).read_text())
    assert report["counts"] == {"corrupt_image": 1} and report["records"][0]["record_id"] == "2"


def test_worker_processes_load_and_the_error_survives_a_worker(tmp_path: Path) -> None:
    root = memes(tmp_path / "memes", [])
    dm = _module(root, tmp_path, batch_size=2, num_workers=2)
    dm.setup("fit")
    assert sum(len(b) for b in dm.train_dataloader()) == 4
    (root / "img" / "00001.png").unlink()
    with pytest.raises(BadRecordError) as info:
        dm.datasets["train"][1]  # type: ignore[index]
    # A DataLoader worker re-raises as ``type(err)(message)``: the type and the message must survive that.
    rebuilt = type(info.value)(f"Caught in DataLoader worker process 0.\n{info.value}")
    assert isinstance(rebuilt, BadRecordError) and "missing_file" in str(rebuilt) and "00001.png" in str(rebuilt)


def test_spec_tokenizer_and_fingerprint(tmp_path: Path) -> None:
    root = memes(tmp_path / "memes", [])
    dm = _module(root, tmp_path)
    spec = dm.spec
    assert spec.num_classes == 2 and spec.class_names == ("0", "1") and spec.image_size == 16
    assert spec.vocab_size == len(dm.tokenizer)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, Batch) and batch.labels is not None and batch.labels.dtype == torch.int64
    assert int((batch.input_ids == dm.tokenizer.unk_token_id).sum()) == 0  # trained on the training texts
    assert batch.attention_mask.dtype == torch.bool
    assert (
        dm.fingerprint() == _module(root, tmp_path).fingerprint() != _module(root, tmp_path, image_size=8).fingerprint()
    )
    assert _rows(dm.val_dataloader()) == 1 and _rows(dm.test_dataloader()) == 1  # no test file: val


def test_vqa_spec_uses_the_answer_vocabulary(tmp_path: Path) -> None:
    root = vqa_layout(tmp_path / "vqa")
    source = FileSourceConfig(format="vqa", root=str(root), answer_vocab_size=3)
    dm = ImageTextDataModule(source, image_size=8, batch_size=3, cache_dir=str(tmp_path))
    assert dm.spec.num_classes == 4 and dm.spec.class_names[0] == UNKNOWN_ANSWER
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert (
        batch.images.shape == (3, 3, 8, 8) and batch.labels is not None and sorted(batch.labels.tolist()) == [0, 1, 3]
    )
    assert _rows(dm.test_dataloader()) == 2  # no "test" split (only test-dev): val


def test_flickr8k_loader_and_no_val_split(cache_dir: Path) -> None:
    root = shared_dataset("flickr8k-1k-small")
    source = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 800, "test": 200})
    dm = ImageTextDataModule(source, image_size=32, batch_size=4, cache_dir=str(cache_dir))
    dm.setup("fit")
    assert dm.val_dataloader() == [] and _rows(dm.test_dataloader()) == 1000
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (4, 3, 32, 32) and batch.labels is not None and (batch.labels == -1).all()


def test_missing_split_is_a_config_error(tmp_path: Path) -> None:
    root = captions_dataset(tmp_path / "caps", num_images=4)
    source = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"val": 2, "test": 2})
    dm = ImageTextDataModule(source, image_size=8, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(Exception, match="no 'train' split"):
        dm.setup("fit")
        dm.train_dataloader()


def test_the_data_module_is_configurable_from_yaml_values(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageTextDataModule, "data")
    values = "{source: {format: captions_csv, root: /x, split_sizes: {train: 800, test: 200}}, image_size: 224}"
    cfg = parser.parse_args([f"--data={values}", "--data.skip_bad=true"])
    assert cfg.data.source.format == "captions_csv" and cfg.data.image_size == 224 and cfg.data.skip_bad
    with pytest.raises(Exception, match="format"):
        parser.parse_args(["--data={source: {format: parquet, root: /x}, image_size: 224}"])


def _epoch_rows(dm: ImageTextDataModule, epoch: int) -> list[tuple[int, str]]:
    """(image id hash, caption) of every training example of one epoch."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    rows = []
    for batch in loader:
        assert batch.image_ids is not None and batch.indices is not None
        captions = dm.datasets["train"].manifest[batch.indices.tolist()]["text"]  # type: ignore[index]
        rows += list(zip(batch.image_ids.tolist(), captions, strict=True))
    return rows


def test_one_caption_per_image_per_epoch(tmp_path: Path) -> None:
    root = captions_dataset(tmp_path / "caps", num_images=8, captions_per_image=5)
    source = FileSourceConfig(format="captions_csv", root=str(root), split_sizes={"train": 6, "test": 2})

    def module(**kwargs: Any) -> ImageTextDataModule:
        return ImageTextDataModule(source, image_size=8, batch_size=2, cache_dir=str(tmp_path / "cache"), **kwargs)

    dm = module(captions_per_epoch="one", seed=1)
    epochs = [_epoch_rows(dm, epoch) for epoch in range(3)]
    for rows in epochs:
        assert len(rows) == len({image for image, _ in rows}) == 6  # every training image once
        assert all(caption.startswith(f"picture {caption.split()[1]} caption") for _, caption in rows)
    chosen = [dict(rows) for rows in epochs]
    assert chosen[0] != chosen[1] != chosen[2]  # other captions in other epochs
    assert dict(_epoch_rows(module(captions_per_epoch="one", seed=1), 1)) == chosen[1]  # same (seed, epoch)
    assert dict(_epoch_rows(module(captions_per_epoch="one", seed=2), 1)) != chosen[1]
    assert len(_epoch_rows(module(), 0)) == 30  # default "all": every caption
    assert _rows(dm.test_dataloader()) == 10  # evaluation keeps every caption
    with pytest.raises(Exception, match="captions_per_epoch"):
        module(captions_per_epoch="two")


def test_the_command_line_fills_preprocess_from_the_vision_encoder(tmp_path: Path) -> None:
    from jsonargparse import Namespace

    from mmfuse.experiment import read_experiment
    from mmfuse.training.cli import _default_preprocess, build_from_config
    from tests.conftest import REPO, TINY_CLI_ARGS

    root = captions_dataset(tmp_path / "caps", num_images=4)
    experiment = tmp_path / "files.yaml"
    values, _ = read_experiment(REPO / "experiments" / "shapes_color.yaml")  # its base merged in: the copy lives here
    experiment.write_text(yaml.safe_dump({key: value for key, value in values.items() if key != "data"}))
    source = {"format": "captions_csv", "root": str(root), "split_sizes": {"train": 2, "test": 2}}
    args = [f"--data={json.dumps({'class_path': 'ImageTextDataModule', 'init_args': {'source': source}})}",
            "--data.image_size=32", f"--data.cache_dir={tmp_path / 'cache'}", "--model.task=retrieval",
            *TINY_CLI_ARGS[:3]]  # fmt: skip
    dm = build_from_config(experiment, args).datamodule
    assert isinstance(dm, ImageTextDataModule) and dm.preprocess == PreprocessConfig(crop_pct=0.95)  # resnet18's
    given = build_from_config(experiment, [*args, "--data.preprocess.crop_pct=0.5"]).datamodule
    assert isinstance(given, ImageTextDataModule) and given.preprocess == PreprocessConfig(crop_pct=0.5)  # kept
    config = Namespace(model=Namespace(vision=Namespace(model_name="torchvision:resnet18", img_size=None,
                                                        model_kwargs={})),
                       data=Namespace(init_args=Namespace(image_size=32, preprocess=None)))  # fmt: skip
    _default_preprocess(config)
    assert config.data.init_args.preprocess.interpolation == "bilinear"
    assert config.data.init_args.preprocess.crop_pct == 0.875


def test_augment_and_captions_are_yaml_values(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageTextDataModule, "data")
    values = ("{source: {format: captions_csv, root: /x}, image_size: 32, captions_per_epoch: one, "
              "augment: {scale: [0.5, 1.0], auto_augment: rand-m9-mstd0.5, re_prob: 0.25}}")  # fmt: skip
    dm = parser.instantiate_classes(parser.parse_args([f"--data={values}"])).data
    assert dm.captions_per_epoch == "one" and dm.augment == AugmentConfig(
        scale=(0.5, 1.0), auto_augment="rand-m9-mstd0.5", re_prob=0.25
    )
    assert dm.train_transform is not None and dm.train_transform.decode_side == 46  # ceil(32 / sqrt(0.5))
    with pytest.raises(Exception, match="flip_prob"):
        parser.parse_args(["--data={source: {format: captions_csv, root: /x}, image_size: 32}",
                           "--data.augment={flip_prob: 0.5}"])  # fmt: skip
