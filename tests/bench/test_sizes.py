"""Named benchmark sizes: tiny and base as configs, small read from the default experiment."""

from __future__ import annotations

import pytest

from mmfuse.bench.sizes import DEFAULT_EXPERIMENT, build_size_model, experiment_size, get_size
from mmfuse.errors import ConfigError
from mmfuse.experiment import read_experiment


def test_tiny_is_resolved_and_builds() -> None:
    size = get_size("tiny")
    assert size.model.width == 64 and size.seq_len == 16 and size.spec.image_size == 64
    assert size.model.head.num_classes == size.spec.num_classes and size.model.vocab_size == size.spec.vocab_size
    model = build_size_model(size)
    assert model.training and sum(p.numel() for p in model.parameters()) < 1_000_000


def test_small_is_the_default_experiments_model() -> None:
    from mmfuse.data.datamodule import ShapesDataModule
    from mmfuse.data.shapes import ShapesWorldConfig

    raw, _ = read_experiment(DEFAULT_EXPERIMENT)  # the YAML itself, its base file merged in
    size = get_size("small")
    assert size.model.width == raw["model"]["width"]
    assert size.model.vision.model_name == raw["model"]["vision"]["model_name"]
    assert size.model.text.config_kwargs == raw["model"]["text"]["config_kwargs"]
    assert size.model.fusion.num_layers == raw["model"]["fusion"]["num_layers"]
    assert size.optim.lr == raw["optim"]["lr"]
    # The spec derived here without Lightning is the data module's.
    assert size.spec == ShapesDataModule(ShapesWorldConfig(**raw["data"]["world"])).spec


def test_base_is_vit_b16_and_bert_base() -> None:
    size = get_size("base")  # the config only: building it takes seconds
    cfg = size.model
    assert cfg.vision.model_name == "vit_base_patch16_224" and cfg.vision.img_size == 224
    assert cfg.text.model_type == "bert" and cfg.text.config_kwargs == {}  # transformers' default: 12 x 768
    assert (cfg.width, cfg.fusion.num_layers, cfg.vocab_size, size.seq_len) == (768, 2, 30522, 32)


def test_unknown_size_and_missing_experiment_are_config_errors(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="'huge'"):
        get_size("huge")
    with pytest.raises(ConfigError, match="does not exist"):
        experiment_size("no/such/experiment.yaml")
