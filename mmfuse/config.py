"""Top-level typed configs. Each default is stated once, here or next to its component."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_type_hints

from mmfuse.encoders import HFTextEncoderConfig, TimmVisionEncoderConfig
from mmfuse.encoders.hf_text import check_tokenizer_fits
from mmfuse.errors import ConfigError
from mmfuse.fusion import FusionConfig
from mmfuse.heads import MATCHING_CLASSES, ClassificationHeadConfig, ContrastiveHeadConfig
from mmfuse.types import DataSpec

__all__ = [
    "Task",
    "ModelConfig",
    "MODEL_KEYS",
    "OptimConfig",
    "SpeedConfig",
    "MetricsConfig",
    "ExperimentConfig",
    "FusionConfig",
    "resolve_model_config",
    "config_from_dict",
    "with_model_fields",
]

Task = Literal["classification", "vqa", "retrieval"]  # what a model is trained for; see ModelConfig.task
# Field metadata of the ModelConfig fields that the data fills in (resolve_model_config), which an experiment's
# ``model:`` section therefore does not hold.
_FROM_DATA = {"from_data": True}


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
    vocab_size: int | None = field(default=None, metadata=_FROM_DATA)
    pad_token_id: int | None = field(default=None, metadata=_FROM_DATA)


# The ModelConfig fields an experiment's ``model:`` section sets: all but those the data fills in.
MODEL_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelConfig) if not f.metadata.get("from_data"))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine (or constant) decay, plus the knobs of fine-tuning pretrained encoders.

    Attributes:
        lr: peak learning rate.
        weight_decay: decoupled weight decay, not applied to biases, norm weights, embeddings (``nn.Embedding``
            weights) and the names a timm backbone lists in ``no_weight_decay()`` (``pos_embed``, ``cls_token``).
        betas: AdamW betas.
        warmup_ratio: fraction of the total optimizer steps spent warming up.
        schedule: ``cosine`` decay to zero after warm-up, or ``constant``.
        fused: the fused AdamW kernel (one kernel for all parameters; CUDA and CPU); None = PyTorch's default.
        lr_mult: learning-rate multiplier per top-level module of the model (``vision``, ``text``, ``fusion``,
            ``head``, ``contrastive``); a module not named keeps 1.0. E.g. ``{vision: 0.1, text: 0.1}``. For an
            encoder it scales the pretrained backbone; the encoder's projection to the common width (new, randomly
            initialised) keeps ``lr``.
        layer_decay: layer-wise learning-rate decay inside the encoders (BEiT): a parameter ``k`` layer groups below
            the top gets ``layer_decay ** k`` times the learning rate; the top is the encoder's projection and
            everything outside the encoders. Layers: timm's ``group_matcher``, a transformers model's
            ``num_hidden_layers`` blocks (embeddings below them). None = off. Multiplies with ``lr_mult``.
        unfreeze_after_epochs: train the encoders' backbones only from this epoch on (they stay in the optimizer,
            get no gradients and stay in eval mode before; the projections train from the start); None = from the
            start.
        unfreeze_after_steps: the same in optimizer steps; exclusive with ``unfreeze_after_epochs``.
        ema_decay: keep an exponential moving average of the weights with this decay
            (:class:`~mmfuse.training.EMAWeights`, Lightning's ``EMAWeightAveraging`` updated after every optimizer
            step): validation uses it, checkpoints hold it as their ``state_dict``, the saved model is it. None = off.
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.05
    schedule: Literal["cosine", "constant"] = "cosine"
    fused: bool | None = None
    lr_mult: dict[str, float] = field(default_factory=dict)
    layer_decay: float | None = None
    unfreeze_after_epochs: int | None = None
    unfreeze_after_steps: int | None = None
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        bad_mult = {name: mult for name, mult in self.lr_mult.items() if not mult >= 0}
        if bad_mult:
            raise ConfigError(f"optim.lr_mult={dict(self.lr_mult)}: multipliers must be >= 0, not {bad_mult}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"optim.layer_decay={self.layer_decay} must be in (0, 1] (or null: off)")
        if self.unfreeze_after_epochs is not None and self.unfreeze_after_steps is not None:
            raise ConfigError(
                f"optim.unfreeze_after_epochs={self.unfreeze_after_epochs} and "
                f"optim.unfreeze_after_steps={self.unfreeze_after_steps} are exclusive; set one of them"
            )
        for name in ("unfreeze_after_epochs", "unfreeze_after_steps"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"optim.{name}={value} must be >= 0")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"optim.ema_decay={self.ema_decay} must be in (0, 1) (or null: off)")


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
        freeze_vision: keep the vision backbone's weights fixed (no gradients, not in the optimizer; BatchNorm
            statistics frozen too). The encoder's projection to the common width and its position embedding,
            which start from random weights, still train.
        freeze_text: keep the text backbone's weights fixed (its projection still trains).
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


@dataclass(frozen=True)
class MetricsConfig:
    """What is measured per epoch (logged as ``{train,val,test}/<name>``; ``checkpoint.monitor`` can name any).

    Attributes:
        names: the task's metrics; None = the task's default (``accuracy``; ``recall`` for retrieval).
            ``classification``: ``accuracy`` (logged as ``acc``), ``macro_f1``, ``per_class_accuracy``
            (``acc_<class name>``), ``ece`` (expected calibration error of the top class, 15 bins) and ``auroc``
            (two classes only: the score is the probability of class 1). ``vqa``: ``accuracy`` (soft VQA accuracy,
            ``acc``). ``retrieval``: ``recall`` (``t2i_r{1,5,10}``, ``i2t_r{1,5,10}``, ``r_mean``).
        rerank_k: retrieval only: also rank each query's top ``rerank_k`` candidates of the contrastive ranking by
            the image-text matching head's score (ALBEF / BLIP), logged as ``<name>_itm`` (``val/t2i_r1_itm``);
            0 = off.
    """

    names: tuple[str, ...] | None = None
    rerank_k: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment YAML as ``mmfuse fit`` reads it (see :func:`mmfuse.load_config`): the typed sections, and the
    sections that Lightning's classes check when they are built.

    Attributes:
        model: the ``model:`` section's fields of :class:`ModelConfig`.
        metrics: ``model.metrics``.
        optim: the ``optim:`` section.
        speed: the ``speed:`` section.
        data: the ``data:`` section as written (``class_path`` + ``init_args``, or the default data module's
            arguments), base file and overrides merged in; the data module checks it when it is built.
        trainer: the ``trainer:`` section (arguments of Lightning's ``Trainer``), likewise.
        extra: the other top-level entries (``seed_everything``, ``checkpoint``, ``last_checkpoint``, ``predictions``,
            ``trackers``, ``baselines``), likewise.
        path: the YAML file read, if any.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    data: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The experiment in the YAML's layout with every typed field spelled out: what ``mmfuse fit`` would parse
        (``yaml.safe_dump`` writes it; tuples are lists)."""
        model = {key: _plain(getattr(self.model, key)) for key in MODEL_KEYS}
        return {
            **{key: value for key, value in self.extra.items() if key == "seed_everything"},
            "trainer": _plain(self.trainer),
            "model": {**model, "metrics": _plain(self.metrics)},
            "optim": _plain(self.optim),
            "speed": _plain(self.speed),
            "data": _plain(self.data),
            **{key: _plain(value) for key, value in self.extra.items() if key != "seed_everything"},
        }


def _plain(value: Any) -> Any:
    """``value`` as YAML's plain values: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


_Init = TypeVar("_Init", bound=Callable[..., None])


def with_model_fields(init: _Init) -> _Init:
    """Give ``init``, an ``__init__(self, *, <own parameters>, **model)``, the signature that names the
    :data:`MODEL_KEYS` fields of :class:`ModelConfig` (types and defaults from the dataclass) before its own.

    LightningCLI (the ``model:`` section, and ``--help`` from :class:`ModelConfig`'s descriptions of its fields) and
    Lightning's checkpoint loading read that signature, so the model's fields are listed once, in
    :class:`ModelConfig`, and ``**model`` receives them.
    """
    own = inspect.signature(init)
    self_param, *named = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    if len(named) + 2 != len(own.parameters) or any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in named):
        raise TypeError(f"{init.__qualname__} must take (self, *, <own parameters>, **model)")
    hints = get_type_hints(init)
    model_hints = get_type_hints(ModelConfig)
    defaults = ModelConfig()
    fields = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, name), annotation=model_hints[name]
        )
        for name in MODEL_KEYS
    ]
    own_params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in named]
    init.__signature__ = own.replace(parameters=[self_param, *fields, *own_params])  # type: ignore[attr-defined]
    if init.__doc__ is None:  # the fields' descriptions (``Attributes:``), which --help shows for each
        init.__doc__ = ModelConfig.__doc__
    return init


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
    check_tokenizer_fits(cfg.text, spec)
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
