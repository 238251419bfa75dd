"""``mmfuse audit`` on a tiny shapes world: with a checkpoint, data only, training the configured model, and each
bad input as a one-line error before any work."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mmfuse.cli import main
from tests.conftest import REPO, TINY_CLI_ARGS

MAIN = str(REPO / "experiments" / "shapes_color.yaml")
FAST = ["--n-boot", "50", "--batch-size", "32"]


def _tiny(cache_dir: Path) -> list[str]:
    """TINY_CLI_ARGS (model, data and trainer overrides, as `mmfuse fit` takes them) and the data cache."""
    return [*TINY_CLI_ARGS, f"--data.cache_dir={cache_dir}"]


@pytest.fixture
def run_dir(tiny_run_label_noise: Path) -> Path:
    """Two training steps of the tiny main experiment on a world with planted label noise (shared: read only)."""
    return tiny_run_label_noise


def _audit(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_audit_with_a_checkpoint(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "audit"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    caplog.set_level(logging.INFO, logger="mmfuse.progress")
    code, stdout, _ = _audit(capsys, "--config", str(run_dir / "config.yaml"), "--ckpt", str(ckpt), "--out", str(out),
                             *FAST)  # fmt: skip
    assert code == 0 and "| label error fraction (train) |" in stdout and "audit " in stdout
    # off a terminal, one progress line per stage, with its counts
    stages = [r.getMessage().split(" done in ")[0] for r in caplog.records if r.name == "mmfuse.progress"]
    assert stages == [
        "audit: data 160 examples", "audit: model", "audit: class balance 3/3 splits",
        "audit: image hashes 160/160 images", "audit: duplicates 3/3 splits", "audit: leakage 2/2 splits",
        "audit: features 256/256 examples", "audit: label errors 3/3 splits", "audit: mismatches 3/3 splits",
        "audit: write 6 files",
    ]  # fmt: skip
    report = json.loads((out / "audit.json").read_text())
    assert report["source"]["features"] == f"checkpoint {ckpt}" and set(report["balance"]) == {"train", "val", "test"}
    train = report["label_errors"]["train"]
    assert train["n"] == 96 and train["ground_truth"] is not None  # the world marks its planted noise
    assert set(report["mismatches"]) == {"train", "val", "test"} and report["config"]["n_boot"] == 50
    assert {"class_shares.png", "duplicates.png", "label_quality.png", "matching_scores.png"} <= {
        p.name for p in out.iterdir()
    }
    assert "## Likely label errors" in (out / "audit.md").read_text()


def test_audit_with_a_saved_model_directory(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "audit"
    args = ["--config", str(run_dir / "config.yaml"), "--model", str(run_dir / "model"), "--out", str(out)]
    code, _, _ = _audit(capsys, *args, "--splits", "train", "val", "--no-plots", *FAST)
    assert code == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["source"]["features"] == f"saved model {run_dir / 'model'}"
    assert set(report["mismatches"]) == {"train", "val"}


def test_data_only_audit_with_thresholds_and_strict_exit(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "audit"
    args = ["--config", MAIN, *_tiny(cache_dir), "--out", str(out), "--data-only", "--no-plots", *FAST]
    code, stdout, _ = _audit(capsys, *args, "--splits", "train", "test", "--max-imbalance-ratio", "1.0",
                             "--max-duplicate-text-fraction", "none", "--strict")  # fmt: skip
    assert code == 1 and "audit FAILED" in stdout  # no sample of 96 labels over 6 classes is perfectly balanced
    report = json.loads((out / "audit.json").read_text())
    assert report["label_errors"] == {} and set(report["balance"]) == {"train", "test"}
    assert report["config"]["max_imbalance_ratio"] == 1.0 and report["config"]["max_duplicate_text_fraction"] is None
    assert sorted(p.name for p in out.iterdir()) == ["audit.json", "audit.md"]


def test_without_a_checkpoint_the_configured_model_is_trained_first(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "audit"
    code, _, _ = _audit(capsys, "--config", MAIN, *_tiny(cache_dir), "--out", str(out), "--no-plots",
                        "--mismatch-negatives", "40", *FAST)  # fmt: skip
    assert code == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["source"]["features"].startswith("the configured model trained here (2 steps")
    assert (out / "fit").is_dir() and report["label_errors"]["val"]["n"] == 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.world.colour", "3"], "colour"),
        (["--max-imbalance-ratio", "0.5"], "audit max_imbalance_ratio=0.5: must be >= 1"),
        (["--max-label-error-fraction", "2"], "audit max_label_error_fraction=2.0: a fraction must lie in [0, 1]"),
        (["--folds", "1"], "audit folds=1: must be >= 2"),
        (["--near-duplicate-distance", "300"], "near_duplicate_distance=300: must lie in 0..255"),
        (["--splits", "dev"], "split(s) ['dev'] not in the data; it has ['test', 'train', 'val']"),
        (["--ckpt", "/no/such.ckpt"], "--ckpt '/no/such.ckpt': no such file"),
        (["--set", "data.batch_size=8"], "--set is gone; give config overrides as in `mmfuse fit`: --data.batch_size"),
        (["--data.batch_size"], "--data.batch_size needs a value"),
        (["--data.batch_size", "8", "stray"], "unrecognized argument 'stray'"),
        (["--model.optim.lr", "0.1"], "override --model.optim.lr: optim is a top-level section now: --optim.lr"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    out = tmp_path / "never"
    code, _, stderr = _audit(capsys, "--config", MAIN, *_tiny(cache_dir), "--out", str(out), "--data-only", *args)
    assert code == 2 and stderr.startswith("mmfuse: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()


def test_an_out_directory_that_cannot_be_made_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, stderr = _audit(capsys, "--config", MAIN, "--out", str(blocker / "audit"), "--data-only")
    assert code == 2 and "is a file, so no directory can be made below it" in stderr
    code, _, stderr = _audit(capsys, "--config", MAIN, "--out", str(blocker), "--data-only")
    assert code == 2 and "is a file, not a directory" in stderr


def test_a_checkpoint_of_another_model_is_refused(
    run_dir: Path, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    data = [a for a in TINY_CLI_ARGS if a.startswith("--data.")] + ["--data.cache_dir", str(cache_dir)]
    code, _, stderr = _audit(capsys, "--config", MAIN, "--ckpt", ckpt, *data, "--out", str(tmp_path / "never"))
    assert code == 2 and "does not match the configured model" in stderr and "model.width" in stderr
    assert not (tmp_path / "never").exists()
