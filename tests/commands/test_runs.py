"""``mmfuse runs list|compare|tag`` through the console entry point, and provenance from one real tiny fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from mmfuse.cli import main
from mmfuse.provenance import PACKAGES
from tests.test_runs import make_run


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``mmfuse runs ARGS`` -> (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_run(tmp_path, "version_0", created="2024-01-01T00:00:00+00:00", commit="abcdef0123" + "0" * 30)
    make_run(tmp_path, "version_1", num_layers=4, val_acc=(0.9,), created="2024-01-02T00:00:00+00:00", dirty=True)
    return tmp_path


def test_list_shows_one_line_per_run(root: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = _run(capsys, "list", "--root", str(root))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[2].split()[:4] == ["version_0", "2024-01-01", "00:00:00", "abcdef0"]
    assert lines[3].split()[3] == "0000000*" and lines[3].split()[-2:] == ["0.9000", "0.9000"]


def test_tag_then_compare_against_the_tag(root: Path, capsys: pytest.CaptureFixture) -> None:
    assert _run(capsys, "tag", "version_0", "baseline", "--root", str(root))[:2] == (
        0,
        "tagged version_0 as baseline\n",
    )
    code, out, _ = _run(capsys, "list", "--root", str(root))
    assert "baseline" in out.splitlines()[2]
    code, out, _ = _run(
        capsys, "compare", "version_1", "--baseline", "baseline", "--root", str(root), "--format", "json"
    )
    comparison = json.loads(out)
    assert code == 0 and comparison["runs"] == ["version_0", "version_1"]
    assert comparison["config_diff"] == {"model.fusion.num_layers": {"version_0": 2, "version_1": 4}}
    assert comparison["delta"]["version_1"]["best val/acc"] == pytest.approx(0.9 - 0.75)
    code, out, _ = _run(capsys, "compare", "version_0", "version_1", "--root", str(root), "--format", "md")
    assert code == 0 and "| model.fusion.num_layers | 2 | 4 |" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "version_7"], "'version_7'"),
        (["compare", "version_0", "--baseline", "nosuchtag"], "'nosuchtag'"),
        (["tag", "version_0", "bad tag"], "'bad tag'"),
        (["tag", "version_9", "ok"], "'version_9'"),
    ],
)
def test_errors_end_with_one_line_naming_the_value(
    args: list[str], message: str, root: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = _run(capsys, *args, "--root", str(root))
    assert code == 2 and err.startswith("mmfuse: error: ") and message in err and "Traceback" not in err


def test_tag_conflict_needs_force(root: Path, capsys: pytest.CaptureFixture) -> None:
    _run(capsys, "tag", "version_0", "best", "--root", str(root))
    code, _, err = _run(capsys, "tag", "version_1", "best", "--root", str(root))
    assert code == 2 and "'best' is already on run 'version_0'" in err
    assert _run(capsys, "tag", "version_1", "best", "--force", "--root", str(root))[0] == 0
    assert json.loads((root / "tags.json").read_text()) == {"best": "version_1"}


def test_plot_overlays_two_runs_named_with_their_tags(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _run(capsys, "tag", "version_0", "baseline", "--root", str(root))
    out_file = tmp_path / "two.png"
    code, out, _ = _run(capsys, "plot", "baseline", "version_1", "--root", str(root), "--out", str(out_file))
    assert code == 0 and out == f"curves of version_0 (baseline), version_1 written to {out_file}\n"
    pixels = np.asarray(Image.open(out_file).convert("RGB")).reshape(-1, 3)
    for colour in ("C0", "C1"):  # a colour per run
        assert _has_colour(pixels, colour)
    code, _, err = _run(capsys, "plot", "version_0", "version_1", "--root", str(root), "--out", str(out_file),
                        "--metrics", "val/acc, val/loss")  # fmt: skip
    assert code == 0 and Image.open(out_file).size == (2 * 420, 300 + 30)  # two panels under a one-line legend
    assert "logged none" not in err
    (root / "version_1" / "metrics.csv").write_text("epoch,step,train/loss\n0,1,2.0\n")
    code, _, err = _run(capsys, "plot", "version_0", "version_1", "--root", str(root), "--out", str(out_file),
                        "--metrics", "val/acc")  # fmt: skip
    assert code == 0 and "mmfuse runs plot: version_1 logged none of the drawn metrics: no line of it\n" in err


def _has_colour(pixels: np.ndarray, colour: str) -> bool:
    rgb = np.round(np.array(to_rgb(colour)) * 255)
    return bool((np.abs(pixels.astype(int) - rgb) <= 2).all(axis=1).any())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "val/accc"], "'val/accc' is not in the metrics.csv of runs"),
        (["--metrics", " , "], "--metrics ' , '"),
        (["--out", "curves.jpeg"], "--out 'curves.jpeg'"),
        (["--out", "missing/curves.png"], "no such directory 'missing'"),
    ],
)
def test_plot_errors_end_with_one_line_naming_the_value(
    args: list[str], message: str, root: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(root)
    code, _, err = _run(capsys, "plot", "version_0", "version_1", "--root", str(root), *args)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_list_without_runs_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(capsys, "list", "--root", str(tmp_path))
    assert code == 2 and f"no runs under {str(tmp_path)!r}" in err
    code, _, err = _run(capsys, "list", "--root", str(tmp_path / "missing"))
    assert code == 2 and "missing" in err


def test_real_fit_records_provenance_and_is_listed(tiny_run: Path, capsys: pytest.CaptureFixture) -> None:
    fit_root = tiny_run.parent  # the shared tiny run's `--trainer.default_root_dir`, read only
    record = json.loads((fit_root / "version_0" / "provenance.json").read_text())
    assert {"created", "argv", "git", "packages", "hardware", "seed", "data_fingerprint"} <= set(record)
    assert record["seed"] == 0 and re.fullmatch(r"[0-9a-f]{64}", record["data_fingerprint"])
    assert set(record["packages"]) == {"python", *PACKAGES} and record["packages"]["lightning"]
    assert record["hardware"]["cpu_count"] >= 1
    git = record["git"]
    assert re.fullmatch(r"[0-9a-f]{40}", git["commit"]) and isinstance(git["dirty"], bool)
    assert (fit_root / "version_0" / "git.diff").is_file() == git["dirty"]
    capsys.readouterr()
    code, out, _ = _run(capsys, "list", "--root", str(fit_root))
    row = out.splitlines()[2].split()
    assert code == 0 and row[0] == "version_0" and row[3] == git["commit"][:7] + ("*" if git["dirty"] else "")
