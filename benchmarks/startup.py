"""Start-up time of the ``mmfuse`` command line, each command timed as a whole process (median of 5 runs).

    HF_HUB_OFFLINE=1 python benchmarks/startup.py --ref <commit> --label before   # the package as of a commit
    HF_HUB_OFFLINE=1 python benchmarks/startup.py --label after                   # the working tree

The commands, the process code and the import report are those of ``tests/test_startup.py`` (one home): ``mmfuse
--help``, ``mmfuse runs list`` and ``mmfuse runs compare`` on two fabricated runs, ``mmfuse <tool> --help`` for every
tool command, plus ``mmfuse env`` where it exists. Each process runs the console script's entry point with this
interpreter; with ``--ref`` the ``mmfuse`` package comes from ``git archive <ref>`` unpacked into a temporary
directory (the processes' working directory, so first on ``sys.path``), with the same installed libraries. A run
updates its ``--label`` entry of ``benchmarks/results/startup.json`` and rewrites ``startup.md`` from all entries.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmfuse.provenance import collect_provenance  # noqa: E402
from mmfuse.tables import format_table  # noqa: E402
from tests.test_startup import entry_code, imported_heavy, startup_commands  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def _export(ref: str, dest: Path) -> None:
    """The files of ``ref`` under ``dest`` (``git archive``: the commit alone, whatever the working tree holds)."""
    archive = dest / "source.tar"
    with open(archive, "wb") as file:
        subprocess.run(["git", "archive", ref], cwd=REPO, stdout=file, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def _tools(source: Path, env: dict[str, str]) -> list[str]:
    """The tool commands of the ``mmfuse`` package under ``source``."""
    code = "from mmfuse.commands import COMMANDS; print(*COMMANDS)"
    out = subprocess.run([sys.executable, "-c", code], cwd=source, env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def time_command(args: list[str], source: Path, env: dict[str, str], repeats: int) -> dict[str, Any]:
    """Run ``mmfuse args`` once to warm the file cache, then ``repeats`` timed times.

    Returns:
        ``median_s``, ``runs_s`` (each run's wall time), ``exit_status`` and ``imported`` (the heavy modules the
        process imported, see ``tests/test_startup.py``).
    """
    cmd = [sys.executable, "-c", entry_code(), *args]
    times: list[float] = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=source, env=env, capture_output=True, text=True, timeout=600)
        if i > 0:
            times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "runs_s": times,
        "exit_status": result.returncode,
        "imported": imported_heavy(result.stderr),
    }


def measure(ref: str | None, repeats: int) -> dict[str, Any]:
    """Time every start-up command of the package at ``ref`` (None = the working tree)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory(prefix="mmfuse-startup-") as tmp:
        source = REPO
        if ref is not None:
            source = Path(tmp) / "source"
            source.mkdir()
            _export(ref, source)
        tools = _tools(source, env)
        commands = startup_commands(Path(tmp) / "runs", tools)
        if "env" in tools:
            commands["mmfuse env"] = ["env"]
        load = os.getloadavg()
        timings = {}
        for name, args in commands.items():
            timings[name] = time_command(args, source, env, repeats)
            print(f"{name:<28} {timings[name]['median_s']:6.2f} s  imports {' '.join(timings[name]['imported'])}")
    return {
        "ref": ref or "working tree",
        "commit": _git("rev-parse", ref or "HEAD"),
        "dirty": None if ref is not None else bool(_git("status", "--porcelain")),
        "repeats": repeats,
        "load_average_1m_at_start": load[0],
        "pythondontwritebytecode": env.get("PYTHONDONTWRITEBYTECODE"),  # set: every process compiles mmfuse anew
        "commands": timings,
        "provenance": collect_provenance(repo_dir=REPO),
    }


def _markdown(results: dict[str, Any]) -> str:
    labels = list(results["measurements"])
    entries = results["measurements"]
    names = list(dict.fromkeys(name for label in labels for name in entries[label]["commands"]))
    hw = entries[labels[-1]]["provenance"]["hardware"]
    lines = [
        "# Start-up time of the `mmfuse` command line",
        "",
        f"`{results['command']}`: each command as a whole process (`python -c` running the console script's entry "
        f"point), median of {entries[labels[-1]]['repeats']} runs after one warm-up run, on {hw['processor']} "
        f"x{hw['cpu_count']} (flags {hw.get('cpu_flags')}), shared with other jobs; PYTHONDONTWRITEBYTECODE="
        f"{entries[labels[-1]].get('pythondontwritebytecode')} (each process compiles the mmfuse sources it imports).",
        "",
    ]
    for label in labels:
        entry = entries[label]
        source = "the working tree" if entry["dirty"] is not None else "`git archive` of the commit"
        dirty = " (dirty)" if entry["dirty"] else ""
        lines.append(
            f"- {label}: {source}, commit {entry['commit'][:10]}{dirty}, {entry['provenance']['created'][:19]} UTC, "
            f"1-minute load average {entry['load_average_1m_at_start']:.2f} at the start"
        )
    compared = "before" in entries and "after" in entries
    headers = ["command", *(f"{label} {column}" for label in labels for column in ("median s", "imports"))]
    headers += ["speed-up"] if compared else []
    rows = []
    for name in names:
        cells = [f"`{name}`"]
        if compared and name in entries["before"]["commands"] and name in entries["after"]["commands"]:
            ratio = entries["before"]["commands"][name]["median_s"] / entries["after"]["commands"][name]["median_s"]
        else:
            ratio = None
        for label in labels:
            timing = entries[label]["commands"].get(name)
            if timing is None:
                cells += ["-", "-"]
            else:
                status = "" if timing["exit_status"] == 0 else f" (exit {timing['exit_status']})"
                cells += [f"{timing['median_s']:.2f}{status}", ", ".join(timing["imported"]) or "none"]
        if compared:
            cells.append("-" if ratio is None else f"{ratio:.0f}x")
        rows.append(cells)
    lines += ["", format_table(headers, rows, "md", "l" + "rl" * len(labels) + "r" * compared)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", default=None, help="time the package as of this commit (default: the working tree)")
    parser.add_argument("--label", default="after", help="entry of the results this run writes (default: after)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command (default 5)")
    args = parser.parse_args()
    path = RESULTS / "startup.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["command"] = "HF_HUB_OFFLINE=1 python benchmarks/startup.py [--ref <commit> --label before]"
    results.setdefault("measurements", {})[args.label] = measure(args.ref, args.repeats)
    path.write_text(json.dumps(results, indent=2) + "\n")
    text = _markdown(results)
    (RESULTS / "startup.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
