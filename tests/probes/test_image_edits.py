"""The shapes world's image-side protected attribute (a 1 px frame) and its counterfactual edit."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.data.shapes import PROTECTED_FRAME_COLORS, ShapesWorldConfig, cache_key, generate_split
from mmfuse.errors import ConfigError
from mmfuse.probes import ProbeData, counterfactual_report, resolve_image_edit, swap_shapes_frame
from mmfuse.probes.image_edits import IMAGE_EDITS, ImageCounterfactual, shapes_frame_pair
from tests.conftest import TINY_WORLD
from tests.probes.conftest import FrameModel, RedModel, make_data

WORLD = dataclasses.replace(TINY_WORLD, protected_attribute=True, protected_frame=True)


def _records(cfg: ShapesWorldConfig, split: str = "val", n: int = 24) -> list[dict]:
    columns = generate_split(cfg, split, n)
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    for row in rows:
        row["image"] = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
    return rows


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255  # (H, W, 3) -> (3, H, W)


def test_frame_marks_the_group_and_is_off_by_default() -> None:
    for row in _records(WORLD, "val") + _records(dataclasses.replace(WORLD, shift=True), "shift", 8):
        pixels = _tensor(row["image"])
        expected = torch.tensor(PROTECTED_FRAME_COLORS[row["protected_group"]]) / 255
        for edge in (pixels[:, 0, :], pixels[:, -1, :], pixels[:, :, 0], pixels[:, :, -1]):
            torch.testing.assert_close(edge, expected[:, None].expand_as(edge))
    plain = dataclasses.replace(WORLD, protected_frame=False)
    framed, unframed = _records(WORLD), _records(plain)
    assert [r["text"] for r in framed] == [r["text"] for r in unframed]  # the frame draws no random numbers
    assert cache_key(plain) == cache_key(dataclasses.replace(plain)) != cache_key(WORLD)
    with pytest.raises(ConfigError, match="protected_frame needs data.world.protected_attribute"):
        ShapesWorldConfig(protected_frame=True)


def test_cache_key_of_a_world_without_the_frame_did_not_change() -> None:
    """Worlds without the frame hash the fields they had before it existed, so their caches stay valid."""
    import hashlib
    import json

    from mmfuse.data.shapes import GENERATOR_VERSION

    cfg = ShapesWorldConfig(task="exists", protected_attribute=True)
    earlier_fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "protected_frame"}
    payload = json.dumps({"version": GENERATOR_VERSION, **earlier_fields}, sort_keys=True)
    assert cache_key(cfg) == hashlib.sha256(payload.encode()).hexdigest()[:16]


def test_swap_changes_only_the_frame() -> None:
    row = _records(WORLD, n=2)[0]
    image = _tensor(row["image"])
    edited = swap_shapes_frame(image, row)
    assert edited.shape == image.shape and edited.dtype == image.dtype
    torch.testing.assert_close(edited[:, 1:-1, 1:-1], image[:, 1:-1, 1:-1])
    other = torch.tensor(PROTECTED_FRAME_COLORS[1 - row["protected_group"]]) / 255
    torch.testing.assert_close(edited[:, 0, :], other[:, None].expand(3, image.shape[-1]))
    assert swap_shapes_frame(edited, {**row, "protected_group": 1 - row["protected_group"]}).equal(image)
    with pytest.raises(ConfigError, match="no frame of its group's colour"):
        swap_shapes_frame(_tensor(_records(dataclasses.replace(WORLD, protected_frame=False), n=1)[0]["image"]), row)
    with pytest.raises(ConfigError, match="protected_group -1"):
        swap_shapes_frame(image, {"protected_group": -1})
    assert shapes_frame_pair({"protected_group": 0}) == ("group0", "group1")
    assert shapes_frame_pair({"protected_group": -1}) is None


def test_frame_probe_flags_a_frame_model_and_passes_a_centre_model() -> None:
    from mmfuse.data.collate import ImageTextCollator
    from mmfuse.data.tokenizer import train_word_tokenizer

    rows = _records(WORLD, n=40)
    data = ProbeData(rows, ImageTextCollator(train_word_tokenizer([r["text"] for r in rows])))
    frame = resolve_image_edit("shapes_frame")
    flagged = counterfactual_report(FrameModel(), data, attributes=(), image_edits=[frame], n_boot=100)
    result = flagged["frame"]
    assert result.overall is not None and result.overall.flip_rate.estimate == 1.0 and not flagged.passed
    assert {p.label for p in result.pairs} == {"group0 -> group1", "group1 -> group0"}
    clean = counterfactual_report(RedModel(), data, attributes=(), image_edits=[frame], n_boot=100)
    assert clean.passed and clean["frame"].overall.flip_rate.estimate == 0.0  # type: ignore[union-attr]


def recolour(image: torch.Tensor, record: dict) -> torch.Tensor:
    return image.flip(0)


def test_resolve_by_name_and_by_import_path() -> None:
    assert "shapes_frame" in IMAGE_EDITS.names()
    by_path = resolve_image_edit("tests.probes.test_image_edits:recolour")
    assert isinstance(by_path, ImageCounterfactual) and by_path.name == "recolour" and by_path.edit is recolour
    assert by_path.pair_of({}) == ("original", "edited")
    report = counterfactual_report(RedModel(), make_data(["a"] * 4), attributes=(), image_edits=[by_path], n_boot=50)
    assert report["recolour"].overall.flip_rate.estimate == 1.0  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="unknown image_edit 'shapes_fram'"):
        resolve_image_edit("shapes_fram")
    with pytest.raises(ConfigError, match="cannot import 'nope' from 'tests.probes.test_image_edits'"):
        resolve_image_edit("tests.probes.test_image_edits:nope")
    with pytest.raises(ConfigError, match="is a ShapesWorldConfig, not a function"):
        resolve_image_edit("tests.probes.test_image_edits:WORLD")
