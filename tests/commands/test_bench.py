"""``mmfuse bench amp`` through the console entry point: a tiny CPU run, and bad values as one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfuse.cli import main

FAST = ["--steps", "1", "--repeats", "1", "--warmup", "1", "--threads", "1", "--device", "cpu", "--no-plots"]


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "amp", *args])
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_tiny_run_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "amp"
    args = ["--size", "tiny", "--precision", "32-true", "16-mixed", "--batch-size", "2", "--parity-steps", "0"]
    code, stdout, _ = _run(capsys, *args, *FAST, "--out", str(out))
    assert code == 0 and "| 32-true | 2 | ok |" in stdout and "results:" in stdout
    cells = json.loads((out / "amp.json").read_text())["cells"]
    assert [(c["precision"], c["status"]) for c in cells] == [("32-true", "ok"), ("16-mixed", "skipped")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "huge"], "unknown model size 'huge'"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--batch-size", "0"], "batch size must be >= 1, got 0"),
        (["--compile-precision", "bf16-mixed"], "--compile-precision needs --compile"),
    ],
)
def test_bad_values_end_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code, _, stderr = _run(capsys, *args, "--out", str(tmp_path / "never"))
    assert code == 2 and stderr.startswith("mmfuse: error: ") and message in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()
