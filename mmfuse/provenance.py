"""Where a run came from: the git state, library versions, hardware, seed and data fingerprint, written next to
the run as ``provenance.json`` (plus ``git.diff`` when the working tree had uncommitted changes).

Everything here is plain Python and ``git`` subprocesses (torch is imported only to describe the hardware, so
``mmfuse runs`` reads run directories without it); the Lightning callback that calls it on rank 0 lives in
:mod:`mmfuse.training.provenance`.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from mmfuse.errors import ConfigError
from mmfuse.io import read_json, write_atomic, write_json

__all__ = ["DIFF_FILE", "PACKAGES", "PROVENANCE_FILE", "collect_provenance", "write_provenance"]

PROVENANCE_FILE = "provenance.json"
DIFF_FILE = "git.diff"
# Distributions whose versions decide what a run computes (python's own version is added separately).
PACKAGES = (
    "mmfuse", "torch", "torchvision", "timm", "transformers", "tokenizers", "lightning", "torchmetrics", "datasets",
    "numpy", "safetensors",
)  # fmt: skip
_GIT_TIMEOUT_S = 30


def collect_provenance(
    *,
    repo_dir: str | Path | None = None,
    seed: int | None = None,
    data_fingerprint: str | None = None,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A JSON-able record of where a run comes from; never raises for a missing git or a non-git directory.

    Args:
        repo_dir: a directory inside the source checkout; None = the current working directory.
        seed: the global seed of the run.
        data_fingerprint: a digest of the data the run sees (e.g. ``ShapesDataModule.fingerprint()``).
        argv: the command line; None = ``sys.argv``.

    Returns:
        ``created`` (UTC ISO time), ``argv``, ``git`` (``commit``, ``branch``, ``dirty``, ``tags``, ``untracked``,
        ``root``; or only ``error``), ``packages`` (name -> version or None), ``hardware``, ``seed`` and
        ``data_fingerprint``.
    """
    return {
        "created": datetime.now(timezone.utc).isoformat(),
        "argv": list(sys.argv if argv is None else argv),
        "git": git_state(Path.cwd() if repo_dir is None else Path(repo_dir)),
        "packages": package_versions(),
        "hardware": hardware_info(),
        "seed": seed,
        "data_fingerprint": data_fingerprint,
    }


def _git(repo_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``repo_dir`` without taking optional locks (another git may be running there)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    return subprocess.run(
        ["git", *args], cwd=repo_dir, env=env, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False
    )


def git_state(repo_dir: Path) -> dict[str, Any]:
    """The checkout holding ``repo_dir``: ``commit``, ``branch`` (None when detached), ``dirty`` (tracked changes or
    untracked, non-ignored files), ``tags`` pointing at HEAD, ``untracked`` files and the ``root`` directory; or
    ``{"error": why}`` when git is missing, ``repo_dir`` is not in a repository or it has no commit yet."""
    try:
        top = _git(repo_dir, "rev-parse", "--show-toplevel")
        if top.returncode != 0:
            return {"error": f"not a git repository: {repo_dir} ({top.stderr.strip()})"}
        root = Path(top.stdout.strip())
        head = _git(root, "rev-parse", "--verify", "HEAD")
        if head.returncode != 0:
            return {"error": f"git repository {root} has no commit yet"}
        branch = _git(root, "symbolic-ref", "--short", "-q", "HEAD").stdout.strip()
        tags = _git(root, "tag", "--points-at", "HEAD").stdout.split()
        status = _git(root, "status", "--porcelain", "--untracked-files=all").stdout
        untracked = _git(root, "ls-files", "--others", "--exclude-standard").stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired) as err:  # git not installed, or hanging on a network filesystem
        return {"error": f"git unavailable: {err}"}
    return {
        "commit": head.stdout.strip(),
        "branch": branch or None,
        "dirty": bool(status.strip()),
        "tags": tags,
        "untracked": untracked,
        "root": str(root),
    }


def package_versions() -> dict[str, str | None]:
    """``python`` plus every distribution in :data:`PACKAGES` -> installed version, None when not installed."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str | None:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else whatever ``platform.processor()`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith(("model name", "Model", "cpu model")) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


# Instruction sets that decide what mixed precision buys on a CPU (bf16/fp16 units), as /proc/cpuinfo names them.
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16", "amx_tile")


def _cpu_flags() -> list[str] | None:
    """Which of the precision-relevant instruction sets the CPU reports (Linux ``/proc/cpuinfo``); None elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags") and ":" in line:
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in _CPU_FLAGS if flag in present]
    return None


def _total_ram_bytes() -> int | None:
    """Physical memory in bytes where the OS reports it."""
    names = getattr(os, "sysconf_names", {})
    if "SC_PAGE_SIZE" in names and "SC_PHYS_PAGES" in names:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return None


def hardware_info() -> dict[str, Any]:
    """``platform``, ``machine``, ``processor``, ``cpu_flags`` (AVX2, AVX512/AMX bf16 and fp16 units present),
    ``cpu_count`` (logical), ``ram_bytes``, ``torch_num_threads``, and ``cuda``: None without a usable GPU, else
    ``version`` (torch's CUDA build) and ``devices`` (name, capability, memory_bytes)."""
    import torch

    cuda: dict[str, Any] | None = None
    if torch.cuda.is_available():
        devices = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            capability = f"{props.major}.{props.minor}"
            devices.append({"name": props.name, "capability": capability, "memory_bytes": props.total_memory})
        cuda = {"version": torch.version.cuda, "devices": devices}
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": _total_ram_bytes(),
        "torch_num_threads": torch.get_num_threads(),
        "cuda": cuda,
    }


def _diff_text(git: dict[str, Any]) -> str:
    """``git diff HEAD --binary`` of the checkout in ``git["root"]``, under a header listing untracked files."""
    diff = _git(Path(git["root"]), "diff", "HEAD", "--binary")
    if diff.returncode != 0:
        raise RuntimeError(f"git diff HEAD failed in {git['root']}: {diff.stderr.strip()}")
    header = [f"# git diff HEAD --binary at {git['commit']} in {git['root']}"]
    if git["untracked"]:
        header.append("# untracked files (not in the diff below):")
        header += [f"#   {name}" for name in git["untracked"]]
    return "\n".join(header) + "\n" + diff.stdout


def _read_record(path: Path) -> dict[str, Any]:
    try:
        return read_json(path, "provenance record")
    except ConfigError as err:
        raise ConfigError(f"{err}; move it away to record a new provenance") from err


def write_provenance(run_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write ``info`` (from :func:`collect_provenance`) to ``run_dir/provenance.json``, atomically.

    A run resumed into the same directory keeps the first record and appends ``info`` to its ``resumed`` list.
    When the tree was dirty, the diff goes to ``git.diff`` (``git.resumed-<n>.diff`` for the n-th resumed record)
    and the record names that file under ``git.diff_file``.

    Returns:
        The path of ``provenance.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / PROVENANCE_FILE
    previous = _read_record(path) if path.is_file() else None
    resumed: list[Any] = [] if previous is None else list(previous.get("resumed", []))
    info = {**info, "git": dict(info.get("git", {}))}  # the caller's dict stays as it was
    if info["git"].get("dirty"):
        diff_name = DIFF_FILE if previous is None else f"git.resumed-{len(resumed) + 1}.diff"
        write_atomic(run_dir / diff_name, _diff_text(info["git"]))
        info["git"]["diff_file"] = diff_name
    record = info if previous is None else {**previous, "resumed": [*resumed, info]}
    write_json(path, record)
    return path
