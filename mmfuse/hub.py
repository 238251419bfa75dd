"""Share a trained model without Lightning: ``save_pretrained`` / ``from_pretrained`` in the Hugging Face layout.

A model directory holds ``config.json`` (the resolved :class:`~mmfuse.config.ModelConfig` and, when known, the
:class:`~mmfuse.types.DataSpec`), ``model.safetensors`` (the weights; loading them runs no code) and the tokenizer
files. Loading needs only PyTorch, timm, transformers and safetensors: no checkpoint, no Lightning, no original
pretrained files (the saved config describes the architecture itself).

Example::

    model.save_pretrained("my-model", tokenizer=tokenizer, data_spec=spec)
    model = ImageTextModel.from_pretrained("my-model").eval()
    tokenizer = load_tokenizer("my-model")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from mmfuse.config import ModelConfig, config_from_dict
from mmfuse.errors import ConfigError
from mmfuse.io import atomic_path, read_json, write_json
from mmfuse.models import ImageTextModel
from mmfuse.types import DataSpec

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "save_pretrained", "from_pretrained", "load_tokenizer", "read_config"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
# Fields of a transformers config that describe the files or the runtime, not the architecture.
_NOT_ARCHITECTURE = {
    "architectures", "transformers_version", "model_type", "_name_or_path", "torch_dtype", "dtype",
    "_attn_implementation", "_attn_implementation_autoset", "vocab_size", "pad_token_id",
}  # fmt: skip


def portable_config(model: ImageTextModel) -> ModelConfig:
    """The model's config with every reference to local pretrained files replaced by the architecture itself."""
    cfg = model.cfg
    vision = dataclasses.replace(cfg.vision, pretrained=None)
    text, vocab_size, pad_token_id = cfg.text, cfg.vocab_size, cfg.pad_token_id
    if cfg.text.pretrained is not None and model.text is not None:
        text_encoder: Any = model.text
        hf_config = text_encoder.model.config  # a transformers PretrainedConfig
        default = AutoConfig.for_model(hf_config.model_type)
        kwargs = {
            k: v for k, v in hf_config.to_diff_dict().items() if k not in _NOT_ARCHITECTURE and hasattr(default, k)
        }
        text = dataclasses.replace(cfg.text, pretrained=None, model_type=hf_config.model_type, config_kwargs=kwargs)
        vocab_size, pad_token_id = int(hf_config.vocab_size), hf_config.pad_token_id
    return dataclasses.replace(cfg, vision=vision, text=text, vocab_size=vocab_size, pad_token_id=pad_token_id)


def save_pretrained(
    model: ImageTextModel,
    directory: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    data_spec: DataSpec | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (when given) the tokenizer files into ``directory``.

    Each file is written to a temporary name and renamed, so a reader never sees a half-written model.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "model": dataclasses.asdict(portable_config(model)),
        "data_spec": dataclasses.asdict(data_spec) if data_spec is not None else None,
    }
    write_json(out / CONFIG_NAME, config)
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_model(model, str(tmp), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out


def read_config(directory: str | Path) -> tuple[ModelConfig, DataSpec | None]:
    """The model config and data spec stored in a model directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{str(directory)!r} is not a saved model: no {CONFIG_NAME} in it")
    raw = read_json(path, "model config")
    if raw.get("format_version") != FORMAT_VERSION or "model" not in raw:
        raise ConfigError(f"{path}: not an mmfuse model config (format_version={raw.get('format_version')!r})")
    spec = config_from_dict(DataSpec, raw["data_spec"]) if raw.get("data_spec") else None
    return config_from_dict(ModelConfig, raw["model"]), spec


def from_pretrained(directory: str | Path, map_location: str = "cpu") -> ImageTextModel:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly (every key, every shape)."""
    cfg, _ = read_config(directory)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ConfigError(f"{str(directory)!r}: no {WEIGHTS_NAME} in it")
    model = ImageTextModel(cfg)
    missing, unexpected = load_model(model, weights, strict=False, device=map_location)
    if missing or unexpected:
        raise ConfigError(
            f"{weights} does not match its {CONFIG_NAME}: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}"
        )
    return model


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved next to a model (local files only)."""
    if not (Path(directory) / "tokenizer_config.json").is_file():
        raise ConfigError(f"{str(directory)!r}: no tokenizer saved with this model (no tokenizer_config.json)")
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
