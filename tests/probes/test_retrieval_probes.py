"""Probes of retrieval models: a model that reads gendered words reorders its gallery when they are swapped and one
that does not keeps every rank; a model blind to one modality loses no recall when that modality is perturbed; both
probes run end to end through ``mmfuse probe`` on a tiny fitted retrieval checkpoint."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor, nn

from mmfuse.cli import main
from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.errors import ConfigError
from mmfuse.experiment import read_experiment
from mmfuse.heads import MATCH
from mmfuse.metrics.retrieval import recall_at_k
from mmfuse.models import ImageTextModel
from mmfuse.probes import (
    AttributeLexicon,
    RetrievalData,
    retrieval_counterfactual_report,
    retrieval_robustness_report,
)
from mmfuse.probes.retrieval_data import embed_images, embed_texts, i2t_hits, true_image_ranks
from mmfuse.types import DataSpec, EncoderOutput
from tests.conftest import REPO, TINY_CLI_ARGS, TINY_TEXT, TINY_VISION
from tests.data._make import rgb_image, write_captions_csv

VOCAB = ["a", "she", "he", "woman", "man", "wears", "red", "blue", "green", "walks", "her", "his", "dog", "runs"]
GENDER = AttributeLexicon("gender", {"female": ("she", "woman", "her"), "male": ("he", "man", "his")})
RED, YELLOW, BLUE = (255, 0, 0), (255, 255, 0), (0, 0, 255)
FAST: dict[str, Any] = {"n_boot": 50, "batch_size": 4}


class _Contrastive(nn.Module):
    def embed_image(self, pooled: Tensor) -> Tensor:
        return F.normalize(pooled, dim=-1)

    def embed_text(self, pooled: Tensor) -> Tensor:
        return F.normalize(pooled, dim=-1)


class _MeanColour(nn.Module):
    """(B, 3, H, W) -> pooled (B, 3): the mean colour, or a constant when ``blind``."""

    def __init__(self, blind: bool = False) -> None:
        super().__init__()
        self.blind = blind

    def forward(self, images: Tensor) -> EncoderOutput:
        pooled = torch.ones(len(images), 3) if self.blind else images.mean(dim=(2, 3))  # (B, 3)
        return EncoderOutput(tokens=pooled[:, None], mask=None, pooled=pooled)


class _WordSum(nn.Module):
    """(B, L) ids -> pooled (B, 3): the sum of a fixed vector per word plus a bias (every word zero = text-blind)."""

    def __init__(self, vectors: Tensor, bias: Sequence[float]) -> None:
        super().__init__()
        self.table = nn.Embedding.from_pretrained(vectors)
        self.register_buffer("bias", torch.tensor(bias))

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> EncoderOutput:
        tokens = self.table(input_ids) * attention_mask[..., None]  # (B, L, 3)
        return EncoderOutput(tokens=tokens, mask=attention_mask, pooled=tokens.sum(dim=1) + self.bias)


class HandRetrievalModel(nn.Module):
    """Image: its mean colour; caption: the sum of its words' colour vectors; match logit: 4 x their cosine.

    Args:
        tokenizer: the data's tokenizer (word ids -> vectors).
        words: word -> (r, g, b) vector; other words add nothing.
        bias: added to every caption's vector.
        image_blind: every image gets the same embedding.
    """

    def __init__(
        self,
        tokenizer: Any,
        words: Mapping[str, Sequence[float]],
        bias: Sequence[float] = (0.0, 0.0, 0.0),
        image_blind: bool = False,
    ) -> None:
        super().__init__()
        vectors = torch.zeros(len(tokenizer), 3)
        for word, vector in words.items():
            vectors[tokenizer.convert_tokens_to_ids(word)] = torch.tensor(vector)
        self.vision = _MeanColour(image_blind)
        self.text = _WordSum(vectors, bias)
        self.contrastive = _Contrastive()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> SimpleNamespace:
        return self.fuse(self.vision(images), self.text(input_ids, attention_mask))

    def fuse(self, image: EncoderOutput, text: EncoderOutput) -> SimpleNamespace:
        cosine = (F.normalize(image.pooled, dim=-1) * F.normalize(text.pooled, dim=-1)).sum(dim=-1)  # (B,)
        logits = torch.zeros(len(cosine), 2)
        logits[:, MATCH] = self.scale * cosine
        return SimpleNamespace(logits=logits)


def _data(captions: Sequence[tuple[tuple[int, int, int], str]], limit: int | None = None) -> RetrievalData:
    """Retrieval data from (colour, caption) rows; rows of one colour show one image."""
    images = {colour: Image.new("RGB", (32, 32), colour) for colour, _ in captions}
    rows = [{"image": images[c], "text": t, "image_id": str(c), "label": -1} for c, t in captions]
    return RetrievalData.from_split(rows, ImageTextCollator(train_word_tokenizer(VOCAB)), limit=limit)


def _gendered() -> RetrievalData:
    """A red and a yellow image, each with captions that name a woman, a man, or nobody; and a blue image."""
    return _data([
        (RED, "she wears red"), (RED, "a man wears red"), (RED, "a dog runs"),
        (YELLOW, "a woman wears red"), (YELLOW, "he wears red"), (BLUE, "a dog wears blue"),
    ])  # fmt: skip


def _tokenizer(data: RetrievalData) -> Any:
    return data.collate.tokenizer  # type: ignore[attr-defined]


def test_from_split_keeps_each_image_once_with_every_caption() -> None:
    rows = [(RED, "a red one"), (BLUE, "a blue one"), (RED, "red again"), (YELLOW, "yellow"), (BLUE, "blue again")]
    data = _data(rows, limit=2)
    assert data.image_names == (str(RED), str(BLUE)) and len(data.images) == 2
    assert data.texts == ("a red one", "a blue one", "red again", "blue again") and data.indices == (0, 1, 2, 4)
    assert data.text_images.tolist() == [0, 1, 0, 1]
    batches = list(data.image_batches(1))
    assert [tuple(b.shape) for b in batches] == [(1, 3, 32, 32)] * 2 and float(batches[1][0, 2].mean()) == 1.0
    assert [len(b.input_ids) for b in data.caption_batches(3, rows=[3, 0], texts=["x", "y"])] == [2]


def test_rows_without_image_ids_are_refused_with_the_reason() -> None:
    rows = [{"image": Image.new("RGB", (4, 4)), "text": "a dog", "label": 0}]
    with pytest.raises(ConfigError, match="the split's rows carry no 'image_id'"):
        RetrievalData.from_split(rows, ImageTextCollator(train_word_tokenizer(VOCAB)))


def test_ranks_and_hits_agree_with_the_recall_of_evaluation() -> None:
    texts, images = F.normalize(torch.randn(40, 8), dim=-1), F.normalize(torch.randn(10, 8), dim=-1)
    text_images = torch.arange(40) % 10
    ranks = true_image_ranks(texts, images, text_images)
    assert int(ranks.min()) >= 1 and int(ranks.max()) <= 10
    expected = recall_at_k(texts @ images.T, text_images, ks=(1, 5))
    for k in (1, 5):
        assert float((ranks <= k).float().mean()) == pytest.approx(float(expected[f"t2i_r{k}"]))
        assert float(i2t_hits(texts, images, text_images, k).float().mean()) == pytest.approx(
            float(expected[f"i2t_r{k}"])
        )


def test_a_model_blind_to_gendered_words_keeps_every_rank() -> None:
    data = _gendered()
    colours = {"red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0), "she": (0.0, 1.0, 0.0), "he": (0.0, 1.0, 0.0)}
    model = HandRetrievalModel(_tokenizer(data), colours)  # she and he: the same vector; woman/man: none
    report = retrieval_counterfactual_report(model, data, {"gender": GENDER}, **FAST)
    overall = report["gender"].overall
    assert report.passed and overall is not None
    assert (overall.n_images, overall.n_captions, overall.n_counterfactuals) == (2, 4, 4)  # "a dog ..." not probed
    for figure in (overall.rank_change_rate, overall.top1_flip_rate, overall.mean_abs_delta_rank):
        assert figure.estimate == 0.0
    assert overall.mean_abs_delta_match.estimate == pytest.approx(0.0, abs=1e-6)
    assert {p.label for p in report["gender"].pairs} == {"female -> male", "male -> female"}


def test_a_model_reading_gendered_words_flips_every_probed_caption() -> None:
    data = _gendered()
    # "she"/"woman" pull a caption towards green: towards the yellow image and away from the red one.
    words = {"red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0), "she": (0.0, 2.0, 0.0), "woman": (0.0, 2.0, 0.0)}
    model = HandRetrievalModel(_tokenizer(data), words)
    report = retrieval_counterfactual_report(model, data, {"gender": GENDER}, tolerance=0.5, **FAST)
    overall = report["gender"].overall
    assert not report.passed and overall is not None and not overall.passed
    assert overall.top1_flip_rate.estimate == overall.rank_change_rate.estimate == 1.0
    assert overall.mean_abs_delta_rank.estimate == 1.0 and overall.recall_at_1 == (0.5, 0.5)
    examples = report["gender"].examples
    assert {(e["original"], e["counterfactual"]) for e in examples} >= {("she wears red", "he wears red")}
    first = next(e for e in examples if e["original"] == "she wears red")
    assert (first["rank_before"], first["rank_after"], first["top1_after"]) == (2, 1, str(RED))
    summary = report.to_markdown()
    assert "| gender | 2 | 4 | 4 | 1.000 [1.000, 1.000] |" in summary and "Largest |Δrank|" in summary


def test_an_attribute_no_caption_mentions() -> None:
    data = _data([(RED, "a dog wears red"), (BLUE, "a dog wears blue")])
    model = HandRetrievalModel(_tokenizer(data), {"red": (1.0, 0.0, 0.0)})
    with pytest.raises(ConfigError, match="none of the 2 captions has a probed attribute"):
        retrieval_counterfactual_report(model, data, {"gender": GENDER}, **FAST)
    with pytest.raises(ConfigError, match="attribute 'gender': none of the 2 captions contains any of its terms"):
        retrieval_counterfactual_report(model, data, {"gender": GENDER}, attributes=["gender"], **FAST)


def test_a_classification_model_is_refused_with_its_task() -> None:
    data = _gendered()
    with pytest.raises(ConfigError, match="need a model built with task: retrieval"):
        retrieval_counterfactual_report(nn.Linear(2, 2), data, {"gender": GENDER}, **FAST)


@pytest.mark.parametrize("blind", ["text", "image"])
def test_a_model_blind_to_one_modality_loses_nothing_when_it_is_perturbed(blind: str) -> None:
    data = _gendered()
    words = {"red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0), "woman": (0.0, 1.0, 0.0)}
    bias = (0.3, 0.2, 0.1)
    model = HandRetrievalModel(_tokenizer(data), {} if blind == "text" else words, bias, image_blind=blind == "image")
    report = retrieval_robustness_report(
        model, data, image_corruptions=["gaussian_noise"], text_perturbations=["word_dropout"], joint="none",
        severities=[1, 5], k=1, **FAST,
    )  # fmt: skip
    untouched = report.curves(blind)
    assert list(untouched) == (["word_dropout"] if blind == "text" else ["gaussian_noise"])
    for condition in next(iter(untouched.values())):
        for d in ("t2i", "i2t"):
            assert condition.recall[d].estimate == report.clean[d].estimate
            assert condition.relative_drop[d].estimate in (0.0, None)


def _tiny_model(vocab_size: int) -> ImageTextModel:
    spec = DataSpec(num_classes=2, vocab_size=vocab_size, pad_token_id=0, image_size=32, class_names=())
    cfg = ModelConfig(task="retrieval", width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"])
    return ImageTextModel(resolve_model_config(cfg, spec)).eval()


def test_robustness_of_a_random_model_is_deterministic_and_written(tmp_path: Path) -> None:
    colours = [(i * 40, 255 - i * 30, (i * 90) % 256) for i in range(6)]
    words = [" ".join(VOCAB[(2 * i + 7 * k + 3 * j) % len(VOCAB)] for j in range(4)) for i in range(6) for k in (0, 1)]
    data = _data([(colours[n // 2], text) for n, text in enumerate(words)])  # 12 different captions, 2 per image
    model = _tiny_model(len(_tokenizer(data)))
    settings: dict[str, Any] = {"image_corruptions": ["jpeg", "occlusion"], "text_perturbations": ["typos"],
                                "severities": [2, 4], "k": 2, "seed": 3, **FAST}  # fmt: skip
    report = retrieval_robustness_report(model, data, **settings)
    assert report.to_dict() == retrieval_robustness_report(model, data, **settings).to_dict()
    texts = embed_texts(model, data.caption_batches(4))
    images = embed_images(model, data.image_batches(4))
    expected = recall_at_k(texts @ images.T, data.text_images, ks=(2,))
    assert report.clean["t2i"].estimate == pytest.approx(float(expected["t2i_r2"]))
    assert report.clean["i2t"].estimate == pytest.approx(float(expected["i2t_r2"]))
    kinds = [(c.kind, c.name, c.severity) for c in report.conditions]
    assert len(kinds) == 2 * 2 + 2 + 2 and ("joint", "mixed", 4) in kinds
    paths = report.write(tmp_path)
    assert [p.name for p in paths] == ["robustness.json", "robustness.md", "robustness.png"]
    written = json.loads(paths[0].read_text())
    assert written["task"] == "retrieval" and written["n_images"] == 6 and written["n_captions"] == 12
    assert set(written["conditions"][0]) >= {"t2i_recall", "i2t_recall", "t2i_relative_drop", "i2t_relative_drop"}
    assert paths[2].read_bytes()[:4] == b"\x89PNG" and "Text → image recall@2" in paths[1].read_text()


# End to end through the command line, on a tiny retrieval model fitted on a few captioned solid-colour images.

GENDERED = ["a woman wears red", "she walks a dog", "a man wears blue", "he walks his dog"]


def _captioned_images(root: Path, num_images: int) -> Path:
    rows = []
    for i in range(num_images):
        rgb_image(root / "images" / f"img{i:02d}.png", (8, 8), (i * 30 % 256, 90, 200 - i * 10))
        rows += [(f"img{i:02d}.png", GENDERED[i % len(GENDERED)]), (f"img{i:02d}.png", "a dog runs")]
    write_captions_csv(root / "captions.txt", rows)
    return root


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, checkpoint) of one epoch of a tiny retrieval model on 8 train and 4 test images, each with one
    gendered caption and one without (read only)."""
    tmp = tmp_path_factory.mktemp("retrieval-run")
    root = _captioned_images(tmp / "captions", 12)
    data = {"class_path": "ImageTextDataModule", "init_args": {
        "source": {"format": "captions_csv", "root": str(root), "split_sizes": {"train": 8, "test": 4}},
        "image_size": 32, "batch_size": 4, "val_split": "test", "cache_dir": str(tmp / "cache")}}  # fmt: skip
    config = tmp / "retrieval.yaml"
    config.write_text(yaml.safe_dump(read_experiment(REPO / "experiments" / "shapes_color.yaml")[0] | {"data": data}))
    main(["fit", "--config", str(config), "--model.task=retrieval", *TINY_CLI_ARGS[:3], "--trainer.max_epochs=1",
          "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp / 'runs'}",
          "--checkpoint.monitor=val/r_mean", "--checkpoint.filename=last"])  # fmt: skip
    run = tmp / "runs" / "version_0"
    return run / "config.yaml", run / "checkpoints" / "last.ckpt"


def _probe(capsys: pytest.CaptureFixture, run: tuple[Path, Path], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", args[0], "--config", str(run[0]), "--ckpt", str(run[1]), *args[1:]])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_counterfactual_command_on_a_retrieval_checkpoint(
    retrieval_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--out", str(tmp_path), "--attributes", "gender", "--n-boot", "50", "--tolerance", "1"]
    code, stdout, _ = _probe(capsys, retrieval_run, "counterfactual", *args)
    report = json.loads((tmp_path / "counterfactual.json").read_text())
    assert code == 0 and report["passed"] and report["task"] == "retrieval"
    assert (report["n_images"], report["n_captions"], report["split"]) == (4, 8, "test")
    [gender] = report["attributes"]
    assert gender["attribute"] == "gender" and gender["overall"]["n_captions"] == 4  # "a dog runs" has no term
    assert "# Counterfactual invariance of retrieval" in stdout and "| gender | 4 | 4 | 4 |" in stdout
    code, _, _ = _probe(capsys, retrieval_run, "counterfactual", *args[:-1], "0", "--n", "2")
    report = json.loads((tmp_path / "counterfactual.json").read_text())
    assert report["n_images"] == 2 and code == (0 if report["passed"] else 1)


def test_robustness_command_on_a_retrieval_checkpoint(
    retrieval_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--out", str(tmp_path), "--image-corruptions", "brightness", "--text-perturbations", "case",
            "--severities", "1", "3", "--n-boot", "50", "--k", "2"]  # fmt: skip
    code, stdout, _ = _probe(capsys, retrieval_run, "robustness", *args)
    report = json.loads((tmp_path / "robustness.json").read_text())
    assert code == 0 and report["task"] == "retrieval" and report["k"] == 2 and report["n_captions"] == 8
    assert [(c["kind"], c["name"], c["severity"]) for c in report["conditions"]] == [
        ("image", "brightness", 1), ("image", "brightness", 3), ("text", "case", 1), ("text", "case", 3),
        ("joint", "mixed", 1), ("joint", "mixed", 3),
    ]  # fmt: skip
    assert "clean recall@2 on test (4 images, 8 captions)" in stdout
    assert (tmp_path / "robustness.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["counterfactual", "--image-edit", "shapes_frame"], "--image-edit: a retrieval model is probed by swapping"),
        (["robustness", "--shift-split", "train"], "--shift-split 'train': a retrieval model is not compared"),
        (["robustness", "--k", "0"], "--k 0: recall@K needs K >= 1"),
        (["counterfactual", "--attributes", "religion"], "attribute 'religion': none of the 8 captions contains"),
    ],
)  # fmt: skip
def test_bad_input_for_a_retrieval_checkpoint_is_one_line(
    retrieval_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code, _, stderr = _probe(capsys, retrieval_run, args[0], "--out", str(tmp_path / "never"), *args[1:])
    errors = [line for line in stderr.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], stderr
    assert not (tmp_path / "never").exists()
