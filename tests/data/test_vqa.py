"""VQA answers: normalisation, vocabulary from training answers only, soft targets, soft accuracy; the VQA reader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmfuse.data.formats import FileSourceConfig
from mmfuse.data.manifest import load_manifest, prepare_manifest
from mmfuse.data.vqa import (
    UNKNOWN_ANSWER,
    build_answer_vocabulary,
    normalize_answer,
    soft_target_tensor,
    soft_targets,
    vqa_accuracy,
)
from tests.data._make import rgb_image


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Yes", "yes"),
        ("  two\t", "2"),
        ("The dog.", "dog"),
        ("an apple", "apple"),
        ("none", "0"),
        ("isnt", "isn't"),
        ("t-shirt", "t shirt"),
        ("3,000", "3000"),  # a digit,digit comma: marks are dropped, not spaced
        ("1.5", "1.5"),  # a decimal point stays
        ("yes!", "yes"),
    ],
)
def test_official_answer_normalisation(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("yes", ["yes"] * 10, 1.0),
        ("yes", ["yes"] * 3 + ["no"] * 7, 0.9),  # 3 humans: 3 leave-outs score 2/3, 7 score 1
        ("yes", ["yes"] * 2 + ["no"] * 8, 0.6),  # 2 leave-outs score 1/3, 8 score 2/3
        ("yes", ["yes"] + ["no"] * 9, 0.3),  # 1 leave-out scores 0, 9 score 1/3
        ("maybe", ["yes"] * 10, 0.0),
        ("Two", ["2"] * 4 + ["3"] * 6, 1.0),  # normalised; 4 humans: every leave-out still has >= 3
        ("the red one", ["red 1"] * 3 + ["blue"] * 7, 0.9),
    ],
)
def test_soft_vqa_accuracy_on_hand_made_answers(prediction: str, answers: list[str], expected: float) -> None:
    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_accuracy_needs_answers() -> None:
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("yes", [])


def test_vocabulary_is_top_k_with_unknown_first() -> None:
    answers = [["yes"] * 10, ["no"] * 6 + ["Two"] * 4, ["2"] * 3 + ["cat"] * 7]
    vocab = build_answer_vocabulary(answers, size=3)
    assert vocab == (UNKNOWN_ANSWER, "yes", "2", "cat")  # yes 10, 2 7 (two+2), cat 7 (tie: alphabetical), no 6 out


def test_soft_targets_and_dense_tensor() -> None:
    index = {UNKNOWN_ANSWER: 0, "yes": 1, "no": 2}
    indices, scores = soft_targets(["yes"] * 2 + ["no"] * 5 + ["rare"] * 3, index)
    assert indices == [1, 2] and scores == pytest.approx([0.6, 1.0])  # "rare" is out of vocabulary: no target
    dense = soft_target_tensor([indices, []], [scores, []], num_classes=3)
    torch.testing.assert_close(dense, torch.tensor([[0.0, 0.6, 1.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("count", range(11))
def test_soft_target_scores_are_the_vqa_accuracy_of_answering_that_class(count: int) -> None:
    answers = ["yes"] * count + ["no"] * (10 - count)
    indices, scores = soft_targets(answers, {UNKNOWN_ANSWER: 0, "yes": 1, "no": 2})
    by_class = dict(zip(indices, scores))
    assert by_class.get(1, 0.0) == pytest.approx(vqa_accuracy("yes", answers))
    assert by_class.get(2, 0.0) == pytest.approx(vqa_accuracy("no", answers))
    assert by_class.get(1, 0.0) == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0][count])


def _questions(subtype: str, rows: list[tuple[int, int, str]]) -> dict:
    items = [{"question_id": q, "image_id": i, "question": text} for q, i, text in rows]
    return {"data_subtype": subtype, "questions": items}


def _annotations(rows: list[tuple[int, int, list[str]]]) -> dict:
    anns = [
        {"question_id": q, "image_id": i, "multiple_choice_answer": answers[0], "answers": [
            {"answer": a, "answer_id": k + 1, "answer_confidence": "yes"} for k, a in enumerate(answers)
        ]}
        for q, i, answers in rows
    ]  # fmt: skip
    return {"annotations": anns}


def vqa_layout(root: Path) -> Path:
    """Train (3 questions), val (2: one answer unseen in training), test-dev (1, no answers), with images."""
    for subtype, image_id in (("train2014", 1), ("train2014", 2), ("val2014", 3), ("test2015", 4)):
        rgb_image(root / subtype / f"COCO_{subtype}_{image_id:012d}.jpg", (10, 10))
    files = {
        "v2_OpenEnded_mscoco_train2014_questions.json": _questions(
            "train2014", [(10, 1, "what colour?"), (11, 1, "how many?"), (12, 2, "is it?")]
        ),
        "v2_mscoco_train2014_annotations.json": _annotations(
            [(10, 1, ["red"] * 8 + ["blue"] * 2), (11, 1, ["two"] * 2 + ["3"] * 8), (12, 2, ["yes"] * 10)]
        ),
        "v2_OpenEnded_mscoco_val2014_questions.json": _questions("val2014", [(20, 3, "what?"), (21, 3, "colour?")]),
        "v2_mscoco_val2014_annotations.json": _annotations([(20, 3, ["zebra"] * 10), (21, 3, ["red"] * 2 + ["x"] * 8)]),
        "v2_OpenEnded_mscoco_test-dev2015_questions.json": _questions("test-dev2015", [(30, 4, "why?")]),
    }
    for name, data in files.items():
        (root / name).write_text(json.dumps(data))
    return root


def test_vqa_reader_builds_the_vocabulary_from_training_answers_only(tmp_path: Path, cache_dir: Path) -> None:
    root = vqa_layout(tmp_path / "vqa")
    manifest = load_manifest(
        prepare_manifest(FileSourceConfig(format="vqa", root=str(root), answer_vocab_size=3), cache_dir)
    )
    assert manifest.class_names == (UNKNOWN_ANSWER, "yes", "3", "red")  # 10, 8, 8 (ties alphabetical); 2, blue out
    assert {name: split["rows"] for name, split in manifest.splits.items()} == {"train": 3, "val": 2, "test-dev": 1}
    train = manifest.dataset("train").to_list()
    assert [row["label"] for row in train] == [
        3,
        0,
        1,
    ]  # multiple_choice_answer "two" -> "2", out of the vocabulary: <unk>
    assert train[0]["soft_target_indices"] == [3] and train[0]["soft_target_scores"] == [1.0]  # blue not in vocab
    assert train[1]["answers"][:2] == ["two", "two"] and train[0]["image_id"] == "1"
    val = manifest.dataset("val").to_list()
    assert val[0]["label"] == 0 and val[0]["soft_target_indices"] == []  # "zebra" never seen in training -> <unk>
    assert val[1]["soft_target_indices"] == [3] and val[1]["soft_target_scores"] == pytest.approx([0.6])
    test = manifest.dataset("test-dev").to_list()[0]
    assert (
        test["label"] == -1 and test["answers"] == [] and test["image_path"].endswith("COCO_test2015_000000000004.jpg")
    )
