"""mmfuse: image-text fusion research with timm and transformers encoders and cross-attention fusion."""

from mmfuse.config import FusionConfig, ModelConfig, OptimConfig, config_from_dict, resolve_model_config
from mmfuse.demo import BriefRun, ModelExamples, examples_figure, load_examples, repo_root, train_briefly
from mmfuse.encoders import TEXT_ENCODERS, VISION_ENCODERS
from mmfuse.errors import ConfigError
from mmfuse.fusion import FUSIONS
from mmfuse.heads import HEADS
from mmfuse.models import ImageTextModel, ModelOutput
from mmfuse.types import Batch, DataSpec, EncoderOutput, FusionOutput

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "ConfigError",
    "DataSpec",
    "EncoderOutput",
    "FUSIONS",
    "FusionConfig",
    "FusionOutput",
    "HEADS",
    "ImageTextModel",
    "ModelConfig",
    "ModelOutput",
    "OptimConfig",
    "TEXT_ENCODERS",
    "VISION_ENCODERS",
    "config_from_dict",
    "resolve_model_config",
    # shared by the notebooks (mmfuse.demo)
    "BriefRun",
    "ModelExamples",
    "examples_figure",
    "load_examples",
    "repo_root",
    "train_briefly",
]
