"""Attention relevance: the Chefer rules against a literal per-example reference, shapes across encoder families,
and the fast attention paths restored after explaining."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse.attribution import (
    EXPLAINERS,
    AttentionTrace,
    PredictedClass,
    TokenLayout,
    chefer_relevance,
    explain,
    record_attention,
)
from mmfuse.attribution.attention import _timm_attention_modules
from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.fusion import FusionConfig
from mmfuse.models import ImageTextModel
from tests.attribution.conftest import SPEC, make_batch, make_model
from tests.conftest import TINY_TEXT, TINY_VISION

# Switching to the explicit attention paths is announced with a UserWarning (checked in test_relevance.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*switched back:UserWarning")


def _softmax(*shape: int) -> Tensor:
    return torch.randn(*shape).softmax(dim=-1)


def _ref_avg_heads(cam: Tensor, grad: Tensor) -> Tensor:
    return (grad * cam).clamp(min=0).mean(dim=0)


def _ref_handle_residual(rel: Tensor) -> Tensor:
    eye = torch.eye(rel.shape[-1])
    residual = rel - eye
    return residual / residual.sum(dim=-1, keepdim=True) + eye


def _ref_mm_rules(r_ss: Tensor, r_qq: Tensor, r_qs: Tensor, cam_sq: Tensor) -> tuple[Tensor, Tensor]:
    r_sq_add = _ref_handle_residual(r_ss).t() @ cam_sq @ _ref_handle_residual(r_qq)
    return cam_sq @ r_qs, r_sq_add


def _reference(trace: AttentionTrace, b: int) -> tuple[Tensor, Tensor]:
    """Chefer et al.'s LXMERT generator, transcribed for one example of our fusion (text pooled by masked mean)."""
    assert trace.grads is not None
    mask = trace.text_mask[b]
    L, N = mask.shape[0], trace.text_to_image[0].shape[-1]
    r_tt, r_ii, r_ti, r_it = torch.eye(L), torch.eye(N), torch.zeros(L, N), torch.zeros(N, L)
    for cam, grad in zip(trace.text_self, trace.grads[0]):
        a = _ref_avg_heads(cam[b], grad[b])
        r_tt, r_ti = r_tt + a @ r_tt, r_ti + a @ r_ti
    for cam, grad in zip(trace.vision_self, trace.grads[1]):
        a = _ref_avg_heads(cam[b], grad[b])
        r_ii, r_it = r_ii + a @ r_ii, r_it + a @ r_it
    for k in range(len(trace.text_to_image)):
        tt_add, ti_add = _ref_mm_rules(
            r_tt, r_ii, r_it, _ref_avg_heads(trace.text_to_image[k][b], trace.grads[2][k][b])
        )
        ii_add, it_add = _ref_mm_rules(
            r_ii, r_tt, r_ti, _ref_avg_heads(trace.image_to_text[k][b], trace.grads[3][k][b])
        )
        r_tt, r_ti, r_ii, r_it = r_tt + tt_add, r_ti + ti_add, r_ii + ii_add, r_it + it_add
    weights = mask.float() / mask.sum()
    text = (weights @ (r_tt - torch.eye(L)) + r_it.mean(dim=0)) * mask
    image = weights @ r_ti + (r_ii - torch.eye(N)).mean(dim=0)
    return text, image


def test_chefer_rules_match_the_reference_transcription() -> None:
    B, nh, L, N = 2, 2, 5, 6
    maps = [
        [_softmax(B, nh, L, L) for _ in range(2)],
        [_softmax(B, nh, N, N) for _ in range(2)],
        [_softmax(B, nh, L, N) for _ in range(2)],
        [_softmax(B, nh, N, L) for _ in range(2)],
    ]
    grads = [[torch.randn_like(m) for m in group] for group in maps]
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    trace = AttentionTrace(*maps, grads, mask, TokenLayout(0, (2, 3)), (8, 12))
    text, image = chefer_relevance(trace)
    for b in range(B):
        ref_text, ref_image = _reference(trace, b)
        torch.testing.assert_close(text[b], ref_text, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(image[b], ref_image, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("vision", ["resnet", "vit"])
@pytest.mark.parametrize("text", ["bert", "distilbert"])
def test_every_field_has_its_documented_shape(vision: str, text: str) -> None:
    model, batch = make_model(vision, text), make_batch()
    result = explain(model, batch, methods=EXPLAINERS.names(), method_kwargs={"integrated_gradients": {"n_steps": 4}})
    assert model.training, "explain() restores training mode"
    B, L, (H, W) = len(batch), batch.input_ids.shape[1], batch.images.shape[-2:]
    grid = model.vision.grid_size  # type: ignore[union-attr]
    for name, attribution in result.items():
        assert attribution.method == name
        has_image, has_text = name not in ("grad_x_input", "integrated_gradients"), name not in ("gradcam", "hirescam")
        assert (attribution.image is not None) == has_image and (attribution.image_grid is not None) == has_image
        assert (attribution.text is not None) == has_text
        if attribution.image is not None and attribution.image_grid is not None:
            assert attribution.image.shape == (B, H, W) and attribution.image_grid.shape == (B, *grid)
            assert attribution.image.min() >= 0 and attribution.image.max() <= 1
            assert torch.isfinite(attribution.image_grid).all() and (attribution.image_grid >= 0).all()
        if attribution.text is not None:
            assert attribution.text.shape == (B, L) and torch.isfinite(attribution.text).all()
            assert (attribution.text >= 0).all() and (attribution.text[~batch.attention_mask] == 0).all()


def test_co_attention_and_the_vit_are_traced() -> None:
    model, batch = make_model("vit", "bert", co_attention=True), make_batch()
    result = explain(model, batch, methods=["fusion_relevance", "rollout"])
    for attribution in result.values():
        assert attribution.text is not None and attribution.image_grid is not None
        assert torch.isfinite(attribution.text).all() and attribution.image_grid.sum() > 0


def test_fusions_without_attention_are_refused_with_the_methods_that_work() -> None:
    cfg = ModelConfig(
        width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], fusion=FusionConfig(name="concat")
    )
    model = ImageTextModel(resolve_model_config(cfg, SPEC))
    with pytest.raises(ValueError, match="gradcam, grad_x_input or integrated_gradients"):
        explain(model, make_batch(), methods=["fusion_relevance"])
    assert set(explain(model, make_batch(), methods=["gradcam", "grad_x_input"])) == {"gradcam", "grad_x_input"}


def test_fast_attention_is_used_again_after_explaining(monkeypatch: pytest.MonkeyPatch) -> None:
    model, batch = make_model("vit", "bert").eval(), make_batch()
    vit_attention = _timm_attention_modules(model.vision.backbone)  # type: ignore[union-attr]
    assert vit_attention and all(m.fused_attn for m in vit_attention)
    calls: list[int] = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args: object, **kwargs: object) -> Tensor:
        calls.append(1)
        return sdpa(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    before = model(batch.images, batch.input_ids, batch.attention_mask).logits
    fast_calls = len(calls)
    assert fast_calls == 2 + 2 + 2  # fusion layers + BERT layers + ViT blocks
    calls.clear()
    with pytest.warns(UserWarning, match="switched back") as warned:
        for name in ("fusion_relevance", "raw_attention", "rollout"):
            EXPLAINERS.get(name)(model, batch, PredictedClass())
    assert {"BertModel", "VisionTransformer"} <= {str(w.message).split(":")[0] for w in warned}
    assert not calls, "the attention methods run the explicit attention paths"
    with record_attention(model) as record:  # the switched model computes the same logits
        switched = model(batch.images, batch.input_ids, batch.attention_mask, return_attn_weights=True).logits
    assert len(record.text) == 2 and len(record.vision) == 2
    torch.testing.assert_close(switched, before, rtol=0, atol=1e-5)
    calls.clear()
    after = model(batch.images, batch.input_ids, batch.attention_mask).logits
    assert len(calls) == fast_calls
    assert model.text.model.config._attn_implementation == "sdpa"  # type: ignore[union-attr]
    assert all(m.fused_attn for m in vit_attention)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_switches_are_restored_when_explaining_fails() -> None:
    model, batch = make_model("vit", "distilbert"), make_batch()

    def failing(output: object, batch: object = None) -> Tensor:
        raise RuntimeError("target failed")

    with pytest.raises(RuntimeError, match="target failed"):
        EXPLAINERS.get("fusion_relevance")(model, batch, failing)
    assert model.text.model.config._attn_implementation == "sdpa"  # type: ignore[union-attr]
    assert all(m.fused_attn for m in _timm_attention_modules(model.vision.backbone))  # type: ignore[union-attr]
    assert model.training
