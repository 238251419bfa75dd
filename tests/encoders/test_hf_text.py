from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, BertModel

from mmfuse.encoders import HFTextEncoder, HFTextEncoderConfig
from mmfuse.errors import ConfigError
from tests.conftest import TINY_TEXT, random_text_batch


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
