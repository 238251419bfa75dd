"""The whole benchmark on the tiny size: a well-formed results directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mmfuse.bench.report import load_results
from mmfuse.bench.suite import run_amp_benchmark
from mmfuse.commands.bench import fastest_precisions
from tests.bench.conftest import fast_config

CELL_FIELDS = {
    "size", "precision", "batch_size", "compile", "status", "reason", "step_s_median", "step_s_p10", "step_s_p90",
    "samples_per_s", "peak_memory_bytes", "memory_kind", "speedup_vs_32_true", "step_flops", "achieved_tflops",
    "peak_tflops", "peak_source", "mfu", "nonfinite_losses", "scaler_skipped_steps", "scaler_final_scale",
}  # fmt: skip
ENVIRONMENT_FIELDS = {
    "device_name", "device_type", "cuda", "cudnn", "versions", "git_commit", "git_dirty", "cpu_model", "cpu_flags",
    "threads",
}  # fmt: skip


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("amp")
    cfg = fast_config(precisions=("32-true", "bf16-mixed", "16-mixed"), parity_steps=2)
    run_amp_benchmark(cfg, out)
    return out


def test_results_directory_is_well_formed(results_dir: Path) -> None:
    raw = json.loads((results_dir / "amp.json").read_text())  # strict JSON: no NaN or Infinity literals
    results: dict[str, Any] = load_results(results_dir)
    assert raw == results and results["finished"] is True
    assert ENVIRONMENT_FIELDS <= set(results["environment"])
    assert results["environment"]["versions"]["torch"] and results["environment"]["threads"] == 1
    ok = [c for c in results["cells"] if c["status"] == "ok"]
    assert [c["precision"] for c in ok] == ["32-true", "bf16-mixed"]
    for cell in ok:
        assert CELL_FIELDS <= set(cell)
        assert cell["samples_per_s"] > 0 and cell["step_flops"] > 0 and cell["mfu"] > 0
        assert cell["speedup_vs_32_true"] > 0 and cell["peak_memory_bytes"] is not None
    assert results["sizes"]["tiny"]["params"] > 0 and results["sizes"]["tiny"]["step_gflop_per_sample"] > 0
    assert [p["precision"] for p in results["parity"]] == ["32-true", "bf16-mixed", "16-mixed"]
    assert results["overhead"] is None


def test_markdown_and_plot_are_written(results_dir: Path) -> None:
    md = (results_dir / "amp.md").read_text()
    assert "## tiny" in md and "| 32-true | 2 | ok |" in md and "## Loss parity with 32-true" in md
    assert "fp16 autocast on CPU is not a training precision" in md
    assert (results_dir / "amp_tiny.png").stat().st_size > 1000


def test_quick_names_the_fastest_precision_of_each_size(results_dir: Path) -> None:
    results = load_results(results_dir)
    ok = [c for c in results["cells"] if c["status"] == "ok"]
    best = min(ok, key=lambda c: c["step_s_median"])
    lines = fastest_precisions(results).splitlines()
    assert lines[0].startswith(f"fastest precision on {results['environment']['device_name']} (1 threads; units: ")
    assert lines[1].startswith(f"  tiny: {best['precision']} ({best['speedup_vs_32_true']:.2f}x of 32-true; ")
    assert len(lines) == 2 and all(c["precision"] in lines[1] for c in ok)
