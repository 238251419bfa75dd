"""``mmfuse.bench`` imports without Lightning and without ``datasets`` (the GPU machine has no ``datasets``)."""

from __future__ import annotations

import subprocess
import sys


def test_bench_imports_without_lightning_or_datasets() -> None:
    code = (
        "import sys, mmfuse.bench.suite, mmfuse.commands.bench; from mmfuse.bench import *;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'datasets')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
