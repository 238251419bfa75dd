"""``mmfuse explain`` end to end on a tiny trained checkpoint, and each bad input as a one-line error."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from mmfuse.cli import main
from tests.conftest import REPO, TINY_CLI_ARGS

MAIN = str(REPO / "experiments" / "shapes_color.yaml")
FAST = ["--batch-size", "2", "--steps", "2", "--randomization-examples", "2"]


@pytest.fixture
def run_dir(tiny_run: Path) -> Path:
    """Two training steps of the tiny main experiment: checkpoint, config.yaml and model/ (shared: read only)."""
    return tiny_run


def _explain(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_checkpoint_gallery_and_evaluation(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "explain"
    args = ["--config", str(run_dir / "config.yaml"), "--ckpt", str(run_dir / "checkpoints" / "last.ckpt")]
    methods = ["--methods", "gradcam", "fusion_relevance", "grad_x_input"]
    caplog.set_level(logging.INFO, logger="mmfuse.progress")
    code, stdout, _ = _explain(capsys, *args, "--out", str(out), "--n", "4", "--evaluate", *methods, *FAST)
    assert code == 0 and "gallery of 4 examples x 3 methods" in stdout and "| gradcam |" in stdout
    # off a terminal, one line as each stage ends, with its counts: 4 examples x 3 methods (+ the random row); a stage
    # that runs longer than progress.LOG_EVERY_S also logs lines while it runs, which depend on the machine's load
    done = [r.getMessage() for r in caplog.records if r.name == "mmfuse.progress" and " done in " in r.getMessage()]
    stages = [line.split(" done in ")[0] for line in done]
    assert stages[:5] == [
        "explain: data 4 examples", "explain: model", "explain: attributions 12/12 maps",
        "explain: gallery 4/4 examples", "explain: faithfulness 16/16 maps",
    ]  # fmt: skip
    assert [re.sub(r"(\d+)/\1 stages$", "N/N stages", line) for line in stages[5:]] == [
        f"explain: randomization {m} N/N stages" for m in ("gradcam", "fusion_relevance", "grad_x_input")
    ]
    page = (out / "index.html").read_text()
    assert all((out / src).is_file() for src in re.findall(r'src="([^"]+)"', page))
    assert page.count("<section") == 4 and "val #3" in page
    report = json.loads((out / "faithfulness.json").read_text())
    assert set(report["methods"]) == {"gradcam", "fusion_relevance", "grad_x_input", "random"}
    assert report["n_examples"] == 4 and report["settings"]["text_replacement"] == 1  # [UNK]
    gradcam = report["methods"]["gradcam"]
    assert {"pointing_game", "energy_in_box", "deletion_auc_image", "randomization_spearman_image"} <= set(gradcam)
    assert "insertion_auc_text" in report["methods"]["grad_x_input"]
    assert "| fusion_relevance |" in (out / "faithfulness.md").read_text()


def test_saved_model_directory_and_chosen_examples(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "explain"
    args = ["--model", str(run_dir / "model"), "--out", str(out), "--index", "5", "1", "--methods", "gradcam"]
    code, stdout, _ = _explain(capsys, *args)
    assert code == 0 and "gallery of 2 examples x 1 methods" in stdout
    page = (out / "index.html").read_text()
    assert page.index("val #5") < page.index("val #1")
    assert not (out / "faithfulness.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--index", "3", "99"], "--index 99 is out of range: the val split has 32 examples (0..31)"),
        (["--methods", "gradcam", "gradcamm"], "unknown attribution method(s) ['gradcamm']; known: ["),
        (["--split", "dev"], "--split 'dev': the data has splits ['test', 'train', 'val']"),
        (["--n", "0"], "must be >= 1"),
        (["--device", "tpu"], "--device 'tpu': use cpu, cuda or cuda:N"),
        (["--set", "data.batch_size=8"], "--set is gone; give config overrides as in `mmfuse fit`: --data.batch_size"),
        (["--model.fusion.nam", "concat"], "override --model.fusion.nam concat: unrecognized arguments"),
    ],
)
def test_bad_input_stops_before_any_work(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    base = ["--config", str(run_dir / "config.yaml"), "--ckpt", str(run_dir / "checkpoints" / "last.ckpt")]
    code, _, stderr = _explain(capsys, *base, "--out", str(tmp_path / "never"), *args)
    assert code == 2 and stderr.startswith("mmfuse: error: ") and message in stderr
    assert not (tmp_path / "never").exists()


def test_checkpoint_of_another_architecture_is_refused(
    run_dir: Path, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    data = [a for a in TINY_CLI_ARGS if a.startswith("--data.")] + ["--data.cache_dir", str(cache_dir)]
    code, _, stderr = _explain(capsys, "--config", MAIN, "--ckpt", ckpt, *data, "--out", str(tmp_path / "never"))
    assert code == 2 and "does not match the configured model" in stderr and "model.width" in stderr
    # the run's own config with a model override in the training commands' form: the override reaches the model
    run_config = str(Path(ckpt).parents[1] / "config.yaml")
    code, _, stderr = _explain(capsys, "--config", run_config, "--ckpt", ckpt, "--model.fusion.num_layers", "1",
                               "--out", str(tmp_path / "never"))  # fmt: skip
    assert code == 2 and "model.fusion.num_layers: checkpoint 2, config 1" in stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", MAIN, "--ckpt", "/no/such.ckpt"], "--ckpt '/no/such.ckpt': no such file"),
        (["--config", "/no/such.yaml", "--model", "."], "--config '/no/such.yaml': no such file"),
        (["--model", "/no/such/dir"], "--model '/no/such/dir': no such directory"),
        (["--ckpt", "x.ckpt"], "give --config and --ckpt, or --model"),
        (["--config", MAIN], "give --config and --ckpt, or --model"),
    ],
)
def test_missing_files_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    code, _, stderr = _explain(capsys, *args, "--out", str(tmp_path / "never"))
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


# --- `--classifier`: a plain image classifier on photos (the real photos are in tests/attribution/test_photos.py) ---


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of two small photos, a licence file and, one level down, a third photo."""
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 40, 40)).save(folder / "red.png")
    Image.new("L", (30, 40), 90).save(folder / "grey.jpg")
    Image.new("RGB", (32, 32), (20, 200, 40)).save(folder / "more" / "green.jpeg")
    (folder / "LICENSE").write_text("MIT")
    return folder


def test_classifier_gallery_of_a_folder(photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "gallery"
    args = ["--classifier", "resnet10t", "--images", str(photos), "--out", str(out), "--methods", "hirescam"]
    code, stdout, _ = _explain(capsys, *args, "--top-k", "3", "--n", "2")
    assert code == 0 and "gallery of 2 photos x 1 methods x top 3 classes" in stdout
    page = (out / "index.html").read_text()
    assert page.count("<section") == 2 and "grey.jpg" in page and "more/green.jpeg" in page  # sorted paths
    assert "red.png" not in page
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 2 * (1 + 3) and all((out / s).is_file() for s in sources)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--images", "/no/such/dir"], "images '/no/such/dir': no such file or directory"),
        (["--images", "{photos}/red.png", "{photos}/broken.jpg"], "broken.jpg: not a readable image"),
        (["--images", "{photos}/red.png", "{photos}/LICENSE"], "LICENSE: not a readable image"),  # named: taken
        (["--images", "{photos}", "--methods", "fusion_relevance"], "unknown CAM method(s) ['fusion_relevance']"),
        (["--images", "{photos}", "--top-k", "0"], "--top-k (0)"),
        (["--images", "{photos}", "--weights", "/no/such.pth"], "--weights '/no/such.pth': no such file"),
        (["--images", "{photos}", "--ckpt", "x.ckpt"], "--ckpt belong to an image-text model"),
        (["--images", "{photos}", "--evaluate"], "--evaluate belong to an image-text model"),
        ([], "--classifier needs --images"),
    ],
)
def test_classifier_bad_input_stops_before_any_model(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    args = [a.format(photos=photos) for a in args]
    code, _, stderr = _explain(capsys, "--classifier", "resnet10t", *args, "--out", str(tmp_path / "never"))
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classifier", "resnet10tt"], "close names: ['resnet10t'"),
        (["--classifier", "torchvision:mobilenet_v9"], "not a torchvision classification model"),
        (["--classifier", "resnet10t", "--target-layer", "layer5"], "Valid paths near it: ['layer4', 'layer3'"),
        (["--classifier", "resnet10t", "--weights", "{weights}"], "do not fit ResNet"),
        (["--images", "{photos}"], "--images explain photos and need --classifier"),
    ],
)
def test_classifier_bad_model_is_one_line(
    photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    import torch

    weights = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    args = [a.format(photos=photos, weights=weights) for a in args]
    images = [] if "--images" in args else ["--images", str(photos)]
    code, _, stderr = _explain(capsys, *args, *images, "--out", str(tmp_path / "never"))
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()
