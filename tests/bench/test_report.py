"""Results files: strict JSON, loading, and re-rendering from amp.json alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmfuse.bench.report import collect_environment, load_results, render_report, write_json
from mmfuse.errors import ConfigError


def test_write_json_turns_non_finite_floats_into_strings(tmp_path: Path) -> None:
    write_json(tmp_path, {"gaps": [math.inf, math.nan, 0.5], "nested": {"x": -math.inf}})
    data = json.loads((tmp_path / "amp.json").read_text())
    assert data == {"gaps": ["inf", "nan", 0.5], "nested": {"x": "-inf"}}


def test_load_results_of_a_directory_without_results(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="amp.json does not exist"):
        load_results(tmp_path)


def test_render_report_from_json_alone(tmp_path: Path) -> None:
    cell = {
        "size": "tiny", "precision": "32-true", "batch_size": 4, "compile": False, "status": "ok", "reason": None,
        "step_s_median": 0.01, "step_s_p10": 0.009, "step_s_p90": 0.012, "samples_per_s": 400.0,
        "speedup_vs_32_true": 1.0, "achieved_tflops": 0.02, "mfu": 0.1, "peak_memory_bytes": 2**20,
        "memory_kind": "cuda_max_allocated", "peak_source": "datasheet:A100", "warmup_s": 1.0,
        "nonfinite_losses": 0, "scaler_skipped_steps": None, "scaler_final_scale": None,
    }  # fmt: skip
    overhead = {
        "status": "ok", "size": "small", "batch_size": 32, "precision": "32-true", "device": "cpu", "ratio": 1.01,
        "ratio_bare": 1.0, "target": 1.02, "meets_target": True, "metric_update_s": 1e-4, "rounds": 3,
        "steps_per_block": 15, "warmup_steps": 3, "extra_s": {"lightning": 0.002, "lightning_bare": 0.0},
        "step_s": {"lightning": 0.202, "plain (lightning)": 0.2, "lightning_bare": 0.2, "plain (lightning_bare)": 0.2},
    }  # fmt: skip
    overhead["step_s"] |= {"accelerate": 0.204, "plain": 0.2}
    overhead |= {"ratio_accelerate": 1.02, "first_step_wall_s": {"lightning": 0.5, "plain": 0.25, "accelerate": 0.3}}
    overhead["extra_s"] |= {"accelerate": 0.004}
    results = {
        "environment": collect_environment(torch.device("cpu")),
        "settings": {"warmup": 3, "steps": 5, "repeats": 5, "cell_seconds": None},
        "sizes": {"tiny": {"description": "tiny", "params": 10, "step_gflop_per_sample": None}},
        "cells": [cell],
        "parity": [],
        "overhead": overhead,
        "finished": False,
    }
    write_json(tmp_path, results)
    written = render_report(tmp_path)
    md = (tmp_path / "amp.md").read_text()
    assert written[0].name == "amp.md" and (tmp_path / "amp_tiny.png").is_file()
    assert "| 32-true | 4 | ok | 10.0 (9.0–12.0) | 400.0 | 1.00x |" in md
    assert "lightning / plain = **1.010** (meets the target 1.02)" in md
    assert "| lightning | 202.00 | 200.00 | 2.00 | 1.010 |" in md
    assert "| accelerate | 204.00 | 200.00 | 4.00 | 1.020 |" in md
    assert "Time to the first step (wall): lightning 0.50 s, plain 0.25 s, accelerate 0.30 s." in md
