"""mmfuse: image-text fusion research with timm and transformers encoders and cross-attention fusion.

The public names below are imported on first use (PEP 562 module ``__getattr__``): ``from mmfuse import
ImageTextModel`` works as usual, while importing a light submodule (``mmfuse.cli``, ``mmfuse.runs``) does not pull
in torch, timm and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse._lazy import lazy_exports

if TYPE_CHECKING:
    from mmfuse.config import (
        ExperimentConfig,
        FusionConfig,
        ModelConfig,
        OptimConfig,
        config_from_dict,
        resolve_model_config,
    )
    from mmfuse.demo import BriefRun, ModelExamples, examples_figure, load_examples, repo_root, train_briefly
    from mmfuse.encoders import TEXT_ENCODERS, VISION_ENCODERS
    from mmfuse.errors import ConfigError
    from mmfuse.experiment import load_config
    from mmfuse.fusion import FUSIONS
    from mmfuse.heads import HEADS
    from mmfuse.models import ImageTextModel, ModelOutput
    from mmfuse.types import Batch, DataSpec, EncoderOutput, FusionOutput

__version__ = "0.1.0"

# Module -> the public names it defines, imported on first use.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "mmfuse.config": (
        "ExperimentConfig",
        "FusionConfig",
        "ModelConfig",
        "OptimConfig",
        "config_from_dict",
        "resolve_model_config",
    ),
    "mmfuse.encoders": ("TEXT_ENCODERS", "VISION_ENCODERS"),
    "mmfuse.errors": ("ConfigError",),
    "mmfuse.experiment": ("load_config",),  # reads YAML without Lightning, timm or transformers on import
    "mmfuse.fusion": ("FUSIONS",),
    "mmfuse.heads": ("HEADS",),
    "mmfuse.models": ("ImageTextModel", "ModelOutput"),
    "mmfuse.types": ("Batch", "DataSpec", "EncoderOutput", "FusionOutput"),
    # shared by the notebooks
    "mmfuse.demo": ("BriefRun", "ModelExamples", "examples_figure", "load_examples", "repo_root", "train_briefly"),
}

__all__ = [
    "Batch",
    "ConfigError",
    "DataSpec",
    "EncoderOutput",
    "ExperimentConfig",
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
    "load_config",
    "resolve_model_config",
    # shared by the notebooks (mmfuse.demo)
    "BriefRun",
    "ModelExamples",
    "examples_figure",
    "load_examples",
    "repo_root",
    "train_briefly",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
