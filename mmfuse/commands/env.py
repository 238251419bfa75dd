"""``mmfuse env``: what a bug report needs. The versions of mmfuse, python and the libraries it builds on (torch with
its CUDA and cuDNN builds), the GPUs or the CPU with the instruction sets that decide mixed-precision speed, torch's
thread settings, and which ``trainer.precision`` values this machine runs.

Examples::

    mmfuse env
    mmfuse env --format json > env.json

Versions and hardware come from :mod:`mmfuse.provenance` (what every run records in ``provenance.json``).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from mmfuse.provenance import hardware_info, package_versions
from mmfuse.tables import format_table

__all__ = [
    "CPU_FEATURES",
    "THREAD_VARIABLES",
    "add_arguments",
    "collect_env",
    "cpu_features",
    "format_env",
    "precisions",
    "run",
]

# Instruction sets shown for the CPU: name in the report -> /proc/cpuinfo flag (see hardware_info's cpu_flags).
CPU_FEATURES = {
    "AVX2": "avx2",
    "AVX512F": "avx512f",
    "AVX512-BF16": "avx512_bf16",
    "AMX-BF16": "amx_bf16",
    "AVX512-FP16": "avx512_fp16",
}
# CPU bf16 matmul units: without them bf16-mixed runs, but slower than 32-true; with them it can be faster.
_BF16_UNITS = ("AMX-BF16", "AVX512-BF16")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``mmfuse env``."""
    parser.add_argument("--format", choices=["md", "json"], default="md", help="Markdown tables or JSON (default md)")


def cpu_features(cpu_flags: list[str] | None) -> dict[str, bool | None]:
    """:data:`CPU_FEATURES` name -> whether the CPU has it; None each where the flags are unknown (not Linux)."""
    return {name: None if cpu_flags is None else flag in cpu_flags for name, flag in CPU_FEATURES.items()}


def precisions(hardware: dict[str, Any], is_cuda_bf16: bool) -> list[dict[str, Any]]:
    """Which ``trainer.precision`` values run here, on the GPU when there is one, else on the CPU.

    Args:
        hardware: :func:`~mmfuse.provenance.hardware_info`.
        is_cuda_bf16: ``torch.cuda.is_bf16_supported()`` (ignored without a GPU).

    Returns:
        One ``{"precision", "supported", "note"}`` per precision: ``32-true``, ``bf16-mixed``, ``16-mixed``.
    """
    if hardware["cuda"] is not None:
        bf16_note = "" if is_cuda_bf16 else "this GPU has no bf16 (compute capability 8.0 or newer has)"
        return [
            {"precision": "32-true", "supported": True, "note": ""},
            {"precision": "bf16-mixed", "supported": is_cuda_bf16, "note": bf16_note},
            {"precision": "16-mixed", "supported": True, "note": "fp16 autocast with gradient scaling"},
        ]
    features = cpu_features(hardware["cpu_flags"])
    units = [name for name in _BF16_UNITS if features[name]]
    if hardware["cpu_flags"] is None:
        has = "this CPU's instruction sets are unknown"
    else:
        has = f"this CPU has {' and '.join(units)}" if units else "this CPU has neither: expect it slower than 32-true"
    note = f"CPU: can beat 32-true only with AMX-BF16 or AVX512-BF16 (`mmfuse bench amp` measures it); {has}"
    return [
        {"precision": "32-true", "supported": True, "note": ""},
        {"precision": "bf16-mixed", "supported": True, "note": note},
        {"precision": "16-mixed", "supported": False, "note": "needs a CUDA GPU"},
    ]


def collect_env() -> dict[str, Any]:
    """Everything :func:`format_env` shows, JSON-able.

    Returns:
        ``packages`` (python and :data:`~mmfuse.provenance.PACKAGES` -> version, None when not installed),
        ``torch_build`` (``cuda``: torch's CUDA version, None for a CPU build; ``cudnn``: cuDNN version as torch
        reports it, None without), ``hardware`` (:func:`~mmfuse.provenance.hardware_info`), ``cpu_features``
        (:func:`cpu_features`), ``threads`` (torch's intra- and inter-op threads and :data:`THREAD_VARIABLES`, None
        when unset) and ``precisions`` (:func:`precisions`).
    """
    import torch

    hardware = hardware_info()
    is_cuda_bf16 = hardware["cuda"] is not None and torch.cuda.is_bf16_supported()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    threads: dict[str, Any] = {
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        **{name: os.environ.get(name) for name in THREAD_VARIABLES},
    }
    return {
        "packages": package_versions(),
        "torch_build": {"cuda": torch.version.cuda, "cudnn": cudnn},
        "hardware": hardware,
        "cpu_features": cpu_features(hardware["cpu_flags"]),
        "threads": threads,
        "precisions": precisions(hardware, is_cuda_bf16),
    }


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else "yes" if value else "no"


def format_env(env: dict[str, Any]) -> str:
    """:func:`collect_env` as Markdown: packages, hardware, threads and precisions, a table each."""
    build = env["torch_build"]
    torch_build = "CPU build" if build["cuda"] is None else f"CUDA {build['cuda']}, cuDNN {build['cudnn'] or 'none'}"
    packages = [
        [name, "not installed" if version is None else version + (f" ({torch_build})" if name == "torch" else "")]
        for name, version in env["packages"].items()
    ]
    hw = env["hardware"]
    machine = [["CPU", f"{hw['processor'] or 'unknown'} ({hw['cpu_count']} logical cores, {hw['machine']})"]]
    machine += [[name, _yes_no(has)] for name, has in env["cpu_features"].items()]
    if hw["cuda"] is None:
        machine.append(["GPU", "none visible to torch"])
    for i, device in enumerate([] if hw["cuda"] is None else hw["cuda"]["devices"]):
        memory = f"{device['memory_bytes'] / 2**30:.1f} GiB"
        machine.append([f"GPU {i}", f"{device['name']}, {memory}, compute capability {device['capability']}"])
    machine.append(["platform", hw["platform"]])
    threads = [[name, "not set" if value is None else str(value)] for name, value in env["threads"].items()]
    rows = [[p["precision"], "yes" if p["supported"] else "no", p["note"]] for p in env["precisions"]]
    return "\n\n".join(
        [
            "# mmfuse env",
            format_table(["package", "version"], packages, fmt="md"),
            format_table(["hardware", "this machine"], machine, fmt="md"),
            format_table(["threads", "setting"], threads, fmt="md"),
            format_table(["trainer.precision", "runs here", "note"], rows, fmt="md"),
        ]
    )


def run(args: argparse.Namespace) -> int:
    """Print the environment as Markdown or JSON."""
    env = collect_env()
    print(json.dumps(env, indent=2) if args.format == "json" else format_env(env))
    return 0
