"""``mmfuse report`` end to end: sections gathered from directories, a check run on the spot, bad input as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mmfuse.cli import main
from tests.conftest import REPO

MAIN = str(REPO / "experiments" / "shapes_color.yaml")


@pytest.fixture
def run_dir(tiny_run_protected: Path) -> Path:
    """Two training steps of the tiny main experiment on a world whose questions start with a name.

    The probes' run, shared and read only: its images also carry a frame, and its world has a shifted split.
    """
    return tiny_run_protected


def _report(capsys: pytest.CaptureFixture, run_dir: Path, *args: str) -> tuple[int, str, str]:
    base = ["--config", str(run_dir / "config.yaml"), "--ckpt", str(run_dir / "checkpoints" / "last.ckpt")]
    with pytest.raises(SystemExit) as exit_info:
        main(["report", *base, *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_report_gathers_found_checks_and_runs_one(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "audit.md").write_text("# Dataset audit\n\nbalanced\n\n![shares](shares.png)\n")
    Image.new("RGB", (4, 4), (200, 30, 30)).save(audit / "shares.png")
    out = tmp_path / "report"
    code, stdout, _ = _report(capsys, run_dir, "--out", str(out), "--from", str(audit), "--run", "counterfactual")
    assert code == 0 and "model report:" in stdout and "running mmfuse probe counterfactual" in stdout
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Model report: last.ckpt")
    assert "| Dataset audit | included |" in markdown and "| Counterfactual invariance | included |" in markdown
    assert (out / "checks" / "counterfactual" / "counterfactual.json").is_file()
    for missing in ("Baseline ladder", "Robustness outside the lab", "Faithfulness of explanations"):
        assert f"| {missing} | not run |" in markdown and f"## {missing}\n\n**Not run.**" in markdown
    assert "| sha256 |" in markdown and "| fusion | cross_attention |" in markdown and "| global step | 2 |" in markdown
    assert "## Provenance\n\nFrom `" in markdown and "| git commit |" in markdown  # fit wrote provenance.json
    assert "![shares](assets/audit/shares.png)" in markdown and (out / "assets" / "audit" / "shares.png").is_file()
    assert 'src="data:image/png;base64,' in (out / "report.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "audit,fairness"], "--run ['fairness']: choose from audit,baselines,counterfactual,robustness"),
        (["--from", "/no/such/dir"], "--from '/no/such/dir': no such directory"),
        (["--set", "data.batch_size=8"], "--set is gone; give config overrides as in `mmfuse fit`: --data.batch_size"),
    ],
)
def test_bad_input_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code, _, stderr = _report(capsys, run_dir, "--out", str(tmp_path / "never"), *args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_missing_checkpoint_and_other_architecture(
    run_dir: Path, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--config", MAIN, "--ckpt", "/no/such.ckpt", "--out", str(tmp_path / "never")])
    assert exit_info.value.code == 2 and "--ckpt '/no/such.ckpt': no such file" in capsys.readouterr().err
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--config", MAIN, "--ckpt", ckpt, "--out", str(tmp_path / "never"),
              f"--data.cache_dir={cache_dir}"])  # fmt: skip
    assert exit_info.value.code == 2 and "does not match the configured model" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
