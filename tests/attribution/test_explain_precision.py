"""``mmfuse explain --precision``: maps made under bf16 (and fp16, where this CPU's torch casts to it) autocast, each
method's rank agreement with its fp32 maps in faithfulness.json, bad values as one line, and a retrieval model's maps
of its ITM match logit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mmfuse.attribution import Attribution, amp
from mmfuse.cli import main
from mmfuse.experiment import read_experiment
from tests.conftest import MAIN_EXPERIMENT, TINY_CLI_ARGS
from tests.data._make import captions_dataset

# Switching to the explicit attention paths is announced with a UserWarning (checked in test_relevance.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*switched back:UserWarning")

METHODS = ["gradcam", "fusion_relevance", "grad_x_input"]
FAST = ["--n", "4", "--batch-size", "2", "--methods", *METHODS]
FP16_UNSUPPORTED = amp.unsupported_reason(torch.device("cpu"), torch.float16)


def _explain(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _checkpoint(run: Path) -> list[str]:
    return ["--config", str(run / "config.yaml"), "--ckpt", str(run / "checkpoints" / "last.ckpt")]


def _maps(agreement: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(method, image / text) -> its agreement figures."""
    return {(m, modality): v for m, maps in agreement["methods"].items() for modality, v in maps.items()}


def test_bf16_maps_differ_from_fp32_but_rank_alike(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "bf16"
    code, stdout, _ = _explain(capsys, *_checkpoint(tiny_run), "--out", str(out), *FAST, "--precision", "bf16-mixed")
    assert code == 0 and "## Agreement of bf16-mixed maps with fp32" in stdout
    report = json.loads((out / "faithfulness.json").read_text())
    agreement = report["precision"]
    assert (agreement["precision"], agreement["dtype"], agreement["n_examples"]) == ("bf16-mixed", "bfloat16", 4)
    maps = _maps(agreement)
    assert set(maps) == {("gradcam", "image"), ("fusion_relevance", "image"), ("fusion_relevance", "text"),
                         ("grad_x_input", "text")}  # fmt: skip
    for key, values in maps.items():
        assert values["nonfinite_examples"] == 0 and len(values["spearman_per_example"]) == 4
        assert values["max_abs_difference"] > 0, f"{key}: the bf16 map is the fp32 map, so autocast never ran"
        assert values["spearman"]["mean"] > 0.9, f"{key}: {values['spearman_per_example']}"
        assert values["spearman"]["ci_low"] <= values["spearman"]["mean"] <= values["spearman"]["ci_high"]
    assert "methods" not in report  # no --evaluate: the agreement alone
    assert "| fusion_relevance | text |" in (out / "faithfulness.md").read_text()
    assert "Maps made under bf16-mixed autocast" in (out / "index.html").read_text()


def test_evaluate_under_bf16_keeps_both_reports(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "evaluate"
    args = ["--n", "2", "--batch-size", "2", "--methods", "gradcam", "--evaluate", "--steps", "2"]
    args += ["--randomization-examples", "2"]
    code, _, _ = _explain(capsys, *_checkpoint(tiny_run), "--out", str(out), *args, "--precision", "bf16-mixed")
    assert code == 0
    report = json.loads((out / "faithfulness.json").read_text())
    assert report["settings"]["precision"] == "bf16-mixed" and "pointing_game" in report["methods"]["gradcam"]
    assert set(report["precision"]["methods"]) == {"gradcam"}
    markdown = (out / "faithfulness.md").read_text()
    assert "| gradcam |" in markdown and "## Agreement of bf16-mixed maps with fp32" in markdown


@pytest.mark.skipif(FP16_UNSUPPORTED is not None, reason=f"no fp16 autocast on this CPU: {FP16_UNSUPPORTED}")
def test_fp16_maps_on_the_cpu(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fp16"
    args = ["--n", "2", "--batch-size", "2", "--methods", "gradcam", "grad_x_input", "--precision", "16-mixed"]
    code, _, _ = _explain(capsys, *_checkpoint(tiny_run), "--out", str(out), *args)
    assert code == 0
    agreement = json.loads((out / "faithfulness.json").read_text())["precision"]
    assert agreement["dtype"] == "float16"
    for key, values in _maps(agreement).items():
        assert values["nonfinite_examples"] == 0 and values["spearman"]["mean"] > 0.9, (key, values)


@pytest.mark.parametrize("value", ["bf16", "fp16", "64-true"])
def test_unknown_precision_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, value: str) -> None:
    args = ["--config", "x.yaml", "--ckpt", "x.ckpt", "--out", str(tmp_path / "never"), "--precision", value]
    code, _, stderr = _explain(capsys, *args)  # refused before the (missing) files are looked at
    assert code == 2 and stderr == f"mmfuse: error: --precision {value!r}: use 32-true, bf16-mixed, 16-mixed\n"
    assert not (tmp_path / "never").exists()


def test_precision_this_machine_cannot_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(amp, "unsupported_reason", lambda device, dtype: f"no {dtype} autocast on {device}")
    args = ["--config", "x.yaml", "--ckpt", "x.ckpt", "--out", str(tmp_path / "never"), "--precision", "16-mixed"]
    code, _, stderr = _explain(capsys, *args)
    assert code == 2 and stderr == "mmfuse: error: --precision 16-mixed: no torch.float16 autocast on cpu\n"


def test_photos_take_no_precision(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--classifier", "resnet10t", "--images", str(tmp_path), "--precision", "bf16-mixed"]
    code, _, stderr = _explain(capsys, *args, "--out", str(tmp_path / "never"))
    assert code == 2 and "--precision belong to an image-text model" in stderr and len(stderr.splitlines()) == 1


def test_agreement_of_hand_made_maps() -> None:
    grid = torch.arange(12.0).reshape(3, 2, 2)  # (B, Gh, Gw)
    text = torch.tensor([[3.0, 1.0, 2.0, 0.0], [1.0, 2.0, 0.0, 0.0], [1.0, 3.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False], [True, True, True, False]])
    reduced_grid = torch.stack([grid[0], -grid[1], grid[2].masked_fill(grid[2] > 10, float("nan"))])
    reduced_text = text + torch.tensor([[0.0, 0.0, 0.0, 9.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])  # padding
    reduced = {"m": Attribution("m", image_grid=reduced_grid, text=reduced_text)}
    reference = {"m": Attribution("m", image_grid=grid, text=text)}
    image = amp.compare_maps(reduced["m"], reference["m"], mask)["image"]
    torch.testing.assert_close(image["spearman"][:2], torch.tensor([1.0, -1.0]))
    assert image["same_peak"][:2].tolist() == [True, False] and image["finite"].tolist() == [True, True, False]
    report = amp.agreement_report(reduced, reference, mask, "bf16-mixed", n_boot=50)
    image_figures, text_figures = report["methods"]["m"]["image"], report["methods"]["m"]["text"]
    assert image_figures["spearman"]["n"] == 2 and image_figures["nonfinite_examples"] == 1
    assert image_figures["spearman"]["mean"] == pytest.approx(0.0) and image_figures[
        "max_abs_difference"
    ] == pytest.approx(1.0)
    assert image_figures["spearman_per_example"][2] is None
    # padding is not compared: the 9 on example 0's padding changes nothing
    assert text_figures["spearman"]["mean"] == 1.0 and text_figures["same_peak"] == 1.0
    assert text_figures["max_abs_difference"] == 0.0
    assert "| m | image | 0.000 [" in amp.format_agreement(report)


# --- a retrieval model: its maps explain the ITM match logit of each image-caption pair ---


@pytest.fixture(scope="module")
def retrieval_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One training step of a tiny retrieval model on a captions CSV dataset (train / test split, no val)."""
    tmp = tmp_path_factory.mktemp("retrieval")
    root = captions_dataset(tmp / "captions", num_images=6, captions_per_image=2)
    source = {"format": "captions_csv", "root": str(root), "split_sizes": {"train": 4, "test": 2}}
    experiment, _ = read_experiment(MAIN_EXPERIMENT)  # its base file merged in: the copy lives elsewhere
    experiment["data"] = {"class_path": "ImageTextDataModule", "init_args": {"source": source, "image_size": 32,
                          "batch_size": 4, "val_split": "test", "cache_dir": str(tmp / "cache")}}  # fmt: skip
    config = tmp / "retrieval.yaml"
    config.write_text(yaml.safe_dump(experiment))
    main(["fit", "--config", str(config), "--model.task=retrieval", *TINY_CLI_ARGS[:3], "--trainer.max_steps=1",
          "--trainer.devices=1", "--trainer.strategy=auto", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp / 'run'}",
          "--checkpoint.monitor=val/r_mean", "--checkpoint.filename=epoch{epoch:02d}"])  # fmt: skip
    return tmp / "run" / "version_0"


def test_retrieval_maps_explain_the_match_logit(
    retrieval_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "retrieval"
    args = ["--model", str(retrieval_run / "model"), "--out", str(out), "--n", "2", "--methods", *METHODS]
    code, stdout, _ = _explain(capsys, *args, "--precision", "bf16-mixed")
    assert code == 0 and "gallery of 2 examples x 3 methods" in stdout
    page = (out / "index.html").read_text()
    assert "ITM match logit" in page and "test #1" in page and "label <b>match</b>" in page  # no val split: test
    agreement = json.loads((out / "faithfulness.json").read_text())["precision"]
    assert set(agreement["methods"]) == set(METHODS) and agreement["n_examples"] == 2
    code, _, stderr = _explain(capsys, *args, "--evaluate")
    assert code == 2 and "record (the shapes world does)" in stderr and len(stderr.splitlines()) == 1
