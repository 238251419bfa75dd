"""One tiny ``mmfuse fit`` through the command line, shared by the tests of what a fit leaves behind."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmfuse.cli import main
from tests.conftest import REPO, TINY_CLI_ARGS


@dataclass(frozen=True)
class TinyFit:
    """A fitted tiny run, and a ``validate`` of its best checkpoint run afterwards under the same root.

    Attributes:
        run: the fit's run directory (``<root>/version_0``).
        out: what the fit printed.
        validate_run: the validate's run directory (``<root>/version_1``).
        validate_out: what the validate printed.
    """

    run: Path
    out: str
    validate_run: Path
    validate_out: str


def _main(args: list[str]) -> str:
    """``mmfuse ARGS`` -> what it printed."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        main(args)
    return out.getvalue()


@pytest.fixture(scope="session")
def tiny_fit(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> TinyFit:
    """Two epochs of six steps, each step logged and each epoch validated, then ``validate`` on the best checkpoint."""
    root = tmp_path_factory.mktemp("runs")
    tiny = [arg for arg in TINY_CLI_ARGS if not arg.startswith("--baselines.")]  # with the ladder, as a plain fit
    common = ["--config", str(REPO / "experiments" / "shapes_color.yaml"), *tiny,
              f"--trainer.default_root_dir={root}", f"--data.cache_dir={cache_dir}"]  # fmt: skip
    out = _main(["fit", *common, "--trainer.max_steps=12", "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1"])
    (best,) = [p for p in (root / "version_0" / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    validate_out = _main(["validate", *common, f"--ckpt_path={best}"])
    return TinyFit(root / "version_0", out, root / "version_1", validate_out)
