"""Datasets, collation and tokenizers. The Lightning data module lives in ``mmfuse.data.datamodule``."""

from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.shapes import ShapesWorldConfig, answer_vocabulary, prepare_shapes_world, text_vocabulary
from mmfuse.data.tokenizer import train_word_tokenizer

__all__ = [
    "ImageTextCollator",
    "ShapesWorldConfig",
    "answer_vocabulary",
    "prepare_shapes_world",
    "text_vocabulary",
    "train_word_tokenizer",
]
