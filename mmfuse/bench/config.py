"""What a mixed-precision sweep runs (:class:`AmpSweepConfig`) and the model sizes it can name: the arguments of
``mmfuse bench amp``, read without building or importing any model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmfuse.bench.precision import PRECISIONS, get_precision
from mmfuse.errors import ConfigError

__all__ = ["SIZE_NAMES", "AmpSweepConfig"]

SIZE_NAMES = ("tiny", "small", "base")  # built by mmfuse.bench.sizes.get_size


@dataclass(frozen=True)
class AmpSweepConfig:
    """What to run. Every name is checked on construction (:class:`ConfigError` naming the bad value).

    Attributes:
        sizes: model sizes (``tiny``, ``small``, ``base``).
        precisions: precisions of the eager cells; ``32-true`` is the speedup baseline.
        batch_sizes: batch sizes B.
        compile_precisions: precisions that also get a ``torch.compile`` cell per size and batch size.
        device: ``cpu`` or ``cuda``.
        warmup: untimed steps per cell (at least 1; compilation happens here).
        steps: timed steps per repeat (the most, when ``cell_seconds`` is set).
        repeats: timed repeats per cell; the median and p10/p90 are over these.
        cell_seconds: aim for about this much timed work per cell (fewer steps for slow cells); None = ``steps``.
        parity_steps: training steps of the parity check per precision; 0 = no check.
        parity_batch_size: batch size of the parity check; None = the smallest of ``batch_sizes``.
        compile_batch_sizes: batch sizes of the compiled cells, in the order they run; None = ``batch_sizes``.
        overhead_size: size whose Lightning step is compared with the plain loop; None = no comparison.
        overhead_batch_size: batch size of that comparison (the default experiment's per-process batch).
        overhead_precision: precision of that comparison (``32-true`` or ``bf16-mixed``).
        overhead_steps: steps per ``Trainer.fit`` of the comparison (the first 3 are warm-up).
        overhead_rounds: fits per Lightning variant in the comparison.
        time_budget_s: cells that would start after this many seconds are skipped (and say so); None = no limit.
        lr: AdamW learning rate of the plain loop.
        seed: seed of initial weights and synthetic batches.
        threads: CPU threads for torch (None = torch's default).
        experiment: experiment YAML of the ``small`` size (None = the default experiment).
        peak_matmul_side: side n of the matmul whose measured rate is the MFU peak of devices missing from the
            datasheet table (the CPU included); None = 1024 on CPU, 4096 on GPU.
    """

    sizes: tuple[str, ...] = ("tiny",)
    precisions: tuple[str, ...] = tuple(PRECISIONS)
    batch_sizes: tuple[int, ...] = (8, 32)
    compile_precisions: tuple[str, ...] = ()
    compile_batch_sizes: tuple[int, ...] | None = None
    device: str = "cpu"
    warmup: int = 3
    steps: int = 5
    repeats: int = 5
    cell_seconds: float | None = None
    parity_steps: int = 8
    parity_batch_size: int | None = None
    overhead_size: str | None = None
    overhead_batch_size: int = 32
    overhead_precision: str = "32-true"
    overhead_steps: int = 15
    overhead_rounds: int = 3
    time_budget_s: float | None = None
    lr: float = 1e-4
    seed: int = 0
    threads: int | None = None
    experiment: str | None = None
    peak_matmul_side: int | None = None

    def __post_init__(self) -> None:
        for name in (*self.sizes, *(() if self.overhead_size is None else (self.overhead_size,))):
            if name not in SIZE_NAMES:
                raise ConfigError(f"unknown model size {name!r}; known: {list(SIZE_NAMES)}")
        for name in (*self.precisions, *self.compile_precisions):
            get_precision(name)
        if self.overhead_precision not in ("32-true", "bf16-mixed"):
            raise ConfigError(f"overhead precision {self.overhead_precision!r}: use 32-true or bf16-mixed")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; use cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device")
        if not self.sizes or not self.precisions or not self.batch_sizes:
            raise ConfigError("the sweep needs at least one size, one precision and one batch size")
        minimums = {"warmup": (self.warmup, 1), "steps": (self.steps, 1), "repeats": (self.repeats, 1)}
        minimums |= {"parity steps": (self.parity_steps, 0), "overhead steps": (self.overhead_steps, 4)}
        minimums |= {
            "overhead rounds": (self.overhead_rounds, 1),
            "threads": (1 if self.threads is None else self.threads, 1),
        }
        batch_sizes = (*self.batch_sizes, *(self.compile_batch_sizes or ()), self.overhead_batch_size)
        minimums |= {
            "batch size": (min(batch_sizes), 1),
            "parity batch size": (1 if self.parity_batch_size is None else self.parity_batch_size, 1),
        }
        for key, (value, minimum) in minimums.items():
            if value < minimum:
                raise ConfigError(f"{key} must be >= {minimum}, got {value}")

    @property
    def torch_device(self) -> torch.device:
        """The device as a ``torch.device``."""
        return torch.device(self.device)
