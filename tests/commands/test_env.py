"""``mmfuse env`` through the console entry point, and its precision verdicts on fabricated hardware."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mmfuse.cli import main
from mmfuse.commands.env import CPU_FEATURES, THREAD_VARIABLES, collect_env, format_env, precisions
from mmfuse.provenance import PACKAGES


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """``mmfuse env ARGS`` -> (exit status, stdout)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["env", *args])
    return int(exit_info.value.code or 0), capsys.readouterr().out


def _hardware(cpu_flags: list[str] | None = None, cuda: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"cpu_flags": cpu_flags, "cuda": cuda}


def test_markdown_names_versions_hardware_threads_and_precisions(capsys: pytest.CaptureFixture) -> None:
    code, out = _run(capsys)
    assert code == 0 and out.startswith("# mmfuse env")
    for name in ["python", *PACKAGES]:
        assert f"| {name} | " in out
    for name in [*CPU_FEATURES, *THREAD_VARIABLES, "torch_num_threads", "torch_num_interop_threads", "CPU"]:
        assert f"| {name} | " in out
    assert "| 32-true | yes |" in out and "| bf16-mixed |" in out and "| 16-mixed |" in out


def test_json_holds_the_same_facts(capsys: pytest.CaptureFixture) -> None:
    code, out = _run(capsys, "--format", "json")
    env = json.loads(out)
    assert code == 0 and set(env["packages"]) == {"python", *PACKAGES}
    assert env["threads"]["torch_num_threads"] >= 1 and set(env["cpu_features"]) == set(CPU_FEATURES)
    assert [p["precision"] for p in env["precisions"]] == ["32-true", "bf16-mixed", "16-mixed"]


def test_missing_package_unknown_flags_and_gpus_are_shown() -> None:
    env = collect_env()
    env["packages"]["datasets"] = None
    env["cpu_features"] = dict.fromkeys(CPU_FEATURES)
    env["torch_build"] = {"cuda": "12.4", "cudnn": 90100}
    device = {"name": "NVIDIA H200", "capability": "9.0", "memory_bytes": 150 * 2**30}
    env["hardware"]["cuda"] = {"version": "12.4", "devices": [device]}
    out = format_env(env)
    assert "| datasets | not installed |" in out and "| AVX2 | unknown |" in out
    assert "(CUDA 12.4, cuDNN 90100)" in out and "| GPU 0 | NVIDIA H200, 150.0 GiB, compute capability 9.0 |" in out


def test_cpu_runs_bf16_mixed_but_not_16_mixed() -> None:
    plain = {p["precision"]: p for p in precisions(_hardware(["avx2", "avx512f"]), is_cuda_bf16=False)}
    assert [p["supported"] for p in plain.values()] == [True, True, False]
    assert "neither" in plain["bf16-mixed"]["note"] and "CUDA" in plain["16-mixed"]["note"]
    amx = {p["precision"]: p for p in precisions(_hardware(["avx2", "amx_bf16"]), is_cuda_bf16=False)}
    assert "this CPU has AMX-BF16" in amx["bf16-mixed"]["note"]


@pytest.mark.parametrize("is_cuda_bf16", [True, False])
def test_gpu_runs_16_mixed_and_bf16_where_supported(is_cuda_bf16: bool) -> None:
    cuda = {"version": "12.4", "devices": [{"name": "GPU", "capability": "7.0", "memory_bytes": 2**34}]}
    supported = {p["precision"]: p["supported"] for p in precisions(_hardware([], cuda), is_cuda_bf16)}
    assert supported == {"32-true": True, "bf16-mixed": is_cuda_bf16, "16-mixed": True}
