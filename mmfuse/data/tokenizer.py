"""Tokenizers: a pretrained one (a local directory or a Hugging Face hub id, read through the Hugging Face cache),
or a word-level one trained locally on the data with the ``tokenizers`` library."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from mmfuse.encoders.hf_text import find_pretrained, pretrained_source
from mmfuse.errors import ConfigError

__all__ = ["train_word_tokenizer", "load_tokenizer", "has_tokenizer", "SPECIAL_TOKENS", "TOKENIZER_FILES"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
# Files that mark a saved Hugging Face tokenizer, in order of preference.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def has_tokenizer(name_or_path: str, field: str) -> bool:
    """Whether a local directory or a hub id holds tokenizer files (a one-line error naming ``field`` when the
    directory or hub id itself is not found)."""
    return find_pretrained(name_or_path, field, TOKENIZER_FILES) is not None


def load_tokenizer(name_or_path: str, field: str = "data.tokenizer") -> PreTrainedTokenizerBase:
    """The tokenizer saved in a local directory (``~`` is expanded) or under a Hugging Face hub id.

    A hub id is read from the Hugging Face cache and downloaded into it when online (see
    :func:`mmfuse.encoders.hf_text.find_pretrained`). Tokenizers that ship their own code are not run.

    Args:
        name_or_path: a directory or a hub id (``org/name``).
        field: the config field that names it, for messages.

    Raises:
        ConfigError: it is not found, holds no tokenizer, or the tokenizer has no padding token.
    """
    if not has_tokenizer(name_or_path, field):
        files = " or ".join(TOKENIZER_FILES)
        raise ConfigError(f"{field}={name_or_path!r}: no tokenizer there (no {files})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained_source(name_or_path), trust_remote_code=False)
    except OSError as err:  # e.g. a vocabulary file missing from the cache under HF_HUB_OFFLINE=1
        reason = str(err).strip().splitlines()[0]
        raise ConfigError(f"{field}={name_or_path!r}: tokenizer not loaded ({reason})") from err
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"{field}={name_or_path!r}: the tokenizer has no padding token, so batches cannot be padded")
    return tokenizer


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
