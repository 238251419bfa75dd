"""torch.export and ONNX export of a saved model: round trip, parity, report, CLI and errors.

One tiny model is exported once (through the CLI) for the whole module; the other tests read its files.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from mmfuse.cli import main
from mmfuse.config import ModelConfig, resolve_model_config
from mmfuse.data import train_word_tokenizer
from mmfuse.errors import ConfigError
from mmfuse.export import (
    FORMATS,
    LogitsModule,
    OnnxRunner,
    ParityError,
    Runner,
    check_parity,
    example_inputs,
    export_model,
    load_runners,
    require_onnx,
)
from mmfuse.models import ImageTextModel
from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(model directory, export directory, printed table) of one ``mmfuse export`` run on a tiny saved model."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("export")
    cfg = ModelConfig(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"])
    model = ImageTextModel(resolve_model_config(cfg, TINY_SPEC)).eval()
    model.save_pretrained(root / "model", tokenizer=train_word_tokenizer(["red", "circle"]), data_spec=TINY_SPEC)
    stdout = io.StringIO()
    argv = ["export", str(root / "model"), "--out", str(root / "out"), "--repeats", "2", "--threads", "1"]
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return root / "model", root / "out", stdout.getvalue()


@pytest.fixture(scope="module")
def runners(exported: tuple[Path, Path, str]) -> dict[str, Runner]:
    """The exported files, loaded once: ``torch.export.load(...).module()`` and an ONNX Runtime session."""
    return load_runners(exported[1], FORMATS, threads=1)


def _eager(model_dir: Path) -> LogitsModule:
    return LogitsModule(ImageTextModel.from_pretrained(model_dir)).eval()


def test_cli_prints_parity_and_latency(exported: tuple[Path, Path, str]) -> None:
    _, out, printed = exported
    assert {p.name for p in out.iterdir()} >= {"model.pt2", "model.onnx", "export_report.json", "export_report.md"}
    for fmt in ("eager", *FORMATS):
        assert fmt in printed
    assert "median ms" in printed and "batch dynamic, seq_len dynamic" in printed


@pytest.mark.parametrize(("batch_size", "seq_len"), [(3, 5), (7, 12)])
def test_torch_export_round_trip_has_dynamic_batch_and_length(
    exported: tuple[Path, Path, str], runners: dict[str, Runner], batch_size: int, seq_len: int
) -> None:
    eager = _eager(exported[0])
    program = runners["torch_export"]  # torch.export.load("model.pt2").module()
    inputs = example_inputs(eager.model, batch_size, seq_len, seed=1)
    assert not inputs[2].all()  # some rows are padded
    with torch.no_grad():
        torch.testing.assert_close(program(*inputs), eager(*inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("batch_size", "seq_len"), [(3, 5), (7, 12)])
def test_onnx_matches_eager_through_onnxruntime(
    exported: tuple[Path, Path, str], batch_size: int, seq_len: int
) -> None:
    model_dir, out, _ = exported
    eager = _eager(model_dir)
    runner = OnnxRunner(out / "model.onnx", threads=1)
    shapes = {i.name: i.shape for i in runner.session.get_inputs()}
    assert shapes["input_ids"] == ["batch", "seq"] and shapes["images"][0] == "batch"
    inputs = example_inputs(eager.model, batch_size, seq_len, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(runner(*inputs), eager(*inputs), atol=1e-4, rtol=0)


def test_report_records_files_parity_latency_and_versions(exported: tuple[Path, Path, str]) -> None:
    _, out, _ = exported
    report = json.loads((out / "export_report.json").read_text())
    assert report["formats"] == list(FORMATS)
    assert report["files"]["torch_export"]["model.pt2"] > 0 and report["files"]["onnx"]["model.onnx"] > 0
    assert report["dynamic_axes"] == {"batch": True, "seq_len": True}
    parity = {(p["format"], p["batch_size"]): p for p in report["parity"]}
    assert set(parity) == {(fmt, b) for fmt in FORMATS for b in (1, 32)}
    assert all(p["passed"] and p["argmax_agrees"] and p["max_abs_diff"] <= 1e-4 for p in parity.values())
    latency = {(r["format"], r["batch_size"]): r for r in report["latency"]["results"]}
    assert set(latency) == {(fmt, b) for fmt in ("eager", *FORMATS) for b in (1, 32)}
    assert all(0 < r["median_ms"] <= r["p90_ms"] and r["repeats"] == 2 for r in latency.values())
    assert report["latency"]["threads"] == 1
    assert all(report["versions"][name] for name in ("torch", "onnx", "onnxruntime"))
    assert "| torch_export | 32 |" in (out / "export_report.md").read_text()


def test_parity_failure_names_format_and_difference(
    exported: tuple[Path, Path, str], runners: dict[str, Runner]
) -> None:
    perturbed = ImageTextModel.from_pretrained(exported[0]).eval()
    with torch.no_grad():
        for param in perturbed.head.parameters():
            param.add_(0.05)
    with pytest.raises(ParityError, match=r"torch_export at batch 2: max abs diff .* > atol 0.0001"):
        check_parity(perturbed, runners, batch_sizes=(2,))
    results = check_parity(perturbed, runners, batch_sizes=(2,), strict=False)
    assert [r.format for r in results] == list(FORMATS) and not any(r.passed for r in results)


def test_cli_reports_a_parity_failure_in_one_line(
    exported: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise ParityError("exported logits differ from eager PyTorch: onnx at batch 1: max abs diff 0.5 > atol 0.0001")

    monkeypatch.setattr("mmfuse.export.export_model", fail)  # the command imports it when it runs
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(exported[0]), "--out", str(exported[1])])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("mmfuse: error: exported logits differ from eager PyTorch: onnx")


def test_missing_model_directory_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        export_model(tmp_path / "missing", tmp_path / "out", formats=["torch_export"])
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mmfuse: error:") and "no config.json" in err and "Traceback" not in err


def test_missing_onnx_packages_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(ConfigError, match=r"onnxruntime \(not installed\): pip install 'mmfuse\[export\]'"):
        require_onnx()
    with pytest.raises(ConfigError, match=r"mmfuse\[export\]"):
        export_model(tmp_path / "missing", tmp_path / "out", formats=["onnx"])  # checked before the model is read
    with pytest.raises(ConfigError, match="choose one or more of"):
        export_model(tmp_path / "missing", tmp_path / "out", formats=["tflite"])


def test_example_inputs_are_padded_at_the_end() -> None:
    model = ImageTextModel(
        resolve_model_config(ModelConfig(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"]), TINY_SPEC)
    )
    images, input_ids, mask = example_inputs(model, 6, 9)
    assert images.shape == (6, 3, TINY_SPEC.image_size, TINY_SPEC.image_size) and 0 <= images.min() <= images.max() <= 1
    assert input_ids.shape == mask.shape == (6, 9) and mask.dtype == torch.bool and mask[0].all()
    assert torch.equal(mask.int(), mask.int().cummin(dim=1).values)  # no real token after a padding token
    assert (input_ids[~mask] == TINY_SPEC.pad_token_id).all() and (input_ids < TINY_SPEC.vocab_size).all()
