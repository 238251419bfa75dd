"""The model's fields are listed once, in ModelConfig: the LightningModule's signature, the architecture keys of
checkpoints and the experiment's typed sections all derive from it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

from mmfuse.config import MODEL_KEYS, ExperimentConfig, ModelConfig, with_model_fields
from mmfuse.training import FusionLitModule
from mmfuse.training.checkpointing import _TRAINING_ONLY, ARCHITECTURE_KEYS


def test_model_keys_are_the_dataclass_fields_an_experiment_sets() -> None:
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    assert list(MODEL_KEYS) == [name for name in fields if name not in ("vocab_size", "pad_token_id")]


def test_architecture_keys_are_the_model_fields_and_the_data_spec() -> None:
    assert ARCHITECTURE_KEYS == (*MODEL_KEYS, "data_spec")
    assert _TRAINING_ONLY == {"model.contrastive.itm_weight"}  # marked on its dataclass field


def test_the_lit_modules_signature_names_the_model_fields_with_their_defaults() -> None:
    params = inspect.signature(FusionLitModule).parameters
    assert list(params) == [*MODEL_KEYS, "metrics", "optim", "speed", "data_spec"]
    defaults = ModelConfig()
    assert all(params[key].default == getattr(defaults, key) for key in MODEL_KEYS)
    assert params["width"].annotation is int  # types resolved from the dataclass, as jsonargparse needs them


def test_with_model_fields_needs_keyword_only_own_parameters() -> None:
    def positional(self: object, optim: object = None, **model: object) -> None: ...

    with pytest.raises(TypeError, match=r"must take \(self, \*, <own parameters>, \*\*model\)"):
        with_model_fields(positional)


def test_experiment_config_writes_the_yaml_layout() -> None:
    cfg = ExperimentConfig(data={"batch_size": 8}, extra={"seed_everything": 3, "trackers": {"wandb": False}})
    values = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))  # plain values only
    assert list(values) == ["seed_everything", "trainer", "model", "optim", "speed", "data", "trackers"]
    assert list(values["model"]) == [*MODEL_KEYS, "metrics"] and values["optim"]["betas"] == [0.9, 0.999]
