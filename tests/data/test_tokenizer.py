from __future__ import annotations

from mmfuse.data import train_word_tokenizer


def test_word_tokenizer_wraps_pads_and_maps_unknown_words() -> None:
    tok = train_word_tokenizer(["what colour is the circle ?", "is the square left of the circle ?"])
    enc = tok(["what colour is the circle ?", "is the triangle ?"], padding=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"][0])[:2] == ["[CLS]", "what"]
    assert enc["input_ids"][1][3] == tok.unk_token_id  # "triangle" was never seen
    assert enc["attention_mask"][1][-1] == 0 and enc["input_ids"][1][-1] == tok.pad_token_id
