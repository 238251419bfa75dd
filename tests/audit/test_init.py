"""The audit package and its commands import without Lightning and without their heavy optional parts."""

from __future__ import annotations

import subprocess
import sys


def test_audit_imports_without_lightning_sklearn_or_matplotlib() -> None:
    code = (
        "import sys, mmfuse.commands.audit, mmfuse.commands.baselines; from mmfuse.audit import *;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'sklearn', 'cleanlab',"
        " 'matplotlib')];"
        "print(sorted(bad)[:5]); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
