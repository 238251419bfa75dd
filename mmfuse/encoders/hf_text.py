"""Any Hugging Face transformers text tower as a token encoder: encoder-only models (BERT, RoBERTa, DeBERTa-v2,
ModernBERT...), the text tower of a dual encoder (CLIP, SigLIP) and the encoder of an encoder-decoder (T5, mT5).

Built from a config with random init, or loaded from a local ``save_pretrained`` directory or a Hugging Face hub id
(through the Hugging Face cache). The class is transformers' own choice: ``AutoModelForTextEncoding``'s mapping,
else ``AutoModel``'s (see :func:`text_model_class`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING, MODEL_MAPPING

from mmfuse._compat import set_attn_implementation, supports_sdpa
from mmfuse.encoders.base import TEXT_ENCODERS
from mmfuse.errors import ConfigError
from mmfuse.layers import masked_mean
from mmfuse.registry import close_matches
from mmfuse.types import DataSpec, EncoderOutput

__all__ = [
    "HFTextEncoder",
    "HFTextEncoderConfig",
    "check_tokenizer_fits",
    "find_pretrained",
    "pretrained_source",
    "text_model_class",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HFTextEncoderConfig:
    """Config of :class:`HFTextEncoder`.

    Attributes:
        name: registry key.
        model_type: a transformers model type built with random init: an encoder (``bert``, ``roberta``,
            ``modernbert``...), a text tower (``clip_text_model``, ``siglip_text_model``), a dual encoder (``clip``,
            ``siglip``: its text tower is built) or an encoder-decoder (``t5``, ``mt5``: its encoder is built).
        pretrained: a local directory written by ``save_pretrained`` or a Hugging Face hub id (``org/name``, read
            from the Hugging Face cache and downloaded into it when online); overrides ``model_type`` and
            ``config_kwargs``. Its tokenizer is the data's default tokenizer (see ``mmfuse.training.cli``).
        config_kwargs: fields of the transformers config (e.g. ``hidden_size``, ``num_hidden_layers``); for a dual
            encoder, ``text_config: {...}``. The vocabulary size and padding id come from the tokenizer.
        attn_implementation: ``sdpa`` (fast; models without an SDPA path, e.g. DeBERTa-v2, run ``eager``) or
            ``eager`` (returns attention weights).
        trust_remote_code: allow a ``pretrained`` model to run its own Python code (``auto_map``). Off unless the
            config asks: such code runs with your permissions.
    """

    name: Literal["hf"] = "hf"
    model_type: str = "bert"
    pretrained: str | None = None
    config_kwargs: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False


def pretrained_source(name_or_path: str) -> str:
    """What to hand to transformers' ``from_pretrained``: the directory (``~`` expanded); for a hub id, its cached
    snapshot directory under ``HF_HUB_OFFLINE=1`` (transformers then reads exactly the cached files and asks the hub
    for nothing, not even an optional ``config.json``), else the hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if constants.HF_HUB_OFFLINE and _is_hub_id(name_or_path):
        try:
            return str(snapshot_download(name_or_path, local_files_only=True))
        except LocalEntryNotFoundError:
            pass  # not cached: find_pretrained says so in its message
    return name_or_path


def find_pretrained(name_or_path: str, field: str, filenames: Sequence[str]) -> str | None:
    """The local path of the first of ``filenames`` that a local directory or a Hugging Face hub id holds.

    A hub id is read from the Hugging Face cache (``HF_HUB_CACHE``), and the file is downloaded into it first when
    online; under ``HF_HUB_OFFLINE=1`` only the cache is read.

    Args:
        name_or_path: a directory (``~`` is expanded) or a hub id (``org/name``).
        field: the config field that names it, for messages (``model.text.pretrained``).
        filenames: the files to look for, in order of preference.

    Returns:
        The path of the file found, or None when the directory (or the cached repository) holds none of them.

    Raises:
        ConfigError: neither an existing directory nor a hub id found on the hub or in the cache.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return next((str(path / name) for name in filenames if (path / name).is_file()), None)
    if not _is_hub_id(name_or_path):
        raise ConfigError(f"{field}={name_or_path!r}: no such directory")
    cache = Path(constants.HF_HUB_CACHE)
    is_cached = (cache / repo_folder_name(repo_id=name_or_path, repo_type="model") / "snapshots").is_dir()
    offline = constants.HF_HUB_OFFLINE
    where = f"{field}={name_or_path!r}: not a local directory, and that hub id is not in the Hugging Face cache {cache}"
    if offline and not is_cached:
        raise ConfigError(f"{where} (HF_HUB_OFFLINE=1 is set, so nothing is downloaded)")
    for name in filenames:
        try:
            return str(hf_hub_download(name_or_path, name))
        except RemoteEntryNotFoundError:
            continue  # the repository exists without this file
        except RepositoryNotFoundError as err:  # includes gated repositories
            raise ConfigError(
                f"{where}, and the hub has no such (public) model; for a gated one, log in with `hf auth login`"
            ) from err
        except LocalEntryNotFoundError as err:  # offline, or the hub was unreachable, and the file is not cached
            if is_cached:
                continue
            raise ConfigError(f"{where}, and the hub could not be reached") from err
    return None


def _is_hub_id(name: str) -> bool:
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def text_model_class(config: PretrainedConfig) -> Any:
    """The transformers class that encodes text for ``config`` (a text config, see :func:`_text_config`).

    ``AutoModelForTextEncoding``'s mapping first (it picks the encoder of an encoder-decoder, ``T5EncoderModel``),
    then ``AutoModel``'s (``BertModel``, ``CLIPTextModel``), then the ``<Name>Model`` class that transformers names
    after a ``<Name>Config`` (text towers that no auto mapping lists, such as ``SiglipTextModel``).
    """
    config_cls = type(config)
    if config_cls in MODEL_FOR_TEXT_ENCODING_MAPPING:
        return MODEL_FOR_TEXT_ENCODING_MAPPING[config_cls]
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"model.text: {config.model_type!r} is an encoder-decoder whose encoder transformers cannot build on its "
            "own (AutoModelForTextEncoding does not list it); use an encoder or a T5-style encoder-decoder"
        )
    if config_cls in MODEL_MAPPING:
        return MODEL_MAPPING[config_cls]
    named = getattr(transformers, config_cls.__name__.removesuffix("Config") + "Model", None)
    if named is not None and getattr(named, "config_class", None) is config_cls:
        return named
    if getattr(config, "auto_map", None):
        return AutoModel  # a model with its own code (trust_remote_code)
    raise ConfigError(
        f"model.text: transformers has no text encoder for {config_cls.__name__} (model_type "
        f"{config.model_type!r}); use an encoder, a dual encoder's text tower or a T5-style encoder-decoder"
    )


def _text_config(config: PretrainedConfig) -> PretrainedConfig:
    # A dual encoder's (CLIP, SigLIP) text tower; the config itself for an encoder or an encoder-decoder.
    text_config: PretrainedConfig = config.get_text_config()
    return text_config


def _build_config(cfg: HFTextEncoderConfig, vocab_size: int, pad_token_id: int) -> PretrainedConfig:
    if cfg.model_type not in CONFIG_MAPPING:
        hint = close_matches(cfg.model_type, list(CONFIG_MAPPING.keys()))
        raise ConfigError(f"model.text.model_type={cfg.model_type!r} is not a transformers model type. Close: {hint}")
    default = AutoConfig.for_model(cfg.model_type)
    unknown = [k for k in cfg.config_kwargs if not hasattr(default, k)]
    if unknown:
        raise ConfigError(f"model.text.config_kwargs: {unknown} are not fields of {type(default).__name__}")
    from_data = sorted({"vocab_size", "pad_token_id"} & set(cfg.config_kwargs))
    if from_data:
        raise ConfigError(f"model.text.config_kwargs: {from_data} come from the tokenizer; remove them")
    config = _text_config(AutoConfig.for_model(cfg.model_type, **cfg.config_kwargs))
    config.vocab_size, config.pad_token_id = vocab_size, pad_token_id
    return config


def _load_config(cfg: HFTextEncoderConfig) -> tuple[str, PretrainedConfig]:
    """The ``from_pretrained`` source of ``cfg.pretrained`` and its (text) config; a one-line error when absent."""
    assert cfg.pretrained is not None
    if find_pretrained(cfg.pretrained, "model.text.pretrained", ["config.json"]) is None:
        raise ConfigError(f"model.text.pretrained={cfg.pretrained!r}: no config.json in it")
    source = pretrained_source(cfg.pretrained)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ConfigError(
            f"model.text.pretrained={cfg.pretrained!r} ships its own code; it is not run unless "
            "model.text.trust_remote_code: true (only for code you have read and trust)"
        ) from err
    return source, _text_config(config)


def check_tokenizer_fits(cfg: HFTextEncoderConfig, spec: DataSpec) -> None:
    """Refuse a tokenizer whose ids a pretrained text encoder cannot read.

    A pretrained encoder needs its own tokenizer's ids: a word-level tokenizer trained on the data
    (``spec.tokenizer`` None) is refused, and so is any tokenizer with more tokens than the encoder has embeddings.
    A spec that predates ``DataSpec.tokenizer`` records None too; it is accepted when its vocabulary has exactly
    the encoder's size (it was the encoder's own tokenizer).
    """
    if cfg.pretrained is None:
        return  # a random-init encoder is sized to the tokenizer
    embeddings = int(_load_config(cfg)[1].vocab_size)
    if spec.tokenizer is None and spec.vocab_size != embeddings:
        raise ConfigError(
            f"model.text.pretrained={cfg.pretrained!r} ({embeddings} token embeddings) reads the ids of its own "
            f"tokenizer, but the data's tokenizer is a word-level one trained on the data ({spec.vocab_size} tokens); "
            f"set data.tokenizer: {cfg.pretrained} (the mmfuse command line does so when data.tokenizer is unset)"
        )
    if spec.vocab_size > embeddings:
        raise ConfigError(
            f"data.tokenizer={spec.tokenizer!r} has {spec.vocab_size} tokens, more than the {embeddings} token "
            f"embeddings of model.text.pretrained={cfg.pretrained!r}; use the encoder's own tokenizer"
        )
    if spec.tokenizer is not None and pretrained_source(spec.tokenizer) != pretrained_source(cfg.pretrained):
        logger.warning(
            "data.tokenizer=%r is not the tokenizer of model.text.pretrained=%r: make sure they share one vocabulary",
            spec.tokenizer,
            cfg.pretrained,
        )


def _init_kwargs(model_cls: Any) -> dict[str, Any]:
    # A pooler that no loss reaches leaves parameters without gradients, which DDP rejects.
    parameters = inspect.signature(model_cls).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in parameters else {}


def _attn_implementation(cfg: HFTextEncoderConfig, model_cls: Any) -> str:
    if cfg.attn_implementation == "sdpa" and not supports_sdpa(model_cls):
        logger.info("%s has no SDPA attention; it runs the eager implementation", model_cls.__name__)
        return "eager"
    return cfg.attn_implementation


def _freeze_pooler_only_parameters(model: nn.Module) -> None:
    """Freeze the parameters that only the model's pooled output reads (SigLIP's ``head``), not its token states.

    The encoder returns token states, so such parameters would get no gradient, which DDP rejects. They are found
    with one backward pass of four tokens in eval mode (no dropout, no random numbers drawn).
    """
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    ids = torch.zeros(1, 4, dtype=torch.long)
    with torch.enable_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            tokens = torch.autograd.grad(out.last_hidden_state.sum(), params, allow_unused=True, retain_graph=True)
            pooler = torch.autograd.grad(pooled.sum(), params, allow_unused=True)
            frozen = [name for name, a, b in zip(names, tokens, pooler, strict=True) if a is None and b is not None]
            for name, p in zip(names, params, strict=True):
                p.requires_grad_(name not in frozen)
            if frozen:
                logger.info("text encoder: frozen (read only by the pooled output, which is not used): %s", frozen)
    model.train(was_training)


@TEXT_ENCODERS.register("hf")
class HFTextEncoder(nn.Module):
    """Token features from a transformers text tower, projected to a common width.

    Args:
        cfg: encoder config.
        out_dim: common width D.
        vocab_size: tokenizer vocabulary size (random-init models are sized to it).
        pad_token_id: padding id of the tokenizer.
    """

    def __init__(self, cfg: HFTextEncoderConfig, out_dim: int, vocab_size: int, pad_token_id: int) -> None:
        super().__init__()
        if cfg.pretrained is not None:
            source, config = _load_config(cfg)
            model_cls = text_model_class(config)
            try:
                self.model = model_cls.from_pretrained(
                    source,
                    config=config,
                    trust_remote_code=cfg.trust_remote_code,
                    attn_implementation=_attn_implementation(cfg, model_cls),
                    **_init_kwargs(model_cls),
                )
            except OSError as err:  # e.g. a hub id whose weights are not in the cache under HF_HUB_OFFLINE=1
                reason = str(err).strip().splitlines()[0]
                raise ConfigError(f"model.text.pretrained={cfg.pretrained!r}: weights not loaded ({reason})") from err
            if config.vocab_size < vocab_size:
                raise ConfigError(
                    f"model.text.pretrained={cfg.pretrained!r} has {config.vocab_size} token embeddings but the "
                    f"tokenizer has {vocab_size} tokens"
                )
        else:
            config = _build_config(cfg, vocab_size, pad_token_id)
            model_cls = text_model_class(config)
            set_attn_implementation(config, _attn_implementation(cfg, model_cls))
            self.model = model_cls(config, **_init_kwargs(model_cls))
        _freeze_pooler_only_parameters(self.model)
        self.out_dim = out_dim
        self.tokenizer_name = cfg.pretrained  # whose ids it reads; None = any tokenizer it was sized to
        self.proj = nn.Linear(int(config.hidden_size), out_dim)

    @property
    def backbone(self) -> nn.Module:
        """The transformers model: what ``speed.freeze_text`` and ``optim.unfreeze_after_*`` freeze (not ``proj``)."""
        return self.model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> EncoderOutput:
        """Encode token ids.

        Args:
            input_ids: (B, L) long token ids.
            attention_mask: (B, L) bool, True = real token.

        Returns:
            EncoderOutput with tokens (B, L, D), mask (B, L) and pooled (B, D) = mean of real tokens.
        """
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state
        tokens = self.proj(hidden)  # (B, L, Dt) -> (B, L, D)
        return EncoderOutput(tokens=tokens, mask=attention_mask, pooled=masked_mean(tokens, attention_mask))
