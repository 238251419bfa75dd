"""Readers of the two COCO-image layouts: COCO captions and VQA v2.

COCO captions (Chen et al., 2015): ``<root>/annotations/captions_<split><year>.json`` (``info``, ``licenses``,
``images`` with ``id`` and ``file_name``, ``annotations`` with ``image_id``, ``id`` and ``caption``), images in
``<root>/[<image_dir>/]<split><year>/<file_name>``. Each annotation is one record; images without annotations (such
as the unannotated half of coco-mini's ``val2017/``) are not records. COCO's test images have no public captions,
so a data module falls back to ``val`` for testing.

VQA v2 (Goyal et al., 2017): ``*questions*.json`` (``questions``: ``question_id``, ``image_id``, ``question``) and
``*annotations*.json`` (``annotations``: ``question_id``, ``multiple_choice_answer`` and 10 ``answers``), matched by
their ``<subtype><year>`` (``train2014``, ``val2014``, ``test-dev2015``, ``test2015``), at the root or one folder
down; images in ``<root>/[<image_dir>/]<subtype><year>/COCO_<subtype><year>_<image_id:012d>.jpg`` (test-dev uses
the test images). The answer vocabulary is built from the training annotations only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmfuse.data.formats import DATA_FORMATS, FileSourceConfig, SourceData, _check_split_files, _malformed, _record
from mmfuse.data.vqa import build_answer_vocabulary, normalize_answer, soft_targets
from mmfuse.errors import ConfigError
from mmfuse.io import read_json

__all__ = ["CocoCaptionsReader", "VqaReader"]

_CAPTIONS_FILE = re.compile(r"captions_([a-z]+)(\d{4})\.json$")
_VQA_SUBTYPE = re.compile(r"(test-dev|train|val|test)(\d{4})")
_SPLIT_NAMES = {"train": "train", "val": "val", "test": "test", "test-dev": "test-dev"}


@DATA_FORMATS.register("coco")
class CocoCaptionsReader:
    """COCO captions JSON (``annotations/captions_<split><year>.json``); one record per caption."""

    def __init__(self, cfg: FileSourceConfig, root: Path) -> None:
        self.root, self.image_dir = root, cfg.image_dir or ""
        if cfg.split_files:
            self.split_files = _check_split_files(root, cfg.split_files, "COCO captions")
        else:
            found = sorted((root / "annotations").glob("captions_*.json"))
            self.split_files = {
                _SPLIT_NAMES.get(m.group(1), m.group(1)): str(p.relative_to(root))
                for p in found
                if (m := _CAPTIONS_FILE.search(p.name))
            }
            _check_split_files(root, self.split_files, "COCO captions (annotations/captions_*.json)")

    def source_files(self) -> list[Path]:
        return [self.root / name for name in self.split_files.values()]

    def read(self) -> SourceData:
        return SourceData(self._records)

    def _folder(self, name: str) -> str:
        """``train2017`` from ``annotations/captions_train2017.json``; else the file's stem after ``captions_``."""
        match = _CAPTIONS_FILE.search(os.path.basename(name))
        folder = match.group(1) + match.group(2) if match else Path(name).stem.removeprefix("captions_")
        return os.path.join(self.image_dir, folder)

    def _records(self) -> Iterator[dict[str, Any]]:
        for split, name in self.split_files.items():
            data = read_json(self.root / name)
            files = {image.get("id"): image.get("file_name") for image in data.get("images", [])}
            folder = self._folder(name)
            for index, ann in enumerate(data.get("annotations", [])):
                image_id = ann.get("image_id")
                if image_id not in files:
                    yield _malformed(split, index, name, f"annotation {ann.get('id')} names unknown image {image_id}")
                    continue
                file_name = files[image_id]
                path = os.path.join(folder, file_name) if isinstance(file_name, str) and file_name else file_name
                yield _record(split, index, name, str(ann.get("id")), path, image_id, ann.get("caption"))


def _vqa_files(root: Path, kind: str) -> dict[str, Path]:
    """``<subtype><year>`` -> the questions or annotations JSON, at the root or one folder down."""
    found: dict[str, Path] = {}
    for path in sorted([*root.glob(f"*{kind}*.json"), *root.glob(f"*/*{kind}*.json")]):
        match = _VQA_SUBTYPE.search(path.name)
        if match:
            found.setdefault(match.group(0), path)
    return found


@DATA_FORMATS.register("vqa")
class VqaReader:
    """VQA v2 questions + annotations; one record per question, with soft targets over a train-only vocabulary."""

    def __init__(self, cfg: FileSourceConfig, root: Path) -> None:
        self.cfg, self.root = cfg, root
        self.questions = _vqa_files(root, "questions")
        self.annotations = _vqa_files(root, "annotations")
        if not self.questions:
            raise ConfigError(
                f"data.source.root={str(root)!r}: no VQA *questions*.json (at the root or one folder down)"
            )
        if not any(s.startswith("train") for s in self.annotations):
            raise ConfigError(
                f"data.source.root={str(root)!r}: no train *annotations*.json; the VQA answer vocabulary is built "
                "from the training answers only"
            )

    def source_files(self) -> list[Path]:
        return [*self.questions.values(), *self.annotations.values()]

    def read(self) -> SourceData:
        from datasets import Sequence, Value

        train = next(path for subtype, path in self.annotations.items() if subtype.startswith("train"))
        answers = [[a.get("answer", "") for a in ann.get("answers", [])] for ann in read_json(train)["annotations"]]
        vocab = build_answer_vocabulary(answers, self.cfg.answer_vocab_size)
        extras = {
            "question_id": Value("int64"),
            "answers": Sequence(Value("string")),
            "soft_target_indices": Sequence(Value("int64")),
            "soft_target_scores": Sequence(Value("float32")),
        }
        index = {answer: i for i, answer in enumerate(vocab)}
        return SourceData(lambda: self._records(index), vocab, extras, {"answer_vocabulary_size": len(vocab) - 1})

    def _records(self, vocab: dict[str, int]) -> Iterator[dict[str, Any]]:
        for subtype, path in self.questions.items():
            match = _VQA_SUBTYPE.fullmatch(subtype)
            assert match is not None
            split, name = _SPLIT_NAMES[match.group(1)], str(path.relative_to(self.root))
            annotations = self._annotations(subtype)
            image_folder = os.path.join(self.cfg.image_dir or "", subtype.replace("test-dev", "test"))
            for index, question in enumerate(read_json(path).get("questions", [])):
                yield self._record(split, index, name, question, annotations, image_folder, vocab)

    def _annotations(self, subtype: str) -> dict[Any, dict[str, Any]] | None:
        path = self.annotations.get(subtype)
        return None if path is None else {a.get("question_id"): a for a in read_json(path).get("annotations", [])}

    @staticmethod
    def _record(
        split: str,
        index: int,
        name: str,
        question: dict[str, Any],
        annotations: dict[Any, dict[str, Any]] | None,
        image_folder: str,
        vocab: dict[str, int],
    ) -> dict[str, Any]:
        """One question as a record; ``annotations`` None = a split without answers (test)."""
        question_id, image_id = question.get("question_id"), question.get("image_id")
        if not isinstance(question_id, int) or not isinstance(image_id, int):
            return _malformed(split, index, name, f"question {question_id!r} lacks an integer question_id/image_id")
        file_name = f"COCO_{os.path.basename(image_folder)}_{image_id:012d}.jpg"
        record = _record(split, index, name, str(question_id), os.path.join(image_folder, file_name), image_id,
                         question.get("question"))  # fmt: skip
        annotation = annotations.get(question_id) if annotations is not None else None
        if annotations is not None and annotation is None:
            record["problem"] = ("malformed_record", f"question {question_id} has no annotation")
        answers = [a.get("answer", "") for a in annotation.get("answers", [])] if annotation else []
        indices, scores = soft_targets(answers, vocab)
        if annotation is not None:
            record["label"] = vocab.get(normalize_answer(annotation.get("multiple_choice_answer", "")), 0)
        record.update(question_id=question_id, answers=answers, soft_target_indices=indices, soft_target_scores=scores)
        return record
