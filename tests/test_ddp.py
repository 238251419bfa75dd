"""Two DDP processes on CPU (gloo) through the same command line, in a subprocess (in-process DDP is unreliable)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, TINY_CLI_ARGS


def test_two_process_ddp_fit(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(REPO / "experiments" / "shapes_color.yaml"),
        *TINY_CLI_ARGS, "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path / 'run'}", f"--data.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mmfuse fit summary" in result.stdout
    assert "world_size" not in result.stderr.lower() or "2" in result.stderr
    assert (tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    runs = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert runs == ["version_0"], f"a rank made a run directory of its own: {runs}"
    # Quiet: no library warnings or advertisements, and each of Lightning's lines printed once.
    output = result.stdout + result.stderr
    for noise in ("Grad strides do not match", "sync_dist=True", "LeafSpec", "💡", "Warning:"):
        assert noise not in output, f"{noise!r} printed:\n{output[-3000:]}"
    assert output.count("GPU available:") == 1
