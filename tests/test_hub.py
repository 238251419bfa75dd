"""save_pretrained / from_pretrained: identical logits, no Lightning, no original weight files needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.data import train_word_tokenizer
from mmfuse.encoders import HFTextEncoderConfig
from mmfuse.errors import ConfigError
from mmfuse.hub import from_pretrained, load_tokenizer, read_config
from mmfuse.models import ImageTextModel
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, random_text_batch


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = random_text_batch(3, 6, TINY_SPEC.vocab_size, [6, 4, 2])
    return torch.rand(3, 3, 32, 32), ids, mask


def _model(vision: str = "resnet", text: HFTextEncoderConfig = TINY_TEXT["bert"]) -> ImageTextModel:
    cfg = ModelConfig(width=16, vision=TINY_VISION[vision], text=text)
    return ImageTextModel(resolve_model_config(cfg, TINY_SPEC)).eval()


@pytest.mark.parametrize("vision", ["resnet", "vit"])
def test_round_trip_gives_identical_logits(vision: str, tmp_path: Path) -> None:
    model = _model(vision)
    tokenizer = train_word_tokenizer(["red", "circle"])
    model.save_pretrained(tmp_path, tokenizer=tokenizer, data_spec=TINY_SPEC)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer_config.json"}
    assert not list(tmp_path.glob("*.tmp"))
    loaded = ImageTextModel.from_pretrained(tmp_path).eval()
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(*inputs).logits, loaded(*inputs).logits)
    assert read_config(tmp_path)[1] == TINY_SPEC
    assert load_tokenizer(tmp_path).get_vocab() == tokenizer.get_vocab()


def test_loading_needs_no_original_pretrained_text_encoder(tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf-encoder"
    donor = _model()
    assert donor.text is not None
    donor.text.model.save_pretrained(hf_dir)
    text = HFTextEncoderConfig(model_type="bert", pretrained=str(hf_dir))
    model = _model(text=text)
    model.save_pretrained(tmp_path / "shared")
    shutil.rmtree(hf_dir)
    saved = json.loads((tmp_path / "shared" / "config.json").read_text())["model"]
    assert saved["text"]["pretrained"] is None and saved["vision"]["pretrained"] is None
    loaded = from_pretrained(tmp_path / "shared").eval()
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(*inputs).logits, loaded(*inputs).logits)


def test_plain_pytorch_loading_does_not_import_lightning(tmp_path: Path) -> None:
    _model().save_pretrained(tmp_path)
    code = (
        "import sys, torch; from mmfuse import ImageTextModel;"
        f"m = ImageTextModel.from_pretrained({str(tmp_path)!r});"
        "bad = [k for k in sys.modules if k.split('.')[0] in ('lightning', 'pytorch_lightning')];"
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


def test_errors_name_the_directory_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        from_pretrained(tmp_path)
    model = _model()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop(sorted(k for k in weights if k.endswith(".weight"))[0])  # (a buffer would be filled in silently)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ConfigError, match="missing"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="no tokenizer"):
        load_tokenizer(tmp_path)
