"""``mmfuse probe counterfactual|robustness`` end to end on a tiny trained checkpoint, and bad input as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfuse.cli import main
from tests.conftest import REPO

MAIN = str(REPO / "experiments" / "shapes_color.yaml")


@pytest.fixture
def run_dir(tiny_run_protected: Path) -> Path:
    """Two training steps of the tiny main experiment on names, frames and a shifted split (shared: read only)."""
    return tiny_run_protected


def _probe(capsys: pytest.CaptureFixture, run_dir: Path, *args: str) -> tuple[int, str, str]:
    base = ["--config", str(run_dir / "config.yaml"), "--ckpt", str(run_dir / "checkpoints" / "last.ckpt")]
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", args[0], *base, *args[1:]])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_counterfactual_text_and_image(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cf"
    extra = ["--image-edit", "shapes_frame", "--n", "16", "--n-boot", "50", "--tolerance", "0.5"]
    code, stdout, _ = _probe(capsys, run_dir, "counterfactual", "--out", str(out), *extra)
    report = json.loads((out / "counterfactual.json").read_text())
    assert code == (0 if report["passed"] else 1) and report["n_examples"] == 16 and report["tolerance"] == 0.5
    present = {a["attribute"]: a for a in report["attributes"] if a["present"]}
    assert set(present) == {"gender", "first_names", "frame"} and present["frame"]["kind"] == "image"
    assert sum(a["overall"]["n_examples"] for a in present.values() if a["kind"] == "text") == 16
    assert present["frame"]["overall"]["n_examples"] == 16
    assert "| frame | image | 16 | 16 |" in stdout and "counterfactual report:" in stdout
    assert "## frame (image)" in (out / "counterfactual.md").read_text()


def test_robustness_with_the_shifted_split(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "rb"
    extra = ["--n", "8", "--severities", "1", "5", "--image-corruptions", "jpeg", "occlusion", "--text-perturbations",
             "typos", "--joint", "pairs", "--n-boot", "50"]  # fmt: skip
    code, stdout, _ = _probe(capsys, run_dir, "robustness", "--out", str(out), *extra)
    assert code == 0 and "relative drop by severity" in stdout
    report = json.loads((out / "robustness.json").read_text())
    kinds = [(c["kind"], c["name"], c["severity"]) for c in report["conditions"]]
    assert (
        len(kinds) == 2 * 2 + 2 + 2 * 2 + 1 and ("shift", "shift", 0) in kinds and ("joint", "jpeg+typos", 5) in kinds
    )
    assert report["n_examples"] == 8 and report["split"] == "test"
    assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG" and "## Shifted split" in (
        out / "robustness.md"
    ).read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["counterfactual", "--attributes", "colour"], "--attributes ['colour']: the lists define ["),
        (["counterfactual", "--image-edit", "nope"], "--image-edit 'nope': unknown image_edit 'nope'"),
        (["counterfactual", "--tolerance", "2"], "--tolerance (2.0) and --dp-tolerance (None) must be in [0, 1]"),
        (["counterfactual", "--no-text"], "--no-text leaves nothing to probe: give --image-edit"),
        (["counterfactual", "--image-edit", "shapes_frame", "--data.world.protected_frame", "false"],
         "--image-edit shapes_frame needs a world with a protected frame"),
        (["counterfactual", "--data.world.protected_attribute", "false",
          "--data.world.protected_frame=false"], "none of the 32 examples has a probed attribute"),
        (["counterfactual", "--split", "dev"], "--split 'dev': the data has splits ['shift', 'test', 'train', 'val']"),
        (["robustness", "--severities", "0", "3"], "--severities [0]: choose from 1..5"),
        (["robustness", "--image-corruptions", "fog"], "--image-corruptions ['fog']: known names are ["),
        (["robustness", "--text-perturbations", "leet"], "--text-perturbations ['leet']: known names are ["),
        (["robustness", "--shift-split", "later"], "--shift-split 'later': the data has splits"),
        (["robustness", "--n", "0"], "--n (0), --batch-size (64) and --n-boot (1000) must be >= 1"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code, _, stderr = _probe(capsys, run_dir, args[0], "--out", str(tmp_path / "never"), *args[1:])
    errors = [line for line in stderr.splitlines() if "error" in line]  # (a world generated first logs progress)
    assert code == 2 and len(errors) == 1 and errors[0].startswith("mmfuse: error: ") and message in errors[0], stderr
    assert not (tmp_path / "never").exists()


def test_malformed_lists_file_names_the_file_and_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    lists = tmp_path / "mine.json"
    lists.write_text('{\n  "hair": {\n    "values": {"blond": ["blond"], "dark": ["brunette"],}\n  }\n}\n')
    out = str(tmp_path / "never")
    code, _, stderr = _probe(capsys, run_dir, "counterfactual", "--out", out, "--lists", str(lists))
    assert code == 2 and f"lexicon file '{lists}' is not valid JSON: line 3 column" in stderr
    code, _, stderr = _probe(capsys, run_dir, "counterfactual", "--out", out, "--lists", str(tmp_path / "no.json"))
    assert code == 2 and "no.json': no such file" in stderr


def test_checkpoint_of_another_architecture_is_refused(
    run_dir: Path, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "robustness", "--config", MAIN, "--ckpt", str(run_dir / "checkpoints" / "last.ckpt"),
              "--out", str(tmp_path / "never"), f"--data.cache_dir={cache_dir}"])  # fmt: skip
    assert exit_info.value.code == 2 and "does not match the configured model" in capsys.readouterr().err
