"""Probe data: raw records collated by the data's own collate function, edits applied before and after it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmfuse.errors import ConfigError
from mmfuse.probes.data import ProbeData, predict_probs
from tests.probes.conftest import RedModel, TokenModel, make_data, texts_with_names, token_ids


def test_batches_follow_indices_texts_and_edits() -> None:
    data = make_data(texts_with_names(10))
    batches = list(data.batches(4))
    assert [len(b) for b in batches] == [4, 4, 2] and torch.equal(torch.cat([b.labels for b in batches]), data.labels)
    texts = ["she", "he", "anna"]
    (batch,) = data.batches(8, indices=[3, 3, 0], texts=texts, image_edit=lambda img, i: img * 0 + i / 10)
    assert batch.input_ids[:, 1].tolist() == token_ids(data, texts)  # [CLS] text [SEP]
    assert [float(batch.images[k].mean()) for k in range(3)] == pytest.approx([0.3, 0.3, 0.0])
    assert batch.labels is not None and batch.labels.tolist() == [data.labels[3], data.labels[3], data.labels[0]]
    (edited,) = data.batches(8, indices=[0], text_edit=lambda text, i: text.upper())
    unk = data.collate.tokenizer.unk_token_id  # type: ignore[attr-defined]
    assert edited.input_ids[0, 1] == unk  # "SHE" is not in the case-sensitive word vocabulary
    with pytest.raises(ValueError, match="3 texts for 2 examples"):
        next(data.batches(2, indices=[0, 1], texts=["a", "b", "c"]))


def test_text_edit_happens_before_tokenisation() -> None:
    data = make_data(["she asks : what colour is the circle ?"])
    she = token_ids(data, ["she"])[0]
    (plain,) = data.batches(1)
    (swapped,) = data.batches(1, text_edit=lambda text, i: text.replace("she", "he"))
    assert she in plain.input_ids[0].tolist() and she not in swapped.input_ids[0].tolist()


def test_predict_probs_with_tensor_or_model_output() -> None:
    data = make_data(texts_with_names(6))
    probs = predict_probs(RedModel(), data.batches(4))
    assert probs.shape == (6, 2) and torch.allclose(probs.sum(1), torch.ones(6))
    assert torch.equal(probs.argmax(1), data.labels)
    token = predict_probs(TokenModel(token_ids(data, ["she"])), data.batches(4))
    assert token.argmax(1).tolist() == [0, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="no batches"):
        predict_probs(RedModel(), iter([]))


def test_from_split_and_bad_records() -> None:
    rows = [{"image": Image.new("RGB", (4, 4)), "text": "he asks", "label": 1}] * 5
    data = ProbeData.from_split(rows, make_data(["x"]).collate, limit=3, class_names=["a", "b"])
    assert len(data) == 3 and data.class_names == ("a", "b")
    with pytest.raises(ConfigError, match="no examples"):
        ProbeData([], data.collate)
    with pytest.raises(ConfigError, match=r"lacks \['text'\]"):
        ProbeData([{"image": rows[0]["image"]}], data.collate)
