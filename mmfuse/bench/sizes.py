"""Named model sizes for benchmarks: ``tiny`` (a CPU sweep in about a minute), ``small`` (the default experiment's
model, read from ``experiments/shapes_color.yaml``) and ``base`` (ViT-B/16 at 224 px with BERT-base).

Every size is a resolved :class:`~mmfuse.config.ModelConfig` plus the data facts (classes, vocabulary, image side)
and the text length that synthetic batches use; the model itself is built on demand, with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmfuse.bench.config import SIZE_NAMES
from mmfuse.config import FusionConfig, ModelConfig, OptimConfig, config_from_dict, resolve_model_config
from mmfuse.encoders import HFTextEncoderConfig, TimmVisionEncoderConfig
from mmfuse.errors import ConfigError
from mmfuse.experiment import load_config
from mmfuse.models import ImageTextModel
from mmfuse.registry import close_matches
from mmfuse.types import DataSpec

__all__ = ["DEFAULT_EXPERIMENT", "ModelSize", "build_size_model", "experiment_size", "get_size"]
# The source checkout's default experiment (found next to the package in an editable install or with PYTHONPATH=.).
DEFAULT_EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "shapes_color.yaml"


@dataclass(frozen=True)
class ModelSize:
    """A benchmark model: resolved config, data facts and synthetic text length.

    Attributes:
        name: size name (``tiny``, ``small``, ``base``).
        model: resolved model config (classes, vocabulary and image size filled in).
        spec: the data facts the config was resolved with.
        seq_len: text length L of synthetic batches.
        optim: optimiser settings of the Lightning module (the experiment's for ``small``).
        description: one line for reports.
    """

    name: str
    model: ModelConfig
    spec: DataSpec
    seq_len: int
    optim: OptimConfig = field(default_factory=OptimConfig)
    description: str = ""


def _tiny() -> ModelSize:
    """A 2-block ViT at width 64 and a 2-layer BERT at hidden 64: matmul-bound like ``base``, seconds per cell."""
    cfg = ModelConfig(
        width=64,
        vision=TimmVisionEncoderConfig(
            model_name="vit_tiny_patch16_224",
            model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 8},
        ),
        text=HFTextEncoderConfig(
            model_type="bert",
            config_kwargs={
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 256,
            },
        ),
        fusion=FusionConfig(num_layers=1, num_heads=2),
    )
    spec = DataSpec(num_classes=10, vocab_size=1000, pad_token_id=0, image_size=64)
    desc = "ViT 2x64 (patch 8) + BERT 2x64, 1 cross-attention layer, width 64, 64 px, L=16"
    return ModelSize("tiny", resolve_model_config(cfg, spec), spec, seq_len=16, description=desc)


def _base() -> ModelSize:
    """ViT-B/16 at 224 px (timm ``vit_base_patch16_224``), BERT-base (12 x 768), 2 cross-attention layers at 768."""
    cfg = ModelConfig(
        width=768,
        vision=TimmVisionEncoderConfig(model_name="vit_base_patch16_224"),
        text=HFTextEncoderConfig(model_type="bert"),  # transformers' default BertConfig is BERT-base
        fusion=FusionConfig(num_layers=2, num_heads=12),
    )
    spec = DataSpec(num_classes=1000, vocab_size=30522, pad_token_id=0, image_size=224)
    desc = "ViT-B/16 224 px + BERT-base, 2 cross-attention layers, width 768, L=32, 1000 classes"
    return ModelSize("base", resolve_model_config(cfg, spec), spec, seq_len=32, description=desc)


def experiment_size(path: str | Path, name: str = "small", seq_len: int = 12) -> ModelSize:
    """The model of a shapes-world experiment YAML (its ``model:`` and ``optim:`` sections and ``data.world``, read
    by :func:`mmfuse.load_config`), with the data facts that ``ShapesDataModule.spec`` derives (without generating
    any data).

    Args:
        path: experiment YAML.
        name: size name for reports.
        seq_len: text length L; the shapes questions are at most 11 tokens with ``[CLS]``/``[SEP]``.
    """
    from mmfuse.data.shapes import ShapesWorldConfig, answer_vocabulary, text_vocabulary
    from mmfuse.data.tokenizer import train_word_tokenizer

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"size {name!r} reads {path}, which does not exist (run from a source checkout)")
    experiment = load_config(path)
    data = experiment.data.get("init_args", experiment.data)  # with or without class_path
    world = config_from_dict(ShapesWorldConfig, data.get("world") or {})
    tokenizer = train_word_tokenizer(text_vocabulary(world))
    classes = answer_vocabulary(world)
    spec = DataSpec(len(classes), len(tokenizer), int(tokenizer.pad_token_id), world.image_size, tuple(classes))
    cfg = resolve_model_config(experiment.model, spec)
    desc = f"model of {path.name} ({cfg.vision.model_name} + {cfg.text.model_type}, width {cfg.width}), L={seq_len}"
    return ModelSize(name, cfg, spec, seq_len=seq_len, optim=experiment.optim, description=desc)


def get_size(name: str, experiment: str | Path | None = None) -> ModelSize:
    """The named size; ``small`` reads ``experiment`` (default :data:`DEFAULT_EXPERIMENT`).

    Example:
        >>> get_size("tiny").model.width
        64
    """
    if name == "tiny":
        return _tiny()
    if name == "base":
        return _base()
    if name == "small":
        return experiment_size(DEFAULT_EXPERIMENT if experiment is None else experiment, name="small")
    raise ConfigError(
        f"unknown model size {name!r}; known: {list(SIZE_NAMES)} (close: {close_matches(name, list(SIZE_NAMES))})"
    )


def build_size_model(size: ModelSize) -> ImageTextModel:
    """A random-init :class:`~mmfuse.models.ImageTextModel` of ``size`` on the CPU, in float32, in train mode."""
    return ImageTextModel(size.model).train()
