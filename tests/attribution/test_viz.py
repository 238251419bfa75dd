"""Pictures of explanations: overlays, token colours and the cross-attention grid, on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfuse.attribution.viz import (
    DISPLAY_SIZE,
    attention_grid_figure,
    colorize,
    cross_attention_maps,
    figure_to_array,
    overlay_heatmap,
    select_token,
    to_rgb,
    token_heatmap_figure,
    token_html,
    upscale,
)
from tests.attribution.conftest import make_batch, make_model


def test_to_rgb_and_colorize_map_values_to_pixels() -> None:
    image = torch.zeros(3, 4, 5)
    image[0] = 1.0
    pixels = to_rgb(image)
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8 and (pixels[..., 0] == 255).all()
    heat = torch.zeros(4, 5)
    heat[1, 2] = 3.0
    colours = colorize(heat, "gray")
    assert colours[1, 2].tolist() == [255, 255, 255] and colours[0, 0].tolist() == [0, 0, 0]
    assert (colorize(torch.full((4, 5), 7.0), "gray") == 0).all()  # a constant map has nothing to show


def test_overlay_blends_and_upsamples_a_grid() -> None:
    image = torch.rand(3, 16, 16)
    grid = torch.zeros(4, 4)
    grid[0, 3] = 1.0  # top-right patch
    assert np.array_equal(overlay_heatmap(image, grid, alpha=0.0), to_rgb(image))
    heat = overlay_heatmap(torch.zeros(3, 16, 16), grid, alpha=1.0, cmap="gray")
    assert heat.shape == (16, 16, 3)
    assert heat[1, 14].mean() > 200 and heat[14, 1].mean() < 10  # hot top-right, cold bottom-left


def test_token_html_escapes_and_colours_every_token() -> None:
    fragment = token_html(["[CLS]", "<b>", "red"], torch.tensor([0.0, 0.5, 2.0]))
    assert fragment.count("<span") == 3 and "&lt;b&gt;" in fragment and "<b>" not in fragment
    assert 'title="2"' in fragment and "background:rgb(" in fragment
    with pytest.raises(ValueError, match="2 tokens but 3 scores"):
        token_html(["a", "b"], torch.zeros(3))


def test_token_heatmap_figure_renders() -> None:
    pixels = figure_to_array(token_heatmap_figure(["what", "colour", "?"], torch.tensor([0.1, 1.0, 0.0]), title="t"))
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.std() > 0


def test_cross_attention_maps_drop_prefix_tokens_and_keep_the_patch_order() -> None:
    weights = torch.zeros(1, 2, 3, 1 + 6)  # (B, nh, L, N) with one prefix token and a 2x3 grid
    weights[0, 1, 2, 1 + 4] = 1.0  # head 1, token 2 looks at patch 4 = row 1, column 1
    weights[..., 0] = 0.5  # prefix attention is dropped
    maps = cross_attention_maps([weights, weights], (2, 3), num_prefix_tokens=1)
    assert maps.shape == (1, 2, 2, 3, 2, 3)
    assert maps[0, 0, 1, 2].nonzero().tolist() == [[1, 1]]
    with pytest.raises(ValueError, match="prefix"):
        cross_attention_maps([weights], (2, 2), num_prefix_tokens=1)


@pytest.mark.parametrize("vision", ["resnet", "vit"])
def test_maps_from_a_real_model_and_their_grid_figure(vision: str) -> None:
    model, batch = make_model(vision).eval(), make_batch()
    with torch.no_grad():
        out = model(batch.images, batch.input_ids, batch.attention_mask, return_attn_weights=True)
    assert out.image is not None and out.image.grid_size is not None and out.fusion.attn_weights is not None
    maps = cross_attention_maps(out.fusion.attn_weights, out.image.grid_size, out.image.num_prefix_tokens)
    layers, heads = len(out.fusion.attn_weights), out.fusion.attn_weights[0].shape[1]
    assert maps.shape == (len(batch), layers, heads, batch.input_ids.shape[1], *out.image.grid_size)
    total = maps.sum(dim=(-2, -1))  # attention left for the patches after dropping prefix tokens
    assert (total <= 1 + 1e-5).all() and (vision == "vit" or torch.allclose(total, torch.ones_like(total)))
    pooled = select_token(maps, batch.attention_mask)
    last_real = int(batch.attention_mask[2].sum()) - 1
    torch.testing.assert_close(pooled[2], maps[2, :, :, : last_real + 1].mean(dim=2))
    torch.testing.assert_close(select_token(maps, batch.attention_mask, token=1), maps[:, :, :, 1])
    question = "what colour is the shape left of the big circle ? " * 3  # wrapped over lines above the grid
    figure = attention_grid_figure(pooled[0], batch.images[0], title=f"{question} → red")
    assert len(figure.axes) == layers * heads
    assert figure_to_array(figure).shape[2] == 3
    sides = [min(ax.get_window_extent().width, ax.get_window_extent().height) for ax in figure.axes]  # drawn, pixels
    assert min(sides) >= DISPLAY_SIZE - 1e-6
    assert "→ red" in figure._suptitle.get_text() and "\n" in figure._suptitle.get_text()


def test_upscale_keeps_pixel_blocks_or_smooths_and_leaves_large_pictures() -> None:
    pixels = np.arange(48 * 40 * 3, dtype=np.int64).reshape(48, 40, 3).astype(np.uint8)
    blocks = upscale(pixels)  # nearest: a whole factor, 7 x 7 blocks
    assert blocks.shape == (336, 280, 3) and (blocks[::7, ::7] == pixels).all() and (blocks[6::7, 6::7] == pixels).all()
    photo = np.random.default_rng(0).integers(0, 256, (224, 300, 3), dtype=np.uint8)
    smooth = upscale(photo, resample="bicubic")
    assert smooth.shape == (256, 343, 3) and smooth.dtype == np.uint8
    assert upscale(photo, min_side=200) is photo
    with pytest.raises(ValueError, match="'bilinear'"):
        upscale(pixels, resample="bilinear")  # type: ignore[arg-type]
