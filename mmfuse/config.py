"""Top-level typed configs. Each default is stated once, here or next to its component."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints

from mmfuse.encoders import HFTextEncoderConfig, TimmVisionEncoderConfig
from mmfuse.errors import ConfigError
from mmfuse.fusion import FusionConfig
from mmfuse.heads import MATCHING_CLASSES, ClassificationHeadConfig, ContrastiveHeadConfig
from mmfuse.types import DataSpec

__all__ = [
    "Task",
    "ModelConfig",
    "OptimConfig",
    "SpeedConfig",
    "FusionConfig",
    "resolve_model_config",
    "config_from_dict",
]

Task = Literal["classification", "vqa", "retrieval"]  # what a model is trained for; see ModelConfig.task


@dataclass(frozen=True)
class ModelConfig:
    """An :class:`~mmfuse.models.ImageTextModel`: two encoders, a fusion and a head at one common width.

    Attributes:
        task: what the model is trained for. ``classification``: the head scores the data's labels (cross-entropy).
            ``vqa``: the head scores the answer vocabulary (BCE on soft VQA targets). ``retrieval``: a contrastive
            head embeds images and texts (ITC), and the head is a two-class image-text matching head (ITM).
        width: common width D that both encoders project to.
        vision: vision encoder config.
        text: text encoder config.
        fusion: fusion config (``cross_attention``, ``concat``, ``image_only``, ``text_only``).
        head: head config (the head on the fused vector).
        contrastive: the contrastive head; built only for ``task: retrieval``.
        vocab_size: tokenizer vocabulary size; None takes it from the data.
        pad_token_id: tokenizer padding id; None takes it from the data.
    """

    task: Task = "classification"
    width: int = 256
    vision: TimmVisionEncoderConfig = field(default_factory=TimmVisionEncoderConfig)
    text: HFTextEncoderConfig = field(default_factory=HFTextEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: ClassificationHeadConfig = field(default_factory=ClassificationHeadConfig)
    contrastive: ContrastiveHeadConfig = field(default_factory=ContrastiveHeadConfig)
    vocab_size: int | None = None
    pad_token_id: int | None = None


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine (or constant) decay.

    Attributes:
        lr: peak learning rate.
        weight_decay: decoupled weight decay, not applied to biases and norm weights.
        betas: AdamW betas.
        warmup_ratio: fraction of the total optimizer steps spent warming up.
        schedule: ``cosine`` decay to zero after warm-up, or ``constant``.
        fused: the fused AdamW kernel (one kernel for all parameters; CUDA and CPU); None = PyTorch's default.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.05
    schedule: Literal["cosine", "constant"] = "cosine"
    fused: bool | None = None


@dataclass(frozen=True)
class SpeedConfig:
    """Switches that change how fast training runs, not what it computes (beyond rounding).

    Attributes:
        compile: ``torch.compile`` the model (in place; checkpoints keep their keys).
        compile_mode: ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``).
        channels_last: NHWC memory format for the vision encoder and images (faster convolutions on tensor cores).
        activation_checkpointing: recompute encoder activations in the backward pass (less memory, ~30% more
            compute) for encoders that support it (timm ``set_grad_checkpointing``, transformers
            ``gradient_checkpointing_enable``).
        freeze_vision: keep the vision encoder's weights fixed (no gradients, not in the optimizer; BatchNorm
            statistics frozen too).
        freeze_text: keep the text encoder's weights fixed.
        float32_matmul_precision: ``highest`` (true fp32), ``high`` (TF32 on Ampere and newer GPUs) or ``medium``;
            applied with ``torch.set_float32_matmul_precision`` in every process.
    """

    compile: bool = False
    compile_mode: str | None = None
    channels_last: bool = False
    activation_checkpointing: bool = False
    freeze_vision: bool = False
    freeze_text: bool = False
    float32_matmul_precision: Literal["highest", "high", "medium"] = "highest"


def resolve_model_config(cfg: ModelConfig, spec: DataSpec) -> ModelConfig:
    """Fill the values that the data determines (classes, vocabulary, image size); disagreements are errors.

    The head's classes are the data's labels (``classification``, ``vqa``) or match / no match (``retrieval``).
    """
    num_classes = len(MATCHING_CLASSES) if cfg.task == "retrieval" else spec.num_classes
    if cfg.task != "retrieval" and num_classes < 2:
        raise ConfigError(
            f"model.task={cfg.task!r} needs labels, but the data has {num_classes} classes (captions without labels?); "
            "train image-text retrieval on it with model.task: retrieval"
        )
    given = cfg.head.num_classes
    if given is not None and given != num_classes:
        what = "image-text matching has" if cfg.task == "retrieval" else "the data has"
        raise ConfigError(
            f"model.head.num_classes={given} but {what} {num_classes} classes "
            f"({list(MATCHING_CLASSES if cfg.task == 'retrieval' else spec.class_names)[:10]}); remove the field or "
            f"set it to {num_classes}"
        )
    if cfg.vocab_size is not None and cfg.vocab_size < spec.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's {spec.vocab_size}")
    return dataclasses.replace(
        cfg,
        head=dataclasses.replace(cfg.head, num_classes=num_classes),
        vision=dataclasses.replace(cfg.vision, img_size=cfg.vision.img_size or spec.image_size),
        vocab_size=cfg.vocab_size or spec.vocab_size,
        pad_token_id=spec.pad_token_id if cfg.pad_token_id is None else cfg.pad_token_id,
    )


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from ``dataclasses.asdict`` output, e.g. a checkpoint's hyperparameters."""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown fields {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for key, value in data.items():
        target = _config_type(hints[key], value)
        if target is not None and isinstance(value, dict):
            value = config_from_dict(target, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)


def _config_type(hint: Any, value: Any) -> type | None:
    """The dataclass that ``value`` should become, if ``hint`` names one."""
    return hint if dataclasses.is_dataclass(hint) and isinstance(value, dict) else None  # type: ignore[return-value]
