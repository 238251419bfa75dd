"""Datasets, collation and tokenizers. The Lightning data module lives in ``mmfuse.data.datamodule``."""

from mmfuse.data import coco as _coco  # noqa: F401  (registers the ``coco`` and ``vqa`` formats)
from mmfuse.data.bad_records import BadRecord, BadRecordError
from mmfuse.data.collate import ImageTextCollator
from mmfuse.data.formats import DATA_FORMATS, FileSourceConfig
from mmfuse.data.image_text import ImageTextDataset, SkipBadCollator
from mmfuse.data.images import BadImageError, decode_image, image_size_from, load_image
from mmfuse.data.manifest import Manifest, load_manifest, prepare_manifest
from mmfuse.data.shapes import ShapesWorldConfig, answer_vocabulary, prepare_shapes_world, text_vocabulary
from mmfuse.data.tokenizer import train_word_tokenizer
from mmfuse.data.vqa import normalize_answer, vqa_accuracy

__all__ = [
    "DATA_FORMATS",
    "BadImageError",
    "BadRecord",
    "BadRecordError",
    "FileSourceConfig",
    "ImageTextDataset",
    "Manifest",
    "SkipBadCollator",
    "decode_image",
    "image_size_from",
    "load_image",
    "load_manifest",
    "normalize_answer",
    "prepare_manifest",
    "vqa_accuracy",
    "ImageTextCollator",
    "ShapesWorldConfig",
    "answer_vocabulary",
    "prepare_shapes_world",
    "text_vocabulary",
    "train_word_tokenizer",
]
