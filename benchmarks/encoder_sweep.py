"""The whole encoder contract sweep and the name-only swaps, counted: how many sampled models pass, and which do not.

    HF_HUB_OFFLINE=1 python benchmarks/encoder_sweep.py

Runs ``tests/test_contract_sweep.py``, ``tests/encoders/test_hf_text_towers.py``,
``tests/encoders/test_torchvision_vision.py`` and ``tests/test_name_swaps.py`` with every sweep case selected
(``-m "sweep or not sweep"``), reads pytest's JUnit XML, and writes the pass count per check with each failure or
skip and its reason to ``benchmarks/results/encoder_sweep.json`` and ``.md``, with the provenance of the run.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmfuse.provenance import collect_provenance
from mmfuse.tables import format_table

REPO = Path(__file__).resolve().parents[1]
FILES = (
    "tests/test_contract_sweep.py",
    "tests/encoders/test_hf_text_towers.py",
    "tests/encoders/test_torchvision_vision.py",
    "tests/test_name_swaps.py",
)


def run_pytest(files: tuple[str, ...]) -> tuple[ET.Element, float]:
    """The JUnit XML root of one pytest run over ``files`` with the whole sweep selected, and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "sweep or not sweep", f"--junitxml={xml}", *files]
        subprocess.run(cmd, cwd=REPO, check=False)
        return ET.parse(xml).getroot(), time.perf_counter() - start


def summarise(root: ET.Element) -> dict[str, Any]:
    """Per test function: passed / failed / skipped counts, with the case id and the first line of each reason."""
    checks: dict[str, dict[str, Any]] = defaultdict(lambda: {"passed": 0, "failed": [], "skipped": []})
    for case in root.iter("testcase"):
        match = re.match(r"(\w+)(?:\[(.*)\])?$", case.get("name", ""))
        function, param = (match.group(1), match.group(2) or "") if match else (case.get("name", ""), "")
        key = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{function}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            checks[key]["passed"] += 1
            continue
        reason = (outcome.get("message") or "").strip().splitlines()
        entry = {"case": param, "reason": reason[0][:300] if reason else ""}
        checks[key]["skipped" if outcome.tag == "skipped" else "failed"].append(entry)
    return dict(checks)


def to_markdown(results: dict[str, Any]) -> str:
    prov = results["provenance"]
    lines = [
        "# Encoder contract sweep",
        "",
        f"`{results['command']}` — commit {prov['git'].get('commit', '?')[:10]}"
        f"{' (dirty)' if prov['git'].get('dirty') else ''}, {prov['hardware']['processor']} "
        f"({prov['hardware']['cpu_count']} cores; flags {prov['hardware'].get('cpu_flags')}), "
        f"{results['wall_s']:.0f} s.",
        "",
        format_table(
            ["check", "passed", "failed", "skipped"],
            [
                [f"`{name}`", check["passed"], len(check["failed"]), len(check["skipped"])]
                for name, check in sorted(results["checks"].items())
            ],
            "md",
        ),
    ]
    for kind in ("failed", "skipped"):
        rows = [(name, e) for name, check in sorted(results["checks"].items()) for e in check[kind]]
        if rows:
            lines += ["", f"## {kind.capitalize()}", ""]
            lines += [f"- `{name}[{e['case']}]`: {e['reason']}" for name, e in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    root, wall = run_pytest(FILES)
    results = {
        "command": "HF_HUB_OFFLINE=1 python benchmarks/encoder_sweep.py",
        "files": list(FILES),
        "wall_s": wall,
        "checks": summarise(root),
        "provenance": collect_provenance(repo_dir=REPO, seed=0),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder_sweep.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "encoder_sweep.md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    main()
