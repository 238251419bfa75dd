"""``mmfuse baselines`` on a tiny shapes world, and its bad input as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfuse.cli import main
from tests.conftest import REPO

MAIN = str(REPO / "experiments" / "shapes_color.yaml")


@pytest.fixture
def run_dir(tiny_run: Path) -> Path:
    """Two training steps of the tiny main experiment (shared: read only)."""
    return tiny_run


def _baselines(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["baselines", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_ladder_from_a_checkpoint(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ladder"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    code, stdout, _ = _baselines(capsys, "--config", str(run_dir / "config.yaml"), "--ckpt", str(ckpt), "--out",
                                 str(out), "--n-boot", "50", "--min-gain", "none")  # fmt: skip
    assert code == 0 and "# Baseline ladder (test split)" in stdout and "| model (cross_attention) |" in stdout
    ladder = json.loads((out / "baselines.json").read_text())
    names = [row["name"] for row in ladder["rows"]]
    assert names == ["majority class", "text only", "image only", "concat / late fusion", "model (cross_attention)"]
    assert all(row["accuracy"]["n"] == 32 for row in ladder["rows"]) and ladder["split"] == "test"
    assert ladder["model"] == f"checkpoint {ckpt}" and ladder["checks"][0]["status"] == "reported"
    assert (out / "baselines.md").read_text().startswith("# Baseline ladder")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "train"], "--split 'train' is the split the probes are fit on"),
        (["--split", "dev"], "split(s) ['dev'] not in the data"),
        (["--level", "95"], "--level=95.0: a confidence level must lie strictly between 0 and 1"),
        (["--model.fusion.nam", "concat"], "--model.fusion.nam"),
        (["--model", "/no/such/dir"], "--model '/no/such/dir': no such directory"),
    ],
)
def test_bad_input_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    base = ["--config", str(run_dir / "config.yaml"), "--out", str(tmp_path / "never")]
    if "--model" not in args:
        base += ["--ckpt", str(run_dir / "checkpoints" / "last.ckpt")]
    code, _, stderr = _baselines(capsys, *base, *args)
    assert code == 2 and stderr.startswith("mmfuse: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
