"""Text-token attribution: integrated gradients against captum, completeness, chunking, and the sign options."""

from __future__ import annotations

import pytest
import torch

from mmfuse.attribution import ClassLogit, PredictedClass, grad_x_input, integrated_gradients
from mmfuse.attribution.text import integration_points
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch
from tests.attribution.conftest import make_batch, make_model

CLASSES = torch.tensor([0, 1, 3])


@pytest.fixture(scope="module")
def model() -> ImageTextModel:
    torch.manual_seed(0)
    return make_model("resnet", "bert").eval()


@pytest.fixture
def batch() -> Batch:
    return make_batch()


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_match_captum(model: ImageTextModel, batch: Batch, method: str) -> None:
    captum_attr = pytest.importorskip("captum.attr")
    embeddings = model.text.model.get_input_embeddings()  # type: ignore[union-attr]

    def forward(input_ids: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return model(images, input_ids, mask).logits

    reference = captum_attr.LayerIntegratedGradients(forward, embeddings).attribute(
        batch.input_ids,
        baselines=torch.zeros_like(batch.input_ids),  # the padding id
        additional_forward_args=(batch.images, batch.attention_mask),
        target=CLASSES,
        n_steps=8,
        method=method,
    )
    ours = integrated_gradients(model, batch, ClassLogit(CLASSES), n_steps=8, method=method, sign="signed").text
    assert ours is not None
    # captum's trapezoid weights are 1/n with halved ends (they sum to (n-1)/n); ours sum to 1
    scale = 8 / 7 if method == "riemann_trapezoid" else 1.0
    torch.testing.assert_close(ours, scale * reference.sum(dim=-1) * batch.attention_mask, rtol=1e-4, atol=1e-6)


def test_completeness_and_chunking(model: ImageTextModel, batch: Batch) -> None:
    target = ClassLogit(CLASSES)
    whole = integrated_gradients(model, batch, target, n_steps=16, internal_batch_size=1000, sign="signed").text
    chunked = integrated_gradients(model, batch, target, n_steps=5, internal_batch_size=3, sign="signed").text
    once = integrated_gradients(model, batch, target, n_steps=5, internal_batch_size=1000, sign="signed").text
    assert whole is not None and chunked is not None
    torch.testing.assert_close(chunked, once, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        score = target(model(batch.images, batch.input_ids, batch.attention_mask))
        base_ids = torch.zeros_like(batch.input_ids)
        base = target(model(batch.images, base_ids, batch.attention_mask))
    torch.testing.assert_close(whole.sum(dim=1), score - base, rtol=1e-3, atol=1e-4)


def test_sign_options_and_padding(model: ImageTextModel, batch: Batch) -> None:
    signed = grad_x_input(model, batch, PredictedClass(), sign="signed").text
    positive = grad_x_input(model, batch, PredictedClass()).text
    absolute = grad_x_input(model, batch, PredictedClass(), sign="absolute").text
    assert signed is not None and positive is not None and absolute is not None
    torch.testing.assert_close(positive, signed.clamp_min(0))
    torch.testing.assert_close(absolute, signed.abs())
    assert (signed[~batch.attention_mask] == 0).all() and signed.abs().sum() > 0
    with pytest.raises(ValueError, match="sign"):
        grad_x_input(model, batch, PredictedClass(), sign="both")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integration_points_integrate_polynomials(method: str) -> None:
    alphas, weights = integration_points(8, method)
    assert weights.sum().item() == pytest.approx(1.0)
    assert (alphas >= 0).all() and (alphas <= 1).all()
    assert (weights * alphas).sum().item() == pytest.approx(0.5)  # integral of x over [0, 1]
