"""Known answer: an ImageTextModel whose weights are set by hand so that its answer comes from one patch and one
token; every method must peak there.

Vision: a tiny timm ResNet whose convolutions only carry the input's intensity in channel 0 through the stem and the
downsampling shortcuts (all residual branches off), so the last feature map is the image's brightness per 32 px cell.
A position embedding gives only patch ``PATCH`` a key that the fusion's queries match, so the fusion reads that patch
alone (every other patch gets attention ~e^-35). Text: one BERT layer whose queries all match the key token's
embedding; every other token id has a zero word embedding, so the answer is a function of the key token alone. The
head reads one fused direction into the logit of class 0, which grows with both the patch's brightness and the key
token's value vector.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import Tensor, nn

from mmfuse.attribution import EXPLAINERS, explain
from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.encoders import HFTextEncoderConfig, TimmVisionEncoderConfig
from mmfuse.fusion import FusionConfig
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_VISION

# Switching to the explicit attention paths is announced with a UserWarning (checked in test_relevance.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*switched back:UserWarning")

SPEC = dataclasses.replace(TINY_SPEC, image_size=128)  # tiny ResNet: 32x reduction -> 4x4 grid
GRID = (4, 4)
PATCH = (2, 1)  # (row, column) of the one patch the model reads
KEY_ID = 7  # the one token id with a non-zero word embedding
KEY_POSITIONS = (3, 1)  # where each example holds the key token
LENGTHS = (6, 4)


def _basis(dim: int, *pairs: tuple[int, float]) -> Tensor:
    vector = torch.zeros(dim)
    for index, value in pairs:
        vector[index] += value
    return vector


def _set_vision(model: ImageTextModel, width: int) -> None:
    """Channel 0 of every stage = brightness; tokens = background + content (+ a key on PATCH only)."""
    assert model.vision is not None
    for module in model.vision.backbone.modules():
        if isinstance(module, nn.Conv2d):
            module.weight.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.fill_(1.0), module.bias.zero_(), module.running_mean.zero_(), module.running_var.fill_(1.0)
    model.vision.backbone.conv1.weight[0, :, 3, 3] = 1.0 / 3.0  # centre tap: mean of RGB at stride 2
    for name, module in model.vision.backbone.named_modules():
        if name.endswith("downsample.0"):
            module.weight[0, 0, 0, 0] = 1.0  # shortcut keeps channel 0; residual branches are all zero
    model.vision.proj.weight.zero_()
    model.vision.proj.weight[:, 0] = _basis(width, (3, 2.0), (4, -2.0))  # content direction d = 2 (e3 - e4)
    model.vision.proj.bias.copy_(_basis(width, (1, 1.0), (2, -1.0)))  # background c = e1 - e2 (zero mean)
    model.vision.pos_embed.zero_()
    model.vision.pos_embed[0, PATCH[0] * GRID[1] + PATCH[1]] = _basis(width, (6, 4.0), (7, -4.0))  # key e6 - e7


def _set_fusion_and_head(model: ImageTextModel, width: int, heads: int) -> None:
    """Every text query matches the key direction; the value carries the content direction into e5."""
    block = model.fusion.text_layers[0]
    attn, hd = block.attn, width // heads
    for linear in (attn.q, attn.kv, attn.proj, block.mlp.fc2, model.head.net[-1]):
        linear.weight.zero_(), linear.bias.zero_()
    for h in range(heads):
        attn.q.bias[h * hd] = 20.0  # query: constant z per head
        attn.kv.weight[h * hd] = _basis(width, (6, 1.0), (7, -1.0))  # key slot 0 reads the key direction
        attn.kv.weight[width + h * hd + 1] = _basis(width, (3, 1.0), (4, -1.0))  # value slot 1 reads content
        attn.proj.weight[5, h * hd + 1] = 0.5  # value slot 1 -> e5
    model.head.net[-1].weight[0, 5] = 1.0  # logit of class 0 = mean fused e5


def _set_text(model: ImageTextModel, width: int) -> None:
    """One BERT layer: all queries attend to the key token, whose value lands in f5, projected to e5."""
    assert model.text is not None
    bert = model.text.model
    hidden, heads = bert.config.hidden_size, bert.config.num_attention_heads
    hd = hidden // heads
    emb = bert.embeddings
    emb.word_embeddings.weight.zero_()
    emb.word_embeddings.weight[KEY_ID] = _basis(hidden, (3, 2.0), (4, -2.0), (6, 4.0), (7, -4.0))
    emb.position_embeddings.weight.copy_(_basis(hidden, (1, 1.0), (2, -1.0)).expand_as(emb.position_embeddings.weight))
    emb.token_type_embeddings.weight.zero_()
    layer = bert.encoder.layer[0]
    attention = layer.attention.self
    for linear in (attention.query, attention.key, attention.value, layer.attention.output.dense, layer.output.dense):
        linear.weight.zero_(), linear.bias.zero_()
    for h in range(heads):
        attention.query.bias[h * hd] = 20.0
        attention.key.weight[h * hd] = _basis(hidden, (6, 1.0), (7, -1.0))
        attention.value.weight[h * hd + 1] = _basis(hidden, (3, 1.0), (4, -1.0))
        layer.attention.output.dense.weight[5, h * hd + 1] = 0.5
    model.text.proj.weight.zero_()
    model.text.proj.weight[5, 5] = 0.5  # f5 -> e5
    model.text.proj.bias.copy_(_basis(width, (8, 2.0), (9, -2.0)))  # background keeps the fusion's norms well posed


def known_answer_model() -> ImageTextModel:
    """The hand-set model (eval mode)."""
    width, heads = 16, 2
    vision = dataclasses.replace(TINY_VISION["resnet"], use_pos_embed=True)
    text = HFTextEncoderConfig(
        model_type="bert",
        config_kwargs={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    )
    assert isinstance(vision, TimmVisionEncoderConfig)
    cfg = ModelConfig(width=width, vision=vision, text=text, fusion=FusionConfig(num_layers=1, num_heads=heads))
    model = ImageTextModel(resolve_model_config(cfg, SPEC)).eval()
    with torch.no_grad():
        _set_vision(model, width)
        _set_fusion_and_head(model, width, heads)
        _set_text(model, width)
    return model


def known_answer_batch() -> Batch:
    """Black images with a bright square inside PATCH; filler ids around one key token; the second row padded."""
    B, L = len(LENGTHS), max(LENGTHS)
    images = torch.zeros(B, 3, SPEC.image_size, SPEC.image_size)
    cell = SPEC.image_size // GRID[0]
    top, left = PATCH[0] * cell, PATCH[1] * cell
    # 2 px margin: the stem's max-pool widens a bright region by one pixel, which must not reach the next cell.
    images[:, :, top + 2 : top + cell - 2, left + 2 : left + cell - 2] = 1.0
    mask = torch.arange(L)[None, :] < torch.tensor(LENGTHS)[:, None]  # (B, L)
    ids = torch.randint(8, SPEC.vocab_size, (B, L)).masked_fill(~mask, SPEC.pad_token_id)
    for row, position in enumerate(KEY_POSITIONS):
        ids[row, position] = KEY_ID
    return Batch(images, ids, mask, torch.zeros(B, dtype=torch.long))


@pytest.fixture(scope="module")
def model() -> ImageTextModel:
    return known_answer_model()


def test_the_model_reads_only_the_patch_and_the_key_token(model: ImageTextModel) -> None:
    batch = known_answer_batch()
    with torch.no_grad():
        logits = model(batch.images, batch.input_ids, batch.attention_mask).logits
        fmap = model.vision.backbone(batch.images)[-1][:, 0]  # type: ignore[union-attr]
        noisy = batch.images.clone()
        top, left = PATCH[0] * 32, PATCH[1] * 32
        patch = noisy[:, :, top : top + 32, left : left + 32].clone()
        noisy = torch.rand_like(noisy)
        noisy[:, :, top : top + 32, left : left + 32] = patch  # every other patch replaced by noise
        other_ids = batch.input_ids.clone()
        other_ids[batch.input_ids != KEY_ID] = 9
        changed = model(noisy, other_ids.masked_fill(~batch.attention_mask, 0), batch.attention_mask).logits
        dark = model(torch.zeros_like(batch.images), batch.input_ids, batch.attention_mask).logits
    assert (fmap > 0).nonzero()[:, 1:].unique(dim=0).tolist() == [list(PATCH)]
    assert (logits.argmax(dim=1) == 0).all()
    torch.testing.assert_close(changed, logits, rtol=0, atol=1e-5)
    assert (dark[:, 0] < logits[:, 0] - 0.1).all(), "the patch's brightness is evidence for class 0"


@pytest.mark.parametrize("method", EXPLAINERS.names())
def test_every_method_peaks_at_the_known_patch_and_token(model: ImageTextModel, method: str) -> None:
    batch = known_answer_batch()
    attribution = explain(model, batch, methods=[method])[method]
    assert attribution.image is not None or attribution.text is not None
    if attribution.image_grid is not None and attribution.image is not None:
        flat = attribution.image_grid.flatten(1).argmax(dim=1)
        assert flat.tolist() == [PATCH[0] * GRID[1] + PATCH[1]] * len(LENGTHS), attribution.image_grid
        cell = SPEC.image_size // GRID[0]
        peak = attribution.image.flatten(1).argmax(dim=1)
        rows, cols = peak // SPEC.image_size, peak % SPEC.image_size
        assert (rows // cell == PATCH[0]).all() and (cols // cell == PATCH[1]).all()
    if attribution.text is not None:
        assert attribution.text.argmax(dim=1).tolist() == list(KEY_POSITIONS), attribution.text
        assert (attribution.text[~batch.attention_mask] == 0).all()
