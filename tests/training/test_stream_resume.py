"""Streaming through the command line: ``mmfuse fit`` on WebDataset shards and on a Parquet directory, and a run
under 2 DDP processes x 2 loader workers killed mid-epoch and resumed with ``--ckpt_path last``, which sees every
row of every epoch exactly once (none dropped, none repeated) and ends with the weights of an uninterrupted run, bit
for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml

from mmfuse.cli import main
from mmfuse.data.collate import image_id_hash
from mmfuse.data.shapes import answer_vocabulary
from mmfuse.experiment import read_experiment
from mmfuse.training import safe_load
from tests.conftest import REPO, STREAM_PAIRS, TINY_CLI_ARGS, TINY_WORLD
from tests.training.pause import pause_args

RECORD = "tests.training.test_stream_resume.RecordBatches"
_REPLACED = ("--data.", "--trainer.max_steps", "--trainer.devices", "--trainer.strategy")
# 64 rows, 2 ranks x 4 per batch: 8 steps per epoch, 2 epochs; last.ckpt every 3 steps (mid-epoch too).
ARGS = [
    *[a for a in TINY_CLI_ARGS if not a.startswith(_REPLACED)],
    "--trainer.max_epochs=2",
    "--trainer.deterministic=true",
    "--last_checkpoint.every_n_train_steps=3",
]  # fmt: skip
DDP = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"]


class RecordBatches(L.Callback):
    """Appends ``{"epoch", "step", "rank", "ids"}`` of every finished training step to ``<path>.<rank>.jsonl``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        line = {"epoch": trainer.current_epoch, "step": trainer.global_step, "rank": trainer.global_rank,
                "ids": batch.image_ids.tolist()}  # fmt: skip
        with open(f"{self.path}.{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def _experiment(tmp_path: Path, source: dict[str, Any], num_workers: int) -> Path:
    experiment, _ = read_experiment(REPO / "experiments" / "base" / "shapes.yaml")
    experiment["data"] = {
        "class_path": "StreamingDataModule",
        "init_args": {
            "sources": [source], "val_sources": [source], "class_names": list(answer_vocabulary(TINY_WORLD)),
            "image_size": TINY_WORLD.image_size, "batch_size": 4, "num_workers": num_workers, "buffer_size": 8,
        },
    }  # fmt: skip
    path = tmp_path / f"stream-{source['format']}.yaml"
    path.write_text(yaml.safe_dump(experiment))
    return path


def _fit(config: Path, root: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    """``mmfuse fit`` in a new process group (so that killing it takes its DDP rank and workers along)."""
    cmd = [sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(config), *ARGS, *extra,
           f"--trainer.default_root_dir={root}", f"--data.cache_dir={cache_dir}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    return out


def _records(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for rank in (0, 1) for line in Path(f"{path}.{rank}.jsonl").read_text().splitlines()]
    return sorted(lines, key=lambda r: (r["step"], r["rank"]))


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_streaming_fit_through_the_cli(tmp_path: Path, cache_dir: Path, stream_shards: Path, stream_parquet: Path,
                                       fmt: str, capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    source = {"format": "parquet", "path": str(stream_parquet)}
    if fmt == "webdataset":
        source = {"format": "webdataset", "path": str(stream_shards / "{000000..000003}.tar"),
                  "columns": {"label": "json.label"}}  # fmt: skip
    config = _experiment(tmp_path, source, num_workers=0)
    one = [
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=2",
        "--last_checkpoint.every_n_train_steps=4",
    ]
    out = _finish(_fit(config, tmp_path / "run", cache_dir, *one))
    assert "next steps" not in out  # the tools index rows; they refuse streamed data (below)
    run = tmp_path / "run" / "version_0"
    assert safe_load(run / "checkpoints" / "last.ckpt")["global_step"] == STREAM_PAIRS // 4  # one process: 16 steps
    counts = json.loads((run / "data_sources.json").read_text())
    assert counts["rows_per_epoch_by_source"] == {Path(source["path"]).parent.name if fmt == "webdataset"
                                                  else Path(source["path"]).name: STREAM_PAIRS}  # fmt: skip
    if fmt == "parquet":
        with pytest.raises(SystemExit) as exit_info:
            main(["audit", "--config", str(run / "config.yaml"), "--ckpt", str(run / "checkpoints" / "last.ckpt"),
                  "--out", str(tmp_path / "audit")])  # fmt: skip
        assert exit_info.value.code == 2
        assert "its data is streamed (StreamingDataModule)" in capsys.readouterr().err


def test_stream_killed_mid_epoch_under_ddp_resumes_every_row_exactly_once(
    tmp_path: Path, cache_dir: Path, stream_shards: Path
) -> None:
    source = {"format": "webdataset", "path": str(stream_shards), "columns": {"label": "json.label"}}
    config = _experiment(tmp_path, source, num_workers=2)
    record = ["--trainer.callbacks+=" + RECORD]
    reference = _fit(config, tmp_path / "reference", cache_dir, *DDP, *record,
                     f"--trainer.callbacks.path={tmp_path / 'reference-ids'}")  # fmt: skip

    # Freeze at the start of step 11 (epoch 1, batch 2 of 8): last.ckpt is from step 9 (epoch 1, 1 batch done).
    marker, run = tmp_path / "paused", tmp_path / "interrupted"
    interrupted = _fit(config, run, cache_dir, *DDP, *record, f"--trainer.callbacks.path={tmp_path / 'first-ids'}",
                       *pause_args(10, marker))  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert interrupted.poll() is None, interrupted.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "the run never reached the pause"
        time.sleep(0.2)
    os.killpg(interrupted.pid, signal.SIGKILL)
    interrupted.wait()
    assert safe_load(run / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 9

    _finish(_fit(config, run, cache_dir, *DDP, *record, f"--trainer.callbacks.path={tmp_path / 'resumed-ids'}",
                 "--ckpt_path=last"))  # fmt: skip
    _finish(reference)

    kept = [r for r in _records(tmp_path / "first-ids") if r["step"] <= 9]  # steps 10+ were lost with the kill
    seen = kept + _records(tmp_path / "resumed-ids")
    expected = _records(tmp_path / "reference-ids")
    assert [(r["step"], r["rank"]) for r in seen] == [(r["step"], r["rank"]) for r in expected]
    assert seen == expected  # the same rows, in the same batches, on the same ranks
    everything = {image_id_hash(f"{stream_shards.name}/{n // 16:06d}{n % 16:04d}") for n in range(STREAM_PAIRS)}
    for epoch in (0, 1):
        ids = [i for r in seen if r["epoch"] == epoch for i in r["ids"]]
        assert len(ids) == len(set(ids)) == STREAM_PAIRS and set(ids) == everything  # none dropped or repeated
    final = safe_load(run / "version_0" / "checkpoints" / "last.ckpt")
    ref = safe_load(tmp_path / "reference" / "version_0" / "checkpoints" / "last.ckpt")
    assert final["global_step"] == ref["global_step"] == 15  # the last multiple of 3 of the 16 steps
    for name, tensor in ref["state_dict"].items():
        assert final["state_dict"][name].equal(tensor), name
