"""Atomic checkpoint writes, weights-only loading, RNG state, and the checks that run before training."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.training import (
    AtomicCheckpointIO,
    FusionLitModule,
    RngState,
    UnsafeCheckpointError,
    check_checkpoint_matches,
    check_output_dir,
    safe_load,
)
from mmfuse.training.checkpointing import _capture_rng, _restore_rng
from tests.conftest import REPO, TINY_CLI_ARGS

MAIN = str(REPO / "experiments" / "shapes_color.yaml")


def test_killed_while_saving_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    path, marker = tmp_path / "last.ckpt", tmp_path / "writing"
    script = textwrap.dedent(f"""
        import pathlib, time, torch
        from mmfuse.training import AtomicCheckpointIO
        io = AtomicCheckpointIO()
        io.save_checkpoint({{"step": 1, "w": torch.arange(1000)}}, {str(path)!r})
        real_save = torch.save
        def stalled_save(obj, fh):  # half a checkpoint on disk, then the process hangs until killed
            fh.write(b"PK\\x03\\x04" + b"x" * 4096)
            fh.flush()
            pathlib.Path({str(marker)!r}).touch()
            time.sleep(600)
        torch.save = stalled_save
        io.save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the writer never reached the second save"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = safe_load(path)
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.arange(1000))
    assert [p.name for p in tmp_path.glob(".last.ckpt.*.tmp")], "the half-written file is a temporary, not the target"


def test_atomic_io_round_trip_and_no_leftovers(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    io.save_checkpoint({"a": torch.ones(3)}, tmp_path / "sub" / "x.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "sub" / "x.ckpt")["a"], torch.ones(3))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.ckpt"]


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on the marker: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "payload": _RunsCode(marker)}, path)
    return path, marker


def test_a_checkpoint_that_would_run_code_is_refused(
    evil_checkpoint: tuple[Path, Path], tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    path, marker = evil_checkpoint
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        safe_load(path)
    with pytest.raises(UnsafeCheckpointError):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        FusionLitModule.load_from_checkpoint(path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", MAIN, *TINY_CLI_ARGS, f"--trainer.default_root_dir={tmp_path / 'runs'}",
              f"--data.cache_dir={cache_dir}", f"--ckpt_path={path}"])  # fmt: skip
    assert exit_info.value.code == 2 and "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = _capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    _restore_rng(safe_load(tmp_path / "rng.pt"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_rng_callback_refuses_another_world_size() -> None:
    callback = RngState()
    callback.load_state_dict({"ranks": [_capture_rng(), _capture_rng()]})
    trainer = namedtuple("T", "world_size global_rank")(1, 0)
    with pytest.raises(ConfigError, match="2 processes"):
        callback.on_train_start(trainer, None)  # type: ignore[arg-type]


def test_resuming_a_checkpoint_of_another_architecture_fails_before_training(
    tiny_run: Path, tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = tiny_run / "checkpoints" / "last.ckpt"  # shared: only read, the refused fit writes under tmp_path
    hparams = dict(safe_load(ckpt)["hyper_parameters"])
    check_checkpoint_matches(ckpt, hparams)  # its own config matches
    weighted = {**hparams, "contrastive": {**dict(hparams.get("contrastive") or {}), "itm_weight": 0.25}}
    check_checkpoint_matches(ckpt, weighted)  # a loss weight shapes no weight: any value fits the checkpoint
    changed = {**hparams, "fusion": {**hparams["fusion"], "num_heads": 8}}
    with pytest.raises(ConfigError, match=r"model.fusion.num_heads: checkpoint 4, config 8"):
        check_checkpoint_matches(ckpt, changed)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", MAIN, *TINY_CLI_ARGS, f"--trainer.default_root_dir={tmp_path / 'b'}",
              f"--data.cache_dir={cache_dir}", f"--ckpt_path={ckpt}", "--model.fusion.num_layers=1"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "model.fusion.num_layers: checkpoint 2, config 1" in err
    assert not list((tmp_path / "b").glob("version_*/checkpoints/*.ckpt"))


def test_unwritable_or_full_output_directory_fails_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write checkpoints"):
        check_output_dir(blocker / "checkpoints", checkpoint_bytes=10, copies=1)
    check_output_dir(tmp_path / "ok", checkpoint_bytes=10, copies=1)
    assert list((tmp_path / "ok").iterdir()) == []  # the probe is cleaned up
    usage = namedtuple("usage", "total used free")(10**9, 10**9 - 10**6, 10**6)
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage)
    with pytest.raises(ConfigError, match="not enough disk space"):
        check_output_dir(tmp_path / "ok", checkpoint_bytes=10**6, copies=2)


def test_cli_reports_a_full_disk_before_the_first_step(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    usage = namedtuple("usage", "total used free")(10**9, 10**9 - 1000, 1000)
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", MAIN, *TINY_CLI_ARGS, f"--trainer.default_root_dir={tmp_path}",
              f"--data.cache_dir={cache_dir}"])  # fmt: skip
    assert exit_info.value.code == 2 and "not enough disk space" in capsys.readouterr().err
    assert not (tmp_path / "version_0" / "metrics.csv").exists()


def test_a_checkpoint_written_before_task_and_contrastive_existed_loads_and_matches(tmp_path: Path) -> None:
    # Older checkpoints: optim and speed beside the model's fields in hyper_parameters (as now), no task or
    # contrastive (fields added later): loading builds their defaults, and the architecture check compares them so.
    import lightning as L

    from tests.conftest import TINY_SPEC, TINY_TEXT, TINY_VISION

    module = FusionLitModule(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], data_spec=TINY_SPEC)
    hparams = {key: value for key, value in dict(module.hparams).items() if key not in ("task", "contrastive")}
    assert {"optim", "speed"} <= set(hparams)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": L.__version__}, path)  # fmt: skip
    loaded = FusionLitModule.load_from_checkpoint(path)
    assert loaded.model_cfg == module.model_cfg and loaded.optim == module.optim
    check_checkpoint_matches(path, dict(module.hparams))
    with pytest.raises(ConfigError, match=r"model.task: checkpoint 'classification', config 'retrieval'"):
        check_checkpoint_matches(path, {**dict(module.hparams), "task": "retrieval"})
