"""What a mixed-precision sweep runs (:class:`AmpSweepConfig`), the precisions (:data:`PRECISIONS`) and the model sizes
it can name: the arguments of ``mmfuse bench amp``, read without importing torch (``mmfuse bench --help`` starts at
once); :mod:`mmfuse.bench.precision` runs the plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmfuse.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "SIZE_NAMES", "AmpSweepConfig", "PrecisionPlan", "get_precision"]

SIZE_NAMES = ("tiny", "small", "base")  # built by mmfuse.bench.sizes.get_size


@dataclass(frozen=True)
class PrecisionPlan:
    """How one precision runs a training step.

    Attributes:
        name: Lightning-style name (``32-true``, ``tf32``, ``bf16-mixed``, ``16-mixed``, ``bf16-true``).
        autocast: torch dtype name of the autocast region around the forward pass; None = no autocast.
        params: torch dtype name of parameters, optimizer state and images.
        use_grad_scaler: scale the loss with a ``GradScaler`` (float16 gradients underflow without it).
        use_tf32: allow TF32 tensor cores for float32 matmuls and convolutions.
        peak_kind: which datasheet peak MFU divides by (``fp32``, ``tf32``, ``bf16``, ``fp16``).
    """

    name: str
    autocast: str | None = None
    params: str = "float32"
    use_grad_scaler: bool = False
    use_tf32: bool = False
    peak_kind: str = "fp32"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for no autocast."""
        import torch

        return None if self.autocast is None else getattr(torch, self.autocast)

    @property
    def param_dtype(self) -> torch.dtype:
        """The dtype of parameters, optimizer state and images."""
        import torch

        return getattr(torch, self.params)


PRECISIONS: dict[str, PrecisionPlan] = {
    plan.name: plan
    for plan in (
        PrecisionPlan("32-true"),
        PrecisionPlan("tf32", use_tf32=True, peak_kind="tf32"),
        PrecisionPlan("bf16-mixed", autocast="bfloat16", peak_kind="bf16"),
        PrecisionPlan("16-mixed", autocast="float16", use_grad_scaler=True, peak_kind="fp16"),
        PrecisionPlan("bf16-true", params="bfloat16", peak_kind="bf16"),
    )
}


def get_precision(name: str) -> PrecisionPlan:
    """The plan of precision ``name``; an unknown name is a :class:`ConfigError` listing the known ones."""
    if name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; known: {list(PRECISIONS)}")
    return PRECISIONS[name]


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
        if self.device == "cuda" and not _cuda_available():
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
        import torch

        return torch.device(self.device)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
