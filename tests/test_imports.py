"""Only training/, data/datamodule.py and cli.py may import Lightning."""

from __future__ import annotations

import subprocess
import sys


def test_pure_modules_import_without_lightning() -> None:
    code = (
        "from mmfuse import *;"
        "import sys, mmfuse.models, mmfuse.data, mmfuse.encoders, mmfuse.fusion, mmfuse.heads, mmfuse.layers,"
        " mmfuse.data.loader, mmfuse.hub, mmfuse.export, mmfuse.provenance, mmfuse.runs, mmfuse.commands.runs,"
        " mmfuse.commands.export;"
        "bad = [m for m in sys.modules if m == 'lightning' or m.startswith(('lightning.', 'pytorch_lightning'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
