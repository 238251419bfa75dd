"""A Hugging Face transformers encoder (BERT/RoBERTa/DistilBERT-style) as a token encoder.

Built from a config with random init, or loaded from a local directory; never fetched from a hub.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from mmfuse.encoders.base import TEXT_ENCODERS
from mmfuse.errors import ConfigError
from mmfuse.layers import masked_mean
from mmfuse.registry import close_matches
from mmfuse.types import EncoderOutput

__all__ = ["HFTextEncoder", "HFTextEncoderConfig"]


@dataclass(frozen=True)
class HFTextEncoderConfig:
    """Config of :class:`HFTextEncoder`.

    Attributes:
        name: registry key.
        model_type: a transformers model type (``bert``, ``roberta``, ``distilbert``...) built with random init.
        pretrained: local directory written by ``save_pretrained``; overrides ``model_type``/``config_kwargs``.
        config_kwargs: fields of the transformers config (e.g. ``hidden_size``, ``num_hidden_layers``).
        attn_implementation: ``sdpa`` (fast) or ``eager`` (returns attention weights).
        trust_remote_code: allow a ``pretrained`` directory to run its own Python code (``auto_map``). Off unless
            the config asks: such code runs with your permissions.
    """

    name: Literal["hf"] = "hf"
    model_type: str = "bert"
    pretrained: str | None = None
    config_kwargs: dict[str, Any] = field(default_factory=dict)
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False


def _build_config(cfg: HFTextEncoderConfig, vocab_size: int, pad_token_id: int) -> PretrainedConfig:
    if cfg.model_type not in CONFIG_MAPPING:
        hint = close_matches(cfg.model_type, list(CONFIG_MAPPING.keys()))
        raise ConfigError(f"model.text.model_type={cfg.model_type!r} is not a transformers model type. Close: {hint}")
    default = AutoConfig.for_model(cfg.model_type)
    unknown = [k for k in cfg.config_kwargs if not hasattr(default, k)]
    if unknown:
        raise ConfigError(f"model.text.config_kwargs: {unknown} are not fields of {type(default).__name__}")
    return AutoConfig.for_model(cfg.model_type, vocab_size=vocab_size, pad_token_id=pad_token_id, **cfg.config_kwargs)


def _init_kwargs(model_cls: Any) -> dict[str, Any]:
    # A pooler that no loss reaches leaves parameters without gradients, which DDP rejects.
    parameters = inspect.signature(model_cls).parameters
    return {"add_pooling_layer": False} if "add_pooling_layer" in parameters else {}


@TEXT_ENCODERS.register("hf")
class HFTextEncoder(nn.Module):
    """Token features from a transformers encoder, projected to a common width.

    Args:
        cfg: encoder config.
        out_dim: common width D.
        vocab_size: tokenizer vocabulary size (random-init models are sized to it).
        pad_token_id: padding id of the tokenizer.
    """

    def __init__(self, cfg: HFTextEncoderConfig, out_dim: int, vocab_size: int, pad_token_id: int) -> None:
        super().__init__()
        if cfg.pretrained is not None:
            path = Path(cfg.pretrained).expanduser()
            if not (path / "config.json").is_file():
                raise ConfigError(f"model.text.pretrained={cfg.pretrained!r}: no config.json in that directory")
            trust = cfg.trust_remote_code
            try:
                config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust)
            except ValueError as err:
                if "trust_remote_code" not in str(err):
                    raise
                raise ConfigError(
                    f"model.text.pretrained={cfg.pretrained!r} ships its own code; it is not run unless "
                    "model.text.trust_remote_code: true (only for code you have read and trust)"
                ) from err
            model_cls: Any = MODEL_MAPPING[type(config)] if type(config) in MODEL_MAPPING else AutoModel
            self.model = model_cls.from_pretrained(
                path,
                local_files_only=True,
                trust_remote_code=trust,
                attn_implementation=cfg.attn_implementation,
                **_init_kwargs(model_cls),
            )
            if config.vocab_size < vocab_size:
                raise ConfigError(
                    f"model.text.pretrained={cfg.pretrained!r} has {config.vocab_size} token embeddings but the "
                    f"tokenizer has {vocab_size} tokens"
                )
        else:
            config = _build_config(cfg, vocab_size, pad_token_id)
            config._attn_implementation = cfg.attn_implementation
            model_cls = MODEL_MAPPING[type(config)]
            self.model = model_cls(config, **_init_kwargs(model_cls))
        self.out_dim = out_dim
        self.proj = nn.Linear(int(config.hidden_size), out_dim)

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
