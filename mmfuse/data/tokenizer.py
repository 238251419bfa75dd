"""A word-level tokenizer trained locally with the ``tokenizers`` library (no hub access)."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["train_word_tokenizer", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def train_word_tokenizer(corpus: Iterable[str]) -> PreTrainedTokenizerFast:
    """Train a lower-casing word-level tokenizer on ``corpus`` that wraps each text as ``[CLS] ... [SEP]``.

    Example:
        >>> tok = train_word_tokenizer(["what colour is the circle ?"])
        >>> tok("what colour is the square ?")["input_ids"][-3]  # "square" is unseen -> [UNK] = 1
        1
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(
        (text.lower() for text in corpus), trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS))
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
