"""mmfuse.demo: the repository finder, a brief training run laid out like ``mmfuse fit``'s, a trained model with
examples of its data, and the examples figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import mmfuse.demo as demo
from mmfuse import BriefRun, ImageTextModel, ModelExamples, examples_figure, load_examples, repo_root, train_briefly
from mmfuse.errors import ConfigError
from tests.conftest import REPO, TINY_CLI_ARGS

EXPERIMENT = REPO / "experiments" / "notebook_tiny.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> BriefRun:
    root = tmp_path_factory.mktemp("demo-runs")
    cache = tmp_path_factory.mktemp("demo-cache")
    return train_briefly(EXPERIMENT, root, [*TINY_CLI_ARGS, f"--data.cache_dir={cache}"])


def test_repo_root_from_inside_the_repository() -> None:
    assert repo_root(REPO / "notebooks") == REPO
    assert repo_root(REPO / "mmfuse" / "attribution") == REPO


def test_repo_root_prefers_the_nearest_repository(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    assert repo_root(tmp_path / "notebooks") == tmp_path


def test_repo_root_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "__file__", str(tmp_path / "site-packages" / "mmfuse" / "demo.py"))
    with pytest.raises(ConfigError, match=str(tmp_path)):
        repo_root(tmp_path)


def test_train_briefly_lays_out_a_run_like_mmfuse_fit(run: BriefRun) -> None:
    assert run.run_dir.name == "version_0"
    assert {"config.yaml", "metrics.csv", "provenance.json", "checkpoints", "model"} <= {
        p.name for p in run.run_dir.iterdir()
    }
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    data = config["data"].get("init_args", config["data"])  # jsonargparse may write class_path + init_args
    assert config["trainer"]["max_steps"] == 2 and data["world"]["num_colors"] == 3
    assert run.cli.trainer.global_step == 2
    assert "train/acc" in run.metrics and run.seconds > 0
    model = ImageTextModel.from_pretrained(run.model_dir)  # the best checkpoint's model, loadable alone
    assert model.cfg.fusion.name == "cross_attention"


def _check_examples(examples: ModelExamples, count: int) -> None:
    batch = examples.batch
    assert len(examples) == count == len(examples.texts) == len(examples.boxes) == len(examples.indices)
    assert batch.images.shape[0] == count and batch.images.min() >= 0 and batch.images.max() <= 1
    assert examples.class_names == ("red", "green", "blue")
    assert not examples.model.training
    size = batch.images.shape[-1]
    for boxes in examples.boxes:  # the asked object: one box inside the image
        assert boxes.shape == (1, 4)
        x0, y0, x1, y1 = boxes[0].tolist()
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size


def test_load_examples_from_a_model_directory_and_from_a_checkpoint(run: BriefRun) -> None:
    from_dir = load_examples(run.model_dir, n=6)
    _check_examples(from_dir, 6)
    assert from_dir.indices == list(range(6)) and from_dir.split == "val"
    checkpoint = next((run.run_dir / "checkpoints").glob("*.ckpt"))
    from_ckpt = load_examples(checkpoint, index=[4, 1])
    _check_examples(from_ckpt, 2)
    assert from_ckpt.indices == [4, 1]
    assert from_ckpt.texts == [from_dir.texts[4], from_dir.texts[1]]
    # the same weights either way: the directory holds the best checkpoint's model
    torch.testing.assert_close(from_ckpt.logits(), from_dir.subset([4, 1]).logits())


def test_examples_subset_tokens_and_logits(run: BriefRun) -> None:
    examples = load_examples(run.model_dir, split="test", n=5)
    picked = examples.subset([3, 0])
    assert picked.indices == [3, 0] and picked.texts == [examples.texts[3], examples.texts[0]]
    assert torch.equal(picked.labels, examples.labels[[3, 0]])
    torch.testing.assert_close(picked.logits(), examples.logits()[[3, 0]])
    assert examples.logits(batch_size=2).shape == (5, 3)
    tokens = examples.tokens(0)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and len(tokens) == int(examples.batch.attention_mask[0].sum())
    assert " ".join(tokens[1:-1]) == examples.texts[0]


def test_load_examples_names_a_bad_path(tmp_path: Path, run: BriefRun) -> None:
    with pytest.raises(ConfigError, match="no/such/model"):
        load_examples(tmp_path / "no" / "such" / "model")
    with pytest.raises(ConfigError, match="out of range"):
        load_examples(run.model_dir, index=[10_000])


def test_examples_figure_draws_each_example_with_its_answer() -> None:
    images = torch.rand(3, 3, 16, 16)
    boxes = [torch.tensor([[2.0, 2.0, 8.0, 8.0]])] * 3
    figure = examples_figure(
        images, ["what colour is the circle ?"] * 3, torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]),
        ("red", "green"), boxes=boxes, columns=2,
    )  # fmt: skip
    drawn = [ax for ax in figure.axes if ax.images]
    assert len(drawn) == 3 and len(figure.axes) == 4  # 2 x 2 grid, the last one empty
    titles = [ax.get_title() for ax in drawn]
    assert "predicted red · label red" in titles[0] and "predicted green · label red" in titles[1]
    assert [ax.title.get_color() for ax in drawn] == ["tab:green", "tab:red", "tab:green"]
    assert all(len(ax.patches) == 1 for ax in drawn)
    figure.canvas.draw()  # renders headless on its own Agg canvas


def test_examples_figure_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        examples_figure(torch.rand(2, 3, 8, 8), ["q"], None, None, ("a",))
