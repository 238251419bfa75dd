"""``mmfuse validate`` / ``mmfuse predict`` through the command line: metrics chosen in the config, checkpoints that
monitor them, ``predictions.jsonl`` (classification, retrieval on files, and merged over two DDP processes)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_from_disk

from mmfuse.cli import main
from mmfuse.config import config_from_dict
from mmfuse.data.shapes import ShapesWorldConfig, answer_vocabulary, prepare_shapes_world
from mmfuse.experiment import read_experiment
from mmfuse.runs import find_runs
from mmfuse.training import safe_load
from mmfuse.training.predictions import _merge
from tests.conftest import REPO, TINY_CLI_ARGS, TINY_WORLD
from tests.data._make import captions_dataset

MAIN = str(REPO / "experiments" / "shapes_color.yaml")
# Validate at the end of a 2-batch epoch, so a fit writes a best checkpoint by the monitored metric.
SHORT_EPOCH = ["--trainer.limit_train_batches=2", "--trainer.val_check_interval=1.0"]


def _args(root: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["--config", MAIN, *TINY_CLI_ARGS, f"--trainer.default_root_dir={root}", f"--data.cache_dir={cache_dir}",
            *extra]  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _metrics_header(run: Path) -> list[str]:
    return (run / "metrics.csv").read_text().splitlines()[0].split(",")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny shapes run fitted with every classification metric, its best checkpoint chosen by macro-F1."""
    root = tmp_path_factory.mktemp("runs")
    metrics = "--model.metrics.names=[accuracy, macro_f1, per_class_accuracy, ece]"
    main(["fit", *_args(root, cache_dir, metrics, "--checkpoint.monitor=val/macro_f1", *SHORT_EPOCH)])
    return root


def test_predict_without_a_checkpoint_is_a_one_line_error(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *_args(tmp_path, cache_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--ckpt_path" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_unknown_metric_is_a_one_line_error_listing_the_known_ones(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_args(tmp_path, cache_dir, "--model.metrics.names=[accuracy, f1]")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "'f1'" in err and "accuracy, auroc, ece, macro_f1, per_class_accuracy" in err
    assert len(err.splitlines()) == 1


def test_fit_logs_the_chosen_metrics_and_keeps_the_best_by_macro_f1(
    fitted: Path, capsys: pytest.CaptureFixture
) -> None:
    header = _metrics_header(fitted / "version_0")
    colors = answer_vocabulary(TINY_WORLD)
    assert {"val/acc", "val/macro_f1", "val/ece", *(f"val/acc_{c}" for c in colors)} <= set(header)
    config = yaml.safe_load((fitted / "version_0" / "config.yaml").read_text())
    assert config["model"]["metrics"]["names"] == ["accuracy", "macro_f1", "per_class_accuracy", "ece"]
    best = [p for p in (fitted / "version_0" / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1
    callbacks = safe_load(fitted / "version_0" / "checkpoints" / "last.ckpt")["callbacks"]
    (state,) = [v for k, v in callbacks.items() if k.startswith("ModelCheckpoint{'monitor': 'val/macro_f1'")]
    logged = [row["val/macro_f1"] for row in csv.DictReader((fitted / "version_0" / "metrics.csv").open())]
    assert float(state["best_model_score"]) == pytest.approx(max(float(v) for v in logged if v))
    assert "val/macro_f1" in find_runs(fitted)[0].metrics  # `mmfuse runs` reads them


def test_validate_with_a_checkpoint_logs_the_metrics_the_config_names(
    fitted: Path, cache_dir: Path, tmp_path: Path
) -> None:
    ckpt = fitted / "version_0" / "checkpoints" / "last.ckpt"
    main(["validate", *_args(tmp_path, cache_dir, "--model.metrics.names=[macro_f1, ece]"), f"--ckpt_path={ckpt}"])
    header = _metrics_header(tmp_path / "version_0")
    assert "val/macro_f1" in header and "val/ece" in header and "val/acc" not in header


def test_predict_writes_one_row_per_example_with_its_top_classes(
    fitted: Path, cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = fitted / "version_0" / "checkpoints" / "last.ckpt"
    main(["predict", *_args(tmp_path, cache_dir, "--predictions.top_k=2"), f"--ckpt_path={ckpt}"])
    path = tmp_path / "version_0" / "predictions.jsonl"  # the predict run's own directory, beside its config.yaml
    assert f"predictions written to {path}" in capsys.readouterr().out
    rows = _rows(path)
    data = yaml.safe_load((tmp_path / "version_0" / "config.yaml").read_text())["data"]
    world = config_from_dict(ShapesWorldConfig, data.get("init_args", data)["world"])  # the world this run read
    test_split = load_from_disk(str(prepare_shapes_world(world, str(cache_dir)) / "test"))
    colors = answer_vocabulary(world)
    assert [row["index"] for row in rows] == list(range(len(test_split)))
    for row, label in zip(rows, test_split["label"]):
        assert len(row["top_k"]) == 2 and row["pred"] == row["top_k"][0]["class"] in colors
        assert row["top_k"][0]["prob"] >= row["top_k"][1]["prob"]
        assert row["label"] == colors[label]
    assert (tmp_path / "version_0" / "config.yaml").is_file()


def test_retrieval_predictions_rank_the_whole_split_and_name_the_datas_own_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = captions_dataset(tmp_path / "captions", num_images=6, captions_per_image=2)
    data = {"class_path": "ImageTextDataModule", "init_args": {
        "source": {"format": "captions_csv", "root": str(root), "split_sizes": {"train": 4, "test": 2}},
        "image_size": 32, "batch_size": 3, "val_split": "test"}}  # fmt: skip
    experiment = read_experiment(MAIN)[0] | {"data": data}  # its base file merged in: the copy lives elsewhere
    config = tmp_path / "retrieval.yaml"
    config.write_text(yaml.safe_dump(experiment))
    args = ["--config", str(config), "--model.task=retrieval", *TINY_CLI_ARGS[:3], "--trainer.max_epochs=1",
            "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path / 'runs'}",
            f"--data.cache_dir={tmp_path / 'cache'}", "--model.metrics.rerank_k=2", "--checkpoint.monitor=val/r_mean",
            "--checkpoint.filename=best"]  # fmt: skip
    main(["fit", *args])
    reranked = {"val/t2i_r1_itm", "val/i2t_r1_itm", "val/r_mean_itm"}  # logged because of model.metrics.rerank_k
    assert reranked <= set(_metrics_header(tmp_path / "runs" / "version_0"))
    main(["predict", *args, f"--ckpt_path={tmp_path / 'runs' / 'version_0' / 'checkpoints' / 'best.ckpt'}",
          "--predictions.top_k=3"])  # fmt: skip
    rows = _rows(tmp_path / "runs" / "version_1" / "predictions.jsonl")
    captions, images = [r for r in rows if "top_images" in r], [r for r in rows if "top_captions" in r]
    assert [r["index"] for r in captions] == [0, 1, 2, 3]  # 2 test images x 2 captions
    test_images = {r["image_id"] for r in captions}
    assert test_images == {r["image_id"] for r in images} and len(test_images) == 2
    for row in captions:
        assert row["record_id"] and 0.0 <= row["match_prob"] <= 1.0
        assert len(row["top_images"]) == 2 and {t["image_id"] for t in row["top_images"]} == test_images  # k <= 2
    for row in images:
        assert len(row["top_captions"]) == 3 and {t["index"] for t in row["top_captions"]} <= {0, 1, 2, 3}


def test_two_process_ddp_predict_merges_ranks_without_repeats(fitted: Path, cache_dir: Path, tmp_path: Path) -> None:
    ckpt = fitted / "version_0" / "checkpoints" / "last.ckpt"
    # 31 test rows on 2 processes at batch size 4: shards of 16 and 15 rows.
    size = ["--data.world.num_test=31", "--data.batch_size=4", f"--ckpt_path={ckpt}", "--predictions.top_k=3"]
    main(["predict", *_args(tmp_path / "single", cache_dir, *size)])
    cmd = [sys.executable, "-m", "mmfuse.cli", "predict", *_args(tmp_path / "ddp", cache_dir, *size),
           "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    single = _rows(tmp_path / "single" / "version_0" / "predictions.jsonl")
    merged = _rows(tmp_path / "ddp" / "version_0" / "predictions.jsonl")
    assert [r["index"] for r in merged] == list(range(31))
    assert [(r["pred"], r["label"]) for r in merged] == [(r["pred"], r["label"]) for r in single]
    for a, b in zip(merged, single):
        assert [t["prob"] for t in a["top_k"]] == pytest.approx([t["prob"] for t in b["top_k"]], abs=1e-5)


def test_rows_a_padding_sampler_repeats_are_written_once() -> None:
    # DistributedSampler pads 5 rows on 2 processes to 3 + 3 by repeating row 0; Lightning's predict sampler does not
    # pad, but a configured sampler may.
    rank0 = {"_index": torch.tensor([0, 2, 4]), "top_classes": torch.tensor([[1], [3], [5]])}
    rank1 = {"_index": torch.tensor([1, 3, 0]), "top_classes": torch.tensor([[2], [4], [1]])}
    indices, merged = _merge([rank0, rank1])
    assert indices.tolist() == [0, 1, 2, 3, 4] and merged["top_classes"].flatten().tolist() == [1, 2, 3, 4, 5]
