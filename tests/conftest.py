"""Shared fixtures: tiny random-init components, a tiny shapes world, tiny trained runs, one seed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmfuse.cli import main  # noqa: E402
from mmfuse.data.shapes import ShapesWorldConfig  # noqa: E402
from mmfuse.encoders import HFTextEncoderConfig, TimmVisionEncoderConfig  # noqa: E402
from mmfuse.types import DataSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def script(name: str) -> ModuleType:
    """``scripts/<name>.py`` of the repository as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAIN_EXPERIMENT = REPO / "experiments" / "shapes_color.yaml"

# A few families of each kind, shrunk so that every test stays fast on two CPU cores.
TINY_VISION = {
    "resnet": TimmVisionEncoderConfig(
        model_name="resnet18", model_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8}
    ),
    "vit": TimmVisionEncoderConfig(
        model_name="vit_tiny_patch16_224", model_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8}
    ),
    "convnext": TimmVisionEncoderConfig(model_name="convnext_atto", model_kwargs={"dims": [8, 16, 32, 64]}),
}
TINY_TEXT = {
    "bert": HFTextEncoderConfig(
        model_type="bert",
        config_kwargs={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    ),
    "roberta": HFTextEncoderConfig(
        model_type="roberta",
        config_kwargs={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    ),
    "distilbert": HFTextEncoderConfig(
        model_type="distilbert", config_kwargs={"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
    ),
}
TINY_WORLD = ShapesWorldConfig(
    image_size=48, min_object_size=8, max_object_size=12, num_train=96, num_val=32, num_test=32
)
TINY_SPEC = DataSpec(num_classes=4, vocab_size=40, pad_token_id=0, image_size=32, class_names=("a", "b", "c", "d"))

# Command-line overrides that shrink the main experiment to seconds (used by the CLI and DDP tests).
TINY_CLI_ARGS = [
    "--model.width=32",
    "--model.vision.model_kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
    "--model.text.config_kwargs={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}",
    "--data.world.image_size=48",
    "--data.world.min_object_size=8",
    "--data.world.max_object_size=12",
    "--data.world.num_train=96",
    "--data.world.num_val=32",
    "--data.world.num_test=32",
    "--data.batch_size=16",
    "--trainer.max_epochs=1",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.max_steps=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--baselines.enabled=false",  # the ladder after fit: tests/training/test_fit_ladder.py (and the tiny_fit run)
]


@pytest.fixture(autouse=True)
def seed() -> None:
    """One seed for every test."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide cache for generated data."""
    return tmp_path_factory.mktemp("mmfuse-cache")


def _fit_tiny_run(root: Path, cache_dir: Path, *world: str) -> Path:
    """Two training steps of the tiny main experiment under ``root`` -> its run directory.

    The run directory holds what ``mmfuse fit`` leaves: ``config.yaml``, ``checkpoints/last.ckpt``, ``model/`` and
    ``provenance.json``; ``world`` are ``--data.world.*`` overrides.
    """
    main(["fit", "--config", str(MAIN_EXPERIMENT), *TINY_CLI_ARGS, *world, f"--trainer.default_root_dir={root}",
          f"--data.cache_dir={cache_dir}"])  # fmt: skip
    return root / "version_0"


# The tiny runs below are trained at most once per session and shared by every module that asks for one, so a test
# only reads them: whatever it writes (``--out``, a later fit or predict) goes under its own ``tmp_path``.


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The run directory of the tiny main experiment (the only run under its parent)."""
    return _fit_tiny_run(tmp_path_factory.mktemp("tiny-run"), cache_dir)


@pytest.fixture(scope="session")
def tiny_run_label_noise(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The tiny main experiment on a world with planted label noise in its training split (what an audit finds)."""
    return _fit_tiny_run(tmp_path_factory.mktemp("tiny-run-label-noise"), cache_dir, "--data.world.label_noise=0.1")


@pytest.fixture(scope="session")
def tiny_run_protected(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The tiny main experiment on a world whose questions start with a name or pronoun of two groups, whose images
    mark the group with a frame, and which has a shifted split (what the probes and the report check)."""
    world = ["--data.world.protected_attribute=true", "--data.world.protected_frame=true", "--data.world.shift=true"]
    return _fit_tiny_run(tmp_path_factory.mktemp("tiny-run-protected"), cache_dir, *world)


def random_text_batch(batch: int, length: int, vocab: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (B, L) and a bool mask with the given number of real tokens per row (padding at the end)."""
    input_ids = torch.randint(4, vocab, (batch, length))
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)
    return input_ids.masked_fill(~mask, 0), mask


# Streamed sources (mmfuse.data.streaming): 64 tiny shapes-world pairs in 4 WebDataset shards of 16 (the img2dataset
# layout), written once per session, and the same pairs as 2 Parquet files.
STREAM_PAIRS, STREAM_SHARD = 64, 16


@pytest.fixture(scope="session")
def stream_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of ``000000.tar`` .. ``000003.tar``; labels in each pair's JSON (``json.label``)."""
    from mmfuse.data.shards import write_shapes_shards

    out = tmp_path_factory.mktemp("shards")
    write_shapes_shards(out, STREAM_PAIRS, STREAM_SHARD, TINY_WORLD)
    return out


@pytest.fixture(scope="session")
def stream_parquet(tmp_path_factory: pytest.TempPathFactory, stream_shards: Path) -> Path:
    """The pairs of :func:`stream_shards` as a directory of 2 Parquet files (``image`` bytes, ``text``, ``label``,
    ``key``)."""
    import datasets

    from mmfuse.data.streaming import StreamSource, StreamSourceConfig

    source = StreamSource(StreamSourceConfig("webdataset", str(stream_shards)))
    rows = list(source.rows(range(source.num_shards)))
    out = tmp_path_factory.mktemp("parquet")
    table = {
        "key": [r["__key__"] for r in rows],
        "text": [r["txt"] for r in rows],
        "label": [r["json"]["label"] for r in rows],
        "image": [{"bytes": r["jpg"]["bytes"], "path": None} for r in rows],
    }
    full = datasets.Dataset.from_dict(table).cast_column("image", datasets.Image())
    for part in range(2):
        full.shard(2, part, contiguous=True).to_parquet(str(out / f"part-{part:05d}.parquet"))
    return out
