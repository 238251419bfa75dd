"""The audit on image-caption data (several captions per image, no class labels): duplicates and leakage compared
image by image, caption-image mismatches found with a retrieval model's embeddings (planted swaps in synthetic
embeddings; a tiny retrieval model through ``mmfuse audit``), and real Flickr8k / COCO files when present."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from scipy.special import logsumexp

from mmfuse.audit import AuditConfig, AuditReport, audit_captions, extract_retrieval_features, splits_of
from mmfuse.audit.caption_mismatch import draw_other_images, find_caption_mismatches, pair_features
from mmfuse.audit.duplicates import find_duplicates, find_leakage, hash_images
from mmfuse.audit.features import RetrievalFeatures
from mmfuse.audit.source import SplitData
from mmfuse.cli import main
from mmfuse.data.shapes import generate_split
from mmfuse.errors import ConfigError
from mmfuse.experiment import read_experiment
from tests.conftest import MAIN_EXPERIMENT, TINY_CLI_ARGS, TINY_WORLD
from tests.data._make import captions_dataset, shared_dataset

WORLD = dataclasses.replace(TINY_WORLD, image_size=64, min_object_size=12, max_object_size=18)


def _world_images(n: int) -> list[Image.Image]:
    records = generate_split(WORLD, "train", n)
    return [Image.open(io.BytesIO(r["bytes"])).convert("RGB") for r in records["image"]]


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=70)
    return Image.open(buffer).convert("RGB")


def _captioned(num_images: int, per_image: int, seed: int, noise: float = 0.8) -> RetrievalFeatures:
    """Synthetic embeddings: each image and its captions scatter around one concept vector (32 dims)."""
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(num_images, 32))
    image_of = np.repeat(np.arange(num_images), per_image)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    images = unit(concepts + 0.6 * rng.normal(size=concepts.shape))
    texts = unit(concepts[image_of] + noise * rng.normal(size=(len(image_of), 32)))
    return RetrievalFeatures(images, texts, image_of, logit_scale=15.0)


def _swap(features: RetrievalFeatures, fraction: float, seed: int) -> tuple[RetrievalFeatures, np.ndarray]:
    """Move the captions of ``fraction`` of the rows to rows of other images (a cycle through rows of distinct
    images); returns the swapped embeddings and the (n,) truth."""
    rng = np.random.default_rng(seed)
    n = len(features)
    per_image = n // len(features.image_embeds)
    chosen = rng.choice(len(features.image_embeds), size=int(fraction * n), replace=False) * per_image  # one per image
    texts = features.text_embeds.copy()
    texts[chosen] = features.text_embeds[np.roll(chosen, 1)]
    truth = np.zeros(n, dtype=bool)
    truth[chosen] = True
    return dataclasses.replace(features, text_embeds=texts), truth


# ------------------------------------------------------------------------------------------ caption mismatches


def test_planted_caption_swaps_are_found_with_high_precision_and_recall() -> None:
    clean = _captioned(num_images=120, per_image=5, seed=0)
    swapped, truth = _swap(clean, fraction=0.1, seed=1)
    other = draw_other_images(swapped.image_of, 120, 3, seed=0)
    found = find_caption_mismatches("train", swapped, other, is_mismatched=truth, n_boot=50)
    assert found.ground_truth is not None
    precision, recall = found.ground_truth.precision.estimate, found.ground_truth.recall.estimate
    assert precision is not None and recall is not None and precision >= 0.8 and recall >= 0.7
    low, high = found.prior.low, found.prior.high
    assert low is not None and high is not None and low <= truth.mean() <= high  # estimated, not assumed
    assert found.indices == sorted(found.indices, key=lambda i: -found.posterior[i])  # most likely first
    assert "caption_agreement" in found.feature_names and found.separation > 0.9
    untouched = find_caption_mismatches("train", clean, other, n_boot=50)
    assert untouched.fraction.estimate is not None and untouched.fraction.estimate <= 0.02
    assert untouched.checks[0].passed


def test_pair_features_are_log_probabilities_over_the_split() -> None:
    features = _captioned(num_images=4, per_image=3, seed=2)
    texts, images = np.array([0, 5, 11, 7]), np.array([0, 3, 3, 0])
    x, names = pair_features(features, texts, images)
    sims = features.text_embeds.astype(np.float64) @ features.image_embeds.T.astype(np.float64)  # (12, 4)
    scaled = 15.0 * sims
    want_t2i = scaled[texts, images] - logsumexp(scaled[texts], axis=1)
    want_i2t = scaled[texts, images] - logsumexp(scaled[:, images], axis=0)
    assert names[:3] == ("t2i_logprob", "i2t_logprob", "cosine")
    np.testing.assert_allclose(x[:, 0], want_t2i, rtol=1e-5)
    np.testing.assert_allclose(x[:, 1], want_i2t, rtol=1e-5)
    np.testing.assert_allclose(x[:, 2], sims[texts, images], rtol=1e-5)
    # agreement: mean cosine with the image's captions, the caption itself left out of its own image's
    text = features.text_embeds.astype(np.float64)
    own = text[0] @ text[[1, 2]].T  # caption 0 is image 0's, with captions 1 and 2
    other = text[5] @ text[[9, 10, 11]].T  # caption 5 (image 1) against image 3's captions
    np.testing.assert_allclose(x[:2, 3], [own.mean(), other.mean()], rtol=1e-5)


def test_single_caption_images_leave_out_the_agreement_features() -> None:
    features = _captioned(num_images=6, per_image=1, seed=3)
    _, names = pair_features(features, np.arange(6), np.arange(6))
    assert names == ("t2i_logprob", "i2t_logprob", "cosine")


def test_other_images_are_never_the_own_and_bad_settings_are_refused() -> None:
    image_of = np.repeat(np.arange(5), 4)
    other = draw_other_images(image_of, 5, 6, seed=0)
    assert other.shape == (20, 6) and not (other == image_of[:, None]).any() and set(other.ravel()) <= set(range(5))
    with pytest.raises(ConfigError, match="at least 2 images"):
        draw_other_images(np.zeros(3, dtype=np.int64), 1, 1)
    with pytest.raises(ConfigError, match="caption_negatives=0"):
        draw_other_images(image_of, 5, 0)
    features = _captioned(4, 2, seed=0)
    with pytest.raises(ConfigError, match="caption_mismatch_threshold=1.0"):
        find_caption_mismatches("x", features, draw_other_images(features.image_of, 4, 1), threshold=1.0)
    with pytest.raises(ConfigError, match="audit caption_mismatch_threshold=0.0"):
        AuditConfig(caption_mismatch_threshold=0.0)
    with pytest.raises(ConfigError, match="audit caption_negatives=0: must be >= 1"):
        AuditConfig(caption_negatives=0)


def test_audit_captions_lists_the_flagged_rows_with_their_image_ids() -> None:
    features, truth = _swap(_captioned(num_images=40, per_image=5, seed=4), fraction=0.1, seed=5)
    ids = [f"img{i:02d}.jpg" for i in features.image_of.tolist()]
    texts = [f"caption {i}" for i in range(len(features))]
    split = SplitData("train", [], np.full(len(features), -1), texts, image_ids=ids)
    report = AuditReport((), AuditConfig(n_boot=20, max_listed=3))
    audit_captions(report, {"train": split, "one": dataclasses.replace(split, image_ids=["a"] * len(ids))},
                   {"train": features}, {"train": truth})  # fmt: skip
    found = report.caption_mismatches["train"]
    assert found.ground_truth is not None
    assert found.listed[0]["image_id"] == ids[found.indices[0]] and found.listed[0]["text"] == texts[found.indices[0]]
    listed = report.as_dict()["caption_mismatches"]["train"]
    assert len(listed["listed"]) == 3 and listed["ground_truth"]["true_positives"] == found.ground_truth.true_positives
    assert "caption mismatch fraction (train)" in [c.name for c in report.checks]
    assert any("not searched in one" in note for note in report.notes)  # one image: nothing to compare with


# ------------------------------------------------------------------------------------------ duplicates by image


def test_captions_of_one_image_are_not_duplicates_but_copies_of_an_image_are() -> None:
    images = _world_images(4)
    images.append(_jpeg(images[1]))  # image 4 is a re-encoded copy of image 1
    image_of = np.repeat(np.arange(5), 2)  # 2 captions per image, rows 0..9
    texts = [f"image {i // 2} caption {i % 2}" for i in range(10)]
    texts[1] = texts[0]  # image 0 carries the same caption twice
    texts[8] = texts[2]  # the copy of image 1 repeats one of its captions
    found = find_duplicates("train", hash_images(images, image_of=image_of), texts)
    assert found.n == 10
    assert found.sets["near_images"].groups == [[2, 8]]  # images 1 and 4, named by their first rows
    assert found.sets["near_images"].fraction.n == 5 and found.sets["near_images"].redundant == 1  # of the images
    assert sorted(sorted(g) for g in found.sets["examples"].groups) == [[0, 1], [2, 8]]
    assert found.sets["texts"].redundant == 2


def test_leakage_is_found_image_by_image_and_counts_every_row_of_a_leaked_image() -> None:
    train_images, test_images = _world_images(6)[:3], _world_images(6)[3:]
    test_images[1] = _jpeg(train_images[2])  # a test image is a training image
    train_of, test_of = np.repeat(np.arange(3), 2), np.repeat(np.arange(3), 3)
    train_texts = [f"train {i}" for i in range(6)]
    test_texts = [f"test {i}" for i in range(9)]
    test_texts[4] = train_texts[5]  # and one of its captions is that image's training caption
    leak = find_leakage(
        "test", (hash_images(train_images, image_of=train_of), train_texts),
        (hash_images(test_images, image_of=test_of), test_texts),
    )  # fmt: skip
    assert leak.n == 9 and leak.leaked_images == [3, 4, 5] and leak.leaked_examples == [4]
    assert leak.image_matches[:, :2].tolist() == [[3, 4]]  # first test row of the image ~ first training row
    assert leak.leaked_texts == [4]


def test_rows_must_match_the_texts() -> None:
    hashes = hash_images(_world_images(2), image_of=np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="2 texts for 3 rows"):
        find_duplicates("x", hashes, ["a", "b"])
    with pytest.raises(ValueError, match="outside the 2 images"):
        hash_images(_world_images(2), image_of=np.array([0, 2]))


# ------------------------------------------------------------------------------------------ files and the command


def _captions_experiment(tmp_path: Path, root: Path) -> Path:
    data = {"class_path": "ImageTextDataModule", "init_args": {
        "source": {"format": "captions_csv", "root": str(root), "split_sizes": {"train": 6, "test": 4}},
        "image_size": 32, "batch_size": 4, "val_split": "test"}}  # fmt: skip
    config = tmp_path / "retrieval.yaml"
    config.write_text(yaml.safe_dump(read_experiment(MAIN_EXPERIMENT)[0] | {"data": data}))
    return config


def _tiny_retrieval(tmp_path: Path) -> list[str]:
    return ["--model.task=retrieval", *TINY_CLI_ARGS[:3], "--trainer.max_epochs=1", "--trainer.max_steps=2",
            "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--checkpoint.monitor=val/r_mean",
            f"--data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip


def test_split_data_of_files_reads_image_ids_and_decodes_each_image_once(tmp_path: Path) -> None:
    from mmfuse.commands._common import build_cli

    root = captions_dataset(tmp_path / "captions", num_images=10, captions_per_image=3)
    cli = build_cli(_captions_experiment(tmp_path, root), _tiny_retrieval(tmp_path), None)
    cli.datamodule.setup()
    train = splits_of(cli.datamodule)["train"]
    assert len(train) == 18 and train.num_images == 6 and not train.has_labels
    assert train.image_of().tolist() == np.repeat(np.arange(6), 3).tolist()
    images = list(train.images())
    assert len(images) == 6 and images[0].size == (8, 8)  # the file at its native size, not the model's 32 px


def test_an_image_file_gone_since_the_manifest_was_prepared_is_named(tmp_path: Path) -> None:
    from mmfuse.commands._common import build_cli

    root = captions_dataset(tmp_path / "captions", num_images=10, captions_per_image=2)
    cli = build_cli(_captions_experiment(tmp_path, root), _tiny_retrieval(tmp_path), None)
    cli.datamodule.setup()
    test = splits_of(cli.datamodule)["test"]
    assert test.image_files is not None
    gone = Path(test.image_files[2])  # row 2: the first row of the test split's second image
    gone.unlink()
    with pytest.raises(ConfigError, match=rf"split 'test', row 2: .*{gone.name}: no such file"):
        list(test.images())


def test_audit_of_caption_data_with_a_tiny_retrieval_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = captions_dataset(tmp_path / "captions", num_images=10, captions_per_image=3)
    out = tmp_path / "audit"
    args = ["audit", "--config", str(_captions_experiment(tmp_path, root)), *_tiny_retrieval(tmp_path),
            "--out", str(out), "--n-boot", "20", "--caption-itm"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    report = json.loads((out / "audit.json").read_text())
    assert report["balance"] == {} and report["label_errors"] == {} and report["mismatches"] == {}
    assert set(report["caption_mismatches"]) == {"train", "test"}
    train = report["caption_mismatches"]["train"]
    assert train["n"] == 18 and train["images"] == 6 and "itm_logit" in train["features"]
    assert report["duplicates"]["train"]["n"] == 18 and report["leakage"]["test"]["n"] == 12
    assert any("no class labels" in note for note in report["notes"])
    assert {"duplicates.png", "caption_mismatches.png"} <= {p.name for p in out.iterdir()}
    assert "## Likely caption-image mismatches" in (out / "audit.md").read_text()
    assert "| caption mismatch fraction (test) |" in capsys.readouterr().out


def test_retrieval_features_read_each_image_once_and_score_the_asked_pairs(tmp_path: Path) -> None:
    from mmfuse.commands._common import build_cli

    root = captions_dataset(tmp_path / "captions", num_images=10, captions_per_image=3)
    cli = build_cli(_captions_experiment(tmp_path, root), _tiny_retrieval(tmp_path), None)
    cli.datamodule.setup()
    split = splits_of(cli.datamodule)["test"]
    model = cli.model.model.eval()
    calls = []
    model.vision.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    pairs = np.stack([split.image_of(), (split.image_of() + 1) % 4], axis=1)
    features = extract_retrieval_features(model, split, cli.datamodule.tokenizer, 5, max_length=16, match_images=pairs)
    assert sum(calls) == 4  # the 4 distinct images, once each
    assert features.image_embeds.shape[0] == 4 and features.text_embeds.shape[0] == 12
    np.testing.assert_allclose(np.linalg.norm(features.text_embeds, axis=1), 1.0, rtol=1e-5)
    assert features.match_prob is not None and features.match_prob.shape == (12, 2)
    row = split.rows[0]  # the ITM probability of row 0 with its own image, computed directly
    batch = cli.datamodule._loader_kwargs()["collate_fn"]([row])
    with torch.inference_mode():
        direct = model(batch.images, batch.input_ids, batch.attention_mask).logits.softmax(-1)[0, 1]
    assert float(direct) == pytest.approx(float(features.match_prob[0, 0]), abs=1e-4)


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.parametrize(
    ("name", "source", "splits"),
    [
        ("flickr8k-1k-small", {"format": "captions_csv", "split_sizes": {"train": 800, "test": 200}},
         {"train": (4000, 800), "test": (1000, 200)}),
        ("coco-mini", {"format": "coco"}, {"train": (400, 80), "val": (395, 79)}),
    ],
)  # fmt: skip
def test_data_only_audit_of_real_caption_data(
    name: str, source: dict, splits: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = shared_dataset(name)
    source = {**source, "root": str(root), "verify_images": False}  # the audit decodes every image anyway
    evaluation = next(s for s in splits if s != "train")
    data = {"class_path": "ImageTextDataModule",
            "init_args": {"source": source, "image_size": 32, "val_split": evaluation}}  # fmt: skip
    config = tmp_path / "real.yaml"
    config.write_text(yaml.safe_dump(read_experiment(MAIN_EXPERIMENT)[0] | {"data": data}))
    out = tmp_path / "audit"
    with pytest.raises(SystemExit):
        main(["audit", "--config", str(config), *_tiny_retrieval(tmp_path), "--out", str(out), "--data-only",
              "--no-plots", "--n-boot", "20"])  # fmt: skip
    report = json.loads((out / "audit.json").read_text())
    for split, (rows, images) in splits.items():
        near = report["duplicates"][split]["near_images"]
        assert report["duplicates"][split]["n"] == rows and near["fraction"]["n"] == images
        assert near["redundant"] == 0  # no near-duplicate photos here, and captions of one photo are not counted
    assert all(leak["leaked_images"] == 0 for leak in report["leakage"].values())


def test_a_reencoded_real_photo_is_a_near_duplicate_and_distinct_photos_are_not() -> None:
    root = shared_dataset("flickr8k-1k-small")
    photos = [Image.open(p).convert("RGB") for p in sorted((root / "images").glob("*.jpg"))[:40]]
    copy = _jpeg(photos[7].resize((photos[7].width // 2, photos[7].height // 2)))
    found = find_duplicates("x", hash_images([*photos, copy]), [str(i) for i in range(41)])
    assert found.sets["near_images"].groups == [[7, 40]] and found.sets["exact_images"].groups == []
