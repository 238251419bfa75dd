"""Launching ``mmfuse fit`` as a cluster does: two processes started by torchrun (CPU, gloo), a SLURM job requeued
before its time limit and resumed from Lightning's hpc checkpoint (a simulated job: SLURM's variables and a stub
``scontrol``), and the launch overlays ``experiments/launch/slurm.yaml`` and ``gpu_fsdp2.yaml`` (FSDP2)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import lightning as L
import pytest
import torch
import torch.distributed as dist
import yaml
from lightning.pytorch.plugins.environments import SLURMEnvironment

from mmfuse.cli import main
from mmfuse.errors import ConfigError
from mmfuse.training import FusionLitModule, safe_load
from mmfuse.training.cli import build_from_config
from mmfuse.types import Batch
from tests.conftest import (
    MAIN_EXPERIMENT,
    REPO,
    TINY_CLI_ARGS,
    TINY_SPEC,
    TINY_TEXT,
    TINY_VISION,
    random_text_batch,
)

LAUNCH = REPO / "experiments" / "launch"
# One thread per process: two processes share this machine's two cores, and runs compared bit for bit use the same.
ENV = {"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
# A one-task job as srun starts it (a job name other than `bash` / `interactive`, which Lightning takes for an
# interactive shell): Lightning's SLURMEnvironment reads its ranks and world size from these.
SLURM_JOB = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "mmfuse", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "node001",
}  # fmt: skip
# The SLURM overlay with its machine-specific values set back to this CPU, stopping after 4 steps of 16 examples.
SLURM_ARGS = [
    "--config", str(LAUNCH / "slurm.yaml"),
    *[a for a in TINY_CLI_ARGS if not a.startswith("--trainer.max_steps")],
    "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
    "--trainer.precision=32-true", "--data.num_workers=0", "--trainer.max_steps=4", "--trainer.deterministic=true",
]  # fmt: skip
WAIT = "tests.training.test_launchers.WaitForRequeue"


def _without_slurm() -> dict[str, str]:
    """This process's environment without SLURM's variables (the tests may run inside a SLURM job)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


# --- torchrun ------------------------------------------------------------------------------------------------------


def test_torchrun_starts_two_processes_that_train_as_one(tmp_path: Path, cache_dir: Path) -> None:
    """torchrun starts both processes; Lightning joins them (its TorchElasticEnvironment) and starts none itself."""
    tiny = [a for a in TINY_CLI_ARGS if not a.startswith(("--trainer.devices", "--trainer.strategy", "--trainer.max_"))]
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "mmfuse.cli", "fit", "--config", str(MAIN_EXPERIMENT), *tiny, "--trainer.max_epochs=1",
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp",
        f"--trainer.default_root_dir={tmp_path / 'runs'}", f"--data.cache_dir={cache_dir}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**_without_slurm(), **ENV}, cwd=REPO)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Starting with 2 processes" in out and out.count("Initializing distributed:") == 2, out[-3000:]
    assert "mmfuse fit summary" in out
    ckpt = safe_load(tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt")
    # One epoch of the 96 training examples at 16 per process: 3 steps with 2 processes (a lone process takes 6).
    assert ckpt["global_step"] == 96 // (16 * 2)
    assert ckpt["ShapesDataModule"]["train_loader"]["num_replicas"] == 2
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["version_0"], f"a rank made a run directory of its own: {runs}"


# --- SLURM: requeue on SIGUSR1, resume from the hpc checkpoint ------------------------------------------------------


class WaitForRequeue(L.Callback):
    """At the end of optimizer step ``step``, touch ``marker`` and wait (at most 10 minutes) for the SIGTERM with which
    SLURM ends a job it requeues.

    A SIGUSR1 sent meanwhile is handled here, at a step boundary (Python runs signal handlers in the main thread,
    between its sleeps): Lightning's handler saves the state that a ``last.ckpt`` of this step would hold."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = marker

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        Path(self.marker).touch()
        deadline = time.monotonic() + 600
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)


def _stub_scontrol(bin_dir: Path, log: Path) -> None:
    """An ``scontrol`` that records its arguments, then ends the calling job step as SLURM's requeue does (SIGTERM
    to the task; SLURM would follow with SIGKILL after its KillWait)."""
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nkill -TERM "$PPID"\n')
    scontrol.chmod(0o755)


def _slurm_fit(root: Path, cache_dir: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    """``mmfuse fit`` of the tiny main experiment with the SLURM overlay, as a task of the simulated job."""
    cmd = [sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(MAIN_EXPERIMENT), *SLURM_ARGS, *extra,
           f"--trainer.default_root_dir={root}", f"--data.cache_dir={cache_dir}"]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _output(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    return out


def _val_steps(run: Path) -> list[int]:
    with (run / "metrics.csv").open(newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh) if row.get("val/acc")]


def test_slurm_requeue_saves_then_the_requeued_job_resumes_exactly(tmp_path: Path, cache_dir: Path) -> None:
    log = tmp_path / "scontrol.log"
    _stub_scontrol(tmp_path / "bin", log)
    env = {**_without_slurm(), **ENV, **SLURM_JOB, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    reference = _slurm_fit(tmp_path / "reference", cache_dir, env)  # never signalled; runs alongside
    # The job: SIGUSR1 (sbatch --signal=SIGUSR1@90) arrives at the end of step 2 of 4.
    root, marker = tmp_path / "runs", tmp_path / "at-step-2"
    wait = [f"--trainer.callbacks+={WAIT}", "--trainer.callbacks.step=2", f"--trainer.callbacks.marker={marker}"]
    job = _slurm_fit(root, cache_dir, env, *wait)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert job.poll() is None, f"the job ended before step 2: {_output(job)[-3000:]}"
        assert time.monotonic() < deadline, "the job never reached step 2"
        time.sleep(0.1)
    job.send_signal(signal.SIGUSR1)
    out = _output(job)
    assert job.returncode == 0, out[-3000:]
    assert log.read_text().splitlines() == ["requeue 4242"], out[-3000:]
    assert "mmfuse fit summary" not in out, "the job ran on past the requeue"
    hpc = root / "hpc_ckpt_1.ckpt"
    assert safe_load(hpc)["global_step"] == 2
    assert not (root / "version_0" / "checkpoints" / "last.ckpt").exists()  # validation (last.ckpt) is at step 3

    # The requeued job runs the same command in the same job: it resumes from the hpc checkpoint, in the same run.
    marker.unlink()
    out = _output(_slurm_fit(root, cache_dir, env, *wait))
    assert f"Restoring states from the checkpoint path at {hpc}" in out, out[-3000:]
    assert "mmfuse fit summary" in out and not marker.exists()
    assert log.read_text().splitlines() == ["requeue 4242"]
    assert sorted(p.name for p in root.iterdir()) == ["hpc_ckpt_1.ckpt", "version_0"]

    reference_out = _output(reference)
    assert reference.returncode == 0, reference_out[-3000:]
    expected = safe_load(tmp_path / "reference" / "version_0" / "checkpoints" / "last.ckpt")
    got = safe_load(root / "version_0" / "checkpoints" / "last.ckpt")
    assert got["global_step"] == expected["global_step"] == 4
    assert expected["state_dict"].keys() == got["state_dict"].keys()
    differ = [k for k in expected["state_dict"] if not torch.equal(expected["state_dict"][k], got["state_dict"][k])]
    assert not differ, f"{len(differ)} of {len(expected['state_dict'])} tensors differ, e.g. {differ[:3]}"
    assert _val_steps(root / "version_0") == _val_steps(tmp_path / "reference" / "version_0")


def test_ckpt_path_hpc_without_an_hpc_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(MAIN_EXPERIMENT), *TINY_CLI_ARGS, "--ckpt_path=hpc",
              f"--trainer.default_root_dir={tmp_path}", f"--data.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("mmfuse: error: --ckpt_path hpc: no hpc_ckpt_N.ckpt in trainer.default_root_dir=")


# --- the overlays --------------------------------------------------------------------------------------------------


def _printed_config(capsys: pytest.CaptureFixture, *args: str) -> dict[str, Any]:
    """The config ``mmfuse fit ARGS --print_config`` resolves (parsed, nothing built)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(MAIN_EXPERIMENT), *args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_slurm_overlay_header_is_the_sbatch_script_it_needs(capsys: pytest.CaptureFixture) -> None:
    text = (LAUNCH / "slurm.yaml").read_text()
    script = [line.removeprefix("#").strip() for line in text.splitlines() if line.startswith("#   ")]
    sbatch = dict(re.findall(r"^#SBATCH (--[\w-]+)(?:=(\S+))?", "\n".join(script), flags=re.MULTILINE))
    assert script[0] == "#!/bin/bash"
    assert sbatch["--signal"] == "SIGUSR1@90" and "--requeue" in sbatch
    assert {"--time", "--cpus-per-task"} <= sbatch.keys()
    srun = [line for line in script if line.startswith("srun ")]
    assert srun == ["srun mmfuse fit --config experiments/shapes_color.yaml --config experiments/launch/slurm.yaml"]
    # devices x num_nodes is SLURM's world size: one task per GPU
    trainer = _printed_config(capsys, "--config", str(LAUNCH / "slurm.yaml"))["trainer"]
    assert int(sbatch["--nodes"]) == trainer["num_nodes"]
    assert int(sbatch["--ntasks-per-node"]) == int(sbatch["--gpus-per-node"]) == trainer["devices"]
    assert (trainer["accelerator"], trainer["strategy"]) == ("gpu", "ddp")
    (plugin,) = trainer["plugins"]
    assert plugin["class_path"].endswith(".SLURMEnvironment") and plugin["init_args"]["auto_requeue"] is True


def test_slurm_overlay_builds_a_trainer_that_requeues(tmp_path: Path, cache_dir: Path) -> None:
    cli = build_from_config(MAIN_EXPERIMENT, [*SLURM_ARGS, f"--trainer.default_root_dir={tmp_path}",
                                              f"--data.cache_dir={cache_dir}"])  # fmt: skip
    environment = cli.trainer._accelerator_connector.cluster_environment  # what the signal connector reads
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert environment.requeue_signal == signal.SIGUSR1


def test_fsdp2_overlay_parses_to_model_parallel_over_every_device(capsys: pytest.CaptureFixture) -> None:
    config = _printed_config(capsys, "--config", str(LAUNCH / "gpu_fsdp2.yaml"))
    trainer = config["trainer"]
    assert trainer["strategy"]["class_path"] == "lightning.pytorch.strategies.ModelParallelStrategy"
    init_args = trainer["strategy"]["init_args"]
    assert init_args["data_parallel_size"] == trainer["devices"] * trainer["num_nodes"]
    assert init_args["tensor_parallel_size"] == 1 and init_args["save_distributed_checkpoint"] is False
    assert (trainer["accelerator"], trainer["precision"]) == ("gpu", "bf16-mixed")
    assert config["speed"]["activation_checkpointing"] is True
    assert config["model"]["fusion"]["name"] == "cross_attention"  # the experiment's values, merged


def test_fsdp2_overlay_builds_its_strategy_and_a_cpu_refuses_it(tmp_path: Path, cache_dir: Path) -> None:
    # The strategy object is built from the overlay (the message names its class), then refused before Lightning
    # would fail deep inside.
    cpu = ["--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.default_root_dir={tmp_path}",
           f"--data.cache_dir={cache_dir}"]  # fmt: skip
    tiny = [a for a in TINY_CLI_ARGS if not a.startswith("--trainer.strategy")]
    with pytest.raises(ConfigError, match=r"^trainer.strategy='ModelParallelStrategy' needs CUDA GPUs; on a CPU use"):
        build_from_config(MAIN_EXPERIMENT, ["--config", str(LAUNCH / "gpu_fsdp2.yaml"), *tiny, *cpu])


def _tiny_module() -> FusionLitModule:
    return FusionLitModule(width=16, vision=TINY_VISION["resnet"], text=TINY_TEXT["bert"], data_spec=TINY_SPEC)


def test_configure_model_does_nothing_without_a_device_mesh() -> None:
    from torch.distributed.fsdp import FSDPModule

    module = _tiny_module()
    before = dict(module.named_parameters())
    assert module.device_mesh is None
    module.configure_model()
    assert dict(module.named_parameters()) == before  # the same tensors, not sharded copies
    assert not any(isinstance(m, FSDPModule) for m in module.modules())


@pytest.mark.filterwarnings("ignore:FSDP2-wrapped module")  # outputs are views; nothing changes them in place
def test_configure_model_shards_encoders_fusion_layers_and_model_on_a_mesh() -> None:
    """On a one-process CPU mesh (gloo): what ModelParallelStrategy's mesh makes of the model."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule

    module = _tiny_module()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        module._device_mesh = init_device_mesh("cpu", (1, 1), mesh_dim_names=("data_parallel", "tensor_parallel"))
        module.configure_model()
        model, fusion = module.model, cast(Any, module.model.fusion)
        units = [model, model.vision, model.text, *fusion.text_layers]
        assert all(isinstance(unit, FSDPModule) for unit in units)
        module.configure_model()  # Lightning calls it again for each stage: left as it is
        input_ids, mask = random_text_batch(2, 5, TINY_SPEC.vocab_size, [5, 3])
        batch = Batch(images=torch.rand(2, 3, 32, 32), input_ids=input_ids, attention_mask=mask, labels=torch.zeros(2))
        module(batch).sum().backward()  # the sharded units gather their parameters for forward and backward
        assert all(p.grad is not None for p in module.parameters() if p.requires_grad)
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fsdp2_overlay_fits_two_steps(tmp_path: Path, cache_dir: Path) -> None:
    devices = min(torch.cuda.device_count(), 2)
    tiny = [a for a in TINY_CLI_ARGS if not a.startswith(("--trainer.devices", "--trainer.strategy"))]
    cmd = [
        sys.executable, "-m", "mmfuse.cli", "fit", "--config", str(MAIN_EXPERIMENT),
        "--config", str(LAUNCH / "gpu_fsdp2.yaml"), *tiny,
        f"--trainer.devices={devices}", f"--trainer.strategy.data_parallel_size={devices}",
        f"--trainer.default_root_dir={tmp_path / 'runs'}", f"--data.cache_dir={cache_dir}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**_without_slurm(), **ENV}, cwd=REPO)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    run = tmp_path / "runs" / "version_0"
    ckpt = safe_load(run / "checkpoints" / "last.ckpt")  # one file, gathered on rank 0
    assert ckpt["global_step"] == 2
    assert (run / "model").is_dir()
