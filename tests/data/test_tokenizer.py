from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from mmfuse.data import train_word_tokenizer
from mmfuse.data.tokenizer import has_tokenizer, load_tokenizer
from mmfuse.errors import ConfigError
from tests.encoders.test_hf_text import fake_hub_cache

TEXTS = ["what colour is the circle ?", "is the square left of the circle ?"]


def test_word_tokenizer_wraps_pads_and_maps_unknown_words() -> None:
    tok = train_word_tokenizer(TEXTS)
    enc = tok(["what colour is the circle ?", "is the triangle ?"], padding=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"][0])[:2] == ["[CLS]", "what"]
    assert enc["input_ids"][1][3] == tok.unk_token_id  # "triangle" was never seen
    assert enc["attention_mask"][1][-1] == 0 and enc["input_ids"][1][-1] == tok.pad_token_id


def test_loads_a_saved_tokenizer_from_a_directory(tmp_path: Path) -> None:
    train_word_tokenizer(TEXTS).save_pretrained(str(tmp_path / "tok"))
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.get_vocab() == train_word_tokenizer(TEXTS).get_vocab() and loaded.pad_token_id == 0


def test_loads_a_hub_id_from_the_cache_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    fake_hub_cache(tmp_path, "org/tiny-tok", lambda path: train_word_tokenizer(TEXTS).save_pretrained(str(path)))
    assert load_tokenizer("org/tiny-tok").get_vocab() == train_word_tokenizer(TEXTS).get_vocab()
    with pytest.raises(ConfigError, match=r"data.tokenizer='org/nothing': .*not in the Hugging Face cache .*OFFLINE"):
        load_tokenizer("org/nothing")


def test_errors_name_the_field_and_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data.tokenizer='~/no/such/dir': no such directory$"):
        load_tokenizer("~/no/such/dir")
    assert not has_tokenizer(str(tmp_path), "model.text.pretrained")
    with pytest.raises(
        ConfigError, match=r"^my.field='.*': no tokenizer there \(no tokenizer_config.json or tokenizer"
    ):
        load_tokenizer(str(tmp_path), "my.field")


def test_a_tokenizer_without_padding_is_refused(tmp_path: Path) -> None:
    no_pad = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")))
    no_pad.save_pretrained(str(tmp_path))
    with pytest.raises(ConfigError, match="no padding token"):
        load_tokenizer(str(tmp_path))
