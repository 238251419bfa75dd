"""Metrics of explanations: known answers on hand-made maps, toy models whose evidence sits in one patch / token,
and the randomization check on a tiny real model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mmfuse.attribution.base import Attribution
from mmfuse.attribution.metrics import (
    box_mask,
    deletion_insertion,
    energy_in_box,
    faithfulness_report,
    patch_pointing_game,
    pointing_game,
    randomization_check,
    randomization_stages,
)
from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.fusion import FusionConfig
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION, random_text_batch

BOX = torch.tensor([[2.0, 3.0, 5.0, 7.0]])  # exclusive right/bottom: columns 2..4, rows 3..6


def _map_with_max_at(row: int, col: int, size: int = 10) -> Tensor:
    heat = torch.zeros(1, size, size)
    heat[0, row, col] = 1.0
    return heat


def test_box_mask_covers_exactly_the_pixels_of_an_exclusive_box() -> None:
    mask = box_mask([BOX], 10, 10)[0]
    rows, cols = mask.nonzero(as_tuple=True)
    assert rows.unique().tolist() == [3, 4, 5, 6] and cols.unique().tolist() == [2, 3, 4]
    assert int(mask.sum()) == 12
    assert int(box_mask([BOX], 10, 10, tolerance=1)[0].sum()) == 5 * 6


@pytest.mark.parametrize(
    ("row", "col", "tolerance", "hit"),
    [
        (4, 3, 0.0, True),  # centre
        (3, 2, 0.0, True),  # top-left corner pixel
        (6, 4, 0.0, True),  # bottom-right pixel (x1 - 1, y1 - 1)
        (7, 4, 0.0, False),  # just below: y1 is exclusive
        (4, 5, 0.0, False),  # just right
        (4, 5, 1.0, True),  # ... inside a 1 px tolerance
        (4, 6, 1.0, False),
        (0, 9, 0.0, False),  # far away
    ],
)
def test_pointing_game_hits_inside_and_misses_outside(row: int, col: int, tolerance: float, hit: bool) -> None:
    assert pointing_game(_map_with_max_at(row, col), [BOX], tolerance).tolist() == [hit]


def test_patch_pointing_game_asks_whether_the_peak_patch_touches_the_box() -> None:
    grid = torch.zeros(4, 8, 8)
    grid[0, 2, 3] = 1.0  # patch spans x 24..32, y 16..24: overlaps the box below
    grid[1, 2, 4] = 1.0  # x 32..40: the box ends at x = 32 (exclusive), so no overlap
    grid[2, 2, 3] = grid[2, 7, 7] = 1.0  # tie: one of the peaks is on the box -> hit
    box = torch.tensor([[20.0, 10.0, 32.0, 22.0]])
    hits = patch_pointing_game(grid, [box, box, box, box], (64, 64))  # the 4th map is constant: a miss
    assert hits.tolist() == [True, False, True, False]
    assert patch_pointing_game(grid[:1], [torch.zeros(0, 4)], (64, 64)).tolist() == [False], "no box: a miss"
    upsampled = torch.nn.functional.interpolate(grid[:1, None], size=(64, 64), mode="bilinear")[:, 0]
    # a pixel-level game on a tight box can miss what the patch game hits: the peak pixel is the patch centre (28, 20)
    assert pointing_game(upsampled, [torch.tensor([[20.0, 10.0, 27.0, 22.0]])]).tolist() == [False]
    assert patch_pointing_game(grid[:1], [torch.tensor([[20.0, 10.0, 27.0, 22.0]])], (64, 64)).tolist() == [True]


def test_pointing_game_batches_ties_constant_maps_and_several_boxes() -> None:
    tie = torch.zeros(10, 10)
    tie[0, 0] = tie[4, 3] = 1.0  # two maxima, one inside
    two_boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [8.0, 8.0, 10.0, 10.0]])
    corner = _map_with_max_at(9, 9)[0]
    maps = torch.stack([tie, torch.zeros(10, 10), torch.ones(10, 10), corner, corner])
    boxes = [BOX, BOX, BOX, two_boxes, torch.zeros(0, 4)]
    assert pointing_game(maps, boxes).tolist() == [True, False, False, True, False]


def test_energy_in_box_is_the_share_of_positive_mass_inside() -> None:
    uniform = torch.ones(1, 10, 10)
    inside_only = box_mask([BOX], 10, 10).float()
    half = inside_only * 3 + (~box_mask([BOX], 10, 10)).float() * 3 * 12 / 88  # equal mass inside and outside
    negative = inside_only - 5 * (1 - inside_only)  # negative values are clipped: all mass inside
    maps = torch.cat([uniform, inside_only, half, negative, torch.zeros(1, 10, 10)])
    energy = energy_in_box(maps, [BOX] * 5)
    torch.testing.assert_close(energy, torch.tensor([0.12, 1.0, 0.5, 1.0, 0.0]), rtol=0, atol=1e-6)


def test_maps_and_boxes_must_agree() -> None:
    with pytest.raises(ValueError, match="2 box sets for 1 maps"):
        pointing_game(torch.zeros(1, 4, 4), [BOX, BOX])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        energy_in_box(torch.zeros(4, 4), [BOX])


# ------------------------------------------------------------------------------------------------ toy models

GRID, PATCH, KEY = 4, 4, 7  # 16 px images on a 4 x 4 patch grid; token id 7 carries the text evidence
EVIDENCE = (1, 2)  # the patch (row, col) that carries the image evidence


class PatchAndTokenModel(nn.Module):
    """Class 1 iff the evidence patch is bright and token KEY is present; each alone gives class 1 half-way."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, batch: Batch) -> Tensor:
        self.calls += 1
        r, c = EVIDENCE
        patch = batch.images[:, :, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH].mean(dim=(1, 2, 3))
        token = ((batch.input_ids == KEY) & batch.attention_mask).any(dim=1).float()
        score = 8 * patch + 4 * token - 6  # (B,)
        return torch.stack([torch.zeros_like(score), score], dim=1)  # (B, 2)


def _toy_batch(n: int = 6) -> Batch:
    images = torch.rand(n, 3, GRID * PATCH, GRID * PATCH) * 0.2
    r, c = EVIDENCE
    images[:, :, r * PATCH : (r + 1) * PATCH, c * PATCH : (c + 1) * PATCH] = 1.0
    ids = torch.randint(8, 20, (n, 7))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[:, 3] = KEY
    return Batch(images, ids, torch.ones(n, 7, dtype=torch.bool), torch.ones(n, dtype=torch.long))


def test_deletion_insertion_prefers_the_true_map_over_random_orderings() -> None:
    model, batch = PatchAndTokenModel(), _toy_batch()
    true_map = torch.zeros(len(batch), GRID, GRID)
    true_map[:, EVIDENCE[0], EVIDENCE[1]] = 1.0
    steps = 8
    true = deletion_insertion(model, batch, true_map, "image", steps=steps)
    assert model.calls == 1 + 2 * (steps + 1)  # the target, then one forward per step and curve
    assert true["deletion_curve"].shape == (len(batch), steps + 1)
    torch.testing.assert_close(true["fraction"][:, [0, -1]], torch.tensor([[0.0, 1.0]]).expand(len(batch), 2))
    random = [
        deletion_insertion(model, batch, torch.rand(len(batch), GRID, GRID), "image", steps=steps, seed=s)
        for s in range(5)
    ]
    assert (true["deletion_auc"] < torch.stack([r["deletion_auc"] for r in random]).mean(0)).all()
    assert (true["insertion_auc"] > torch.stack([r["insertion_auc"] for r in random]).mean(0)).all()
    assert ((0 <= true["deletion_auc"]) & (true["insertion_auc"] <= 1)).all()


@pytest.mark.parametrize("replacement", [1, None])
def test_text_deletion_insertion_keeps_special_tokens_and_finds_the_key(replacement: int | None) -> None:
    model, batch = PatchAndTokenModel(), _toy_batch()
    removable = batch.attention_mask.clone()
    removable[:, [0, -1]] = False  # [CLS] and [SEP] stay
    true_map = (batch.input_ids == KEY).float()
    anti_map = 1 - true_map  # the key token removed last
    kwargs: dict[str, Any] = {"text_replacement": replacement, "removable": removable, "steps": 5}
    true = deletion_insertion(model, batch, true_map, "text", **kwargs)
    anti = deletion_insertion(model, batch, anti_map, "text", **kwargs)
    assert (true["deletion_auc"] < anti["deletion_auc"]).all() and (true["insertion_auc"] > anti["insertion_auc"]).all()
    expected = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # 5 removable tokens, one per step
    torch.testing.assert_close(true["fraction"][0], expected)


def test_deletion_insertion_rejects_bad_shapes_and_modalities() -> None:
    model, batch = PatchAndTokenModel(), _toy_batch(2)
    with pytest.raises(ValueError, match="modality"):
        deletion_insertion(model, batch, torch.rand(2, 7), "audio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="text maps"):
        deletion_insertion(model, batch, torch.rand(2, 5), "text")
    with pytest.raises(ValueError, match="image maps"):
        deletion_insertion(model, batch, torch.rand(2, 16), "image")


def test_blur_baseline_and_tensor_baseline_run() -> None:
    model, batch = PatchAndTokenModel(), _toy_batch(2)
    grid = torch.rand(2, GRID, GRID)
    for baseline in ("blur", torch.zeros(3)):
        result = deletion_insertion(model, batch, grid, "image", steps=2, image_baseline=baseline)
        assert torch.isfinite(result["deletion_auc"]).all()


# ---------------------------------------------------------------------------------------------- randomization


def _tiny_model() -> ImageTextModel:
    cfg = ModelConfig(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], fusion=FusionConfig())
    return ImageTextModel(resolve_model_config(cfg, TINY_SPEC)).eval()


def _tiny_batch(n: int = 3) -> Batch:
    ids, mask = random_text_batch(n, 6, TINY_SPEC.vocab_size, [6, 4, 5][:n])
    return Batch(torch.rand(n, 3, 32, 32), ids, mask)


def gradient_x_input(model: nn.Module, batch: Batch) -> Attribution:
    """|grad x input| of the top logit, summed over colour channels: a map that depends on every weight."""
    images = batch.images.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(images, batch.input_ids, batch.attention_mask).logits
        logits.max(dim=1).values.sum().backward()
    assert images.grad is not None
    return Attribution("grad_x_input", image=(images.grad * images).abs().sum(dim=1).detach())


def test_randomization_stages_run_top_down() -> None:
    stages = randomization_stages(_tiny_model())
    flat = [path for stage in stages for path in stage]
    assert stages[0] == ["head"] and stages[1] == ["fusion.norm", "fusion.text_layers.1"]
    assert flat.index("vision.proj") < flat.index("vision.backbone.layer4.1") < flat.index("vision.backbone.conv1")
    assert flat.index("text.model.encoder.layer.1") < flat.index("text.model.embeddings")


def test_randomization_check_leaves_the_model_alone_and_decorrelates() -> None:
    model, batch = _tiny_model(), _tiny_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    result = randomization_check(model, batch, gradient_x_input)
    assert result["text"] is None and result["image"].shape == (len(randomization_stages(model)) + 1, len(batch))
    assert len(result["stages"]) == result["image"].shape[0] and result["stages"][0] == "original"
    torch.testing.assert_close(result["image"][0], torch.ones(len(batch)))
    assert result["image"][-1].abs().mean() < 0.5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    again = randomization_check(model, batch, gradient_x_input)
    torch.testing.assert_close(again["image"], result["image"], equal_nan=True)  # seeded: reproducible


# ------------------------------------------------------------------------------------------------------ report


def _box_explain(model: nn.Module, batch: Batch, methods: tuple[str, ...] = (), **_: object) -> dict[str, Attribution]:
    """A stand-in for ``mmfuse.attribution.explain``: ``box`` points at the top-left quarter, ``grad`` is real."""
    image = torch.zeros(len(batch), 32, 32)
    image[:, :16, :16] = 1.0
    out = {"box": Attribution("box", image=image, text=batch.attention_mask.float())}
    out["grad"] = gradient_x_input(model, batch)
    return {m: out[m] for m in methods}


def test_faithfulness_report_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmfuse.attribution

    monkeypatch.setattr(mmfuse.attribution, "explain", _box_explain, raising=False)
    model = _tiny_model()
    batches = [(_tiny_batch(3), [torch.tensor([[0.0, 0.0, 16.0, 16.0]])] * 3) for _ in range(2)]

    def fixed(classes: Tensor) -> None:
        return None

    report = faithfulness_report(
        model, batches, ["box", "grad"], tmp_path, steps=4, text_replacement=1, special_token_ids=[2, 3],
        randomization_examples=4, n_boot=50, targets=fixed,
    )  # fmt: skip
    box = report["methods"]["box"]
    assert box["pointing_game"]["mean"] == 1.0 and box["energy_in_box"]["mean"] == 1.0
    assert "pointing_game_patch" not in box, "a map without a patch grid has no patch pointing game"
    assert box["pointing_game"]["n"] == 6 and "deletion_auc_text" in box
    assert "randomization_spearman_image" in report["methods"]["grad"]
    assert set(report["methods"]) == {"box", "grad", "random"}
    assert len(report["randomization"]["curves"]["grad"]["image"]) == len(report["randomization"]["stages"])
    saved = json.loads((tmp_path / "faithfulness.json").read_text())
    assert saved["n_examples"] == 6
    markdown = (tmp_path / "faithfulness.md").read_text()
    assert "| box | 1.000 [1.000, 1.000]" in markdown and "pointing game" in markdown


def test_precomputed_attributions_give_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    import mmfuse.attribution

    monkeypatch.setattr(mmfuse.attribution, "explain", _box_explain, raising=False)
    model, batch = _tiny_model(), _tiny_batch(3)
    pairs = [(batch, [torch.tensor([[0.0, 0.0, 8.0, 8.0]])] * 3)]
    kwargs: dict[str, Any] = {"steps": 2, "randomization_examples": 0, "n_boot": 20}
    computed = faithfulness_report(model, pairs, ["box"], **kwargs)
    precomputed = [_box_explain(model, batch, ("box",))]
    given = faithfulness_report(model, pairs, ["box"], attributions=precomputed, **kwargs)
    assert given["methods"] == computed["methods"]
    with pytest.raises(ValueError, match="2 precomputed attribution sets for 1 batches"):
        faithfulness_report(model, pairs, ["box"], attributions=[{}, {}])
