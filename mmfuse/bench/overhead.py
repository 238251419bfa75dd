"""What Lightning costs per step: mmfuse's :class:`~mmfuse.training.FusionLitModule` under ``lightning.Trainer``
against a plain PyTorch loop over the same model, batches and optimizer settings, in one process.

The two are interleaved step by step, so that load from other processes hits both alike: during ``Trainer.fit``,
a callback runs one step of the plain loop (on its own copy of the model) at the end of every Lightning step and
times it. A Lightning step is the interval between the starts of consecutive Lightning steps, less the plain step
run inside it, so it holds all of Lightning's per-step work (hooks, logging, metrics, optimizer and scheduler).
The ratio is the median over steps of lightning_i / plain_i, warm-up steps excluded. On CPU the clock is the
process's CPU time, so that waiting for other processes on a shared machine inflates neither loop; on CUDA it is
wall time with the device synchronised at every mark, which exposes host overhead that asynchronous execution could
otherwise hide: the CUDA ratio is an upper bound.

A second fit, ``lightning_bare``, runs the same module with a ``training_step`` that only computes the loss (no
``self.log``, no metric update), to split Lightning's cost between the trainer loop and the module's per-step
logging and metrics. Lightning is imported only inside these functions.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse.bench.precision import synthetic_batches
from mmfuse.bench.sizes import ModelSize
from mmfuse.bench.timing import synchronize
from mmfuse.config import MODEL_KEYS, OptimConfig
from mmfuse.models import ImageTextModel
from mmfuse.types import Batch

__all__ = ["OVERHEAD_TARGET", "OverheadResult", "measure_overhead", "plain_optimizer"]

logger = logging.getLogger(__name__)
OVERHEAD_TARGET = 1.02


@dataclass
class OverheadResult:
    """Lightning against the plain loop.

    Attributes:
        size: model size name.
        precision: ``32-true`` or ``bf16-mixed``.
        device: ``cpu`` or ``cuda``.
        batch_size: batch size B.
        steps_per_block: steps of each ``Trainer.fit``.
        warmup_steps: leading steps of each fit that are not counted.
        rounds: fits per Lightning variant.
        step_s: median seconds per step of ``lightning``, ``lightning_bare`` and of the plain steps paired with
            each (``plain (lightning)``, ``plain (lightning_bare)``).
        extra_s: per Lightning variant, the median over steps of lightning_i - plain_i: Lightning's cost per step.
        ratio: median over counted steps of lightning_i / plain_i (each plain step ran right after its
            Lightning step).
        ratio_bare: the same for ``lightning_bare`` (module logging and metrics removed).
        metric_update_s: median seconds of one ``MulticlassAccuracy`` update on (B, K) logits, alone.
        per_round: every fit's median seconds per step, by loop (``plain (<variant>)``: the plain steps paired
            with that fit).
        clock: ``process_cpu_time`` (CPU) or ``wall`` (CUDA).
        target: the ratio aimed at.
        meets_target: ratio <= target.
    """

    size: str
    precision: str
    device: str
    batch_size: int
    steps_per_block: int
    warmup_steps: int
    rounds: int
    step_s: dict[str, float] = field(default_factory=dict)
    extra_s: dict[str, float] = field(default_factory=dict)
    ratio: float | None = None
    ratio_bare: float | None = None
    metric_update_s: float | None = None
    per_round: list[dict[str, float]] = field(default_factory=list)
    clock: str = "wall"
    target: float = OVERHEAD_TARGET
    meets_target: bool | None = None


def plain_optimizer(model: torch.nn.Module, cfg: OptimConfig, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW without decay on biases and norm weights plus the warm-up schedule, stepped every optimizer step:
    the settings of ``FusionLitModule.configure_optimizers``, for a loop without Lightning."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
        fused=getattr(cfg, "fused", None),  # a newer OptimConfig field; None is PyTorch's default
    )
    warmup = int(cfg.warmup_ratio * total_steps)
    if cfg.schedule == "cosine":
        return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    return optimizer, get_constant_schedule_with_warmup(optimizer, warmup)


class _PlainLoop:
    """The plain loop, one step at a time: the work of ``FusionLitModule.training_step`` without its logging and
    metric, then AdamW and the scheduler, with the module's optimizer settings.

    Args:
        model: its own copy of the model, on ``device``.
        batches: the batches, cycled.
        cfg: optimizer settings.
        precision: ``32-true`` or ``bf16-mixed``.
        device: where the model lives.
    """

    def __init__(
        self, model: ImageTextModel, batches: list[Batch], cfg: OptimConfig, precision: str, device: torch.device
    ) -> None:
        self.model, self.batches, self.device = model.train(), batches, device
        self.use_bf16 = precision == "bf16-mixed"
        self.optimizer, self.scheduler = plain_optimizer(model, cfg, len(batches))

    def step(self, index: int) -> float:
        """Train on batch ``index``; returns the seconds it took."""
        start = _now(self.device)
        batch = self.batches[index % len(self.batches)].to(self.device)
        assert batch.labels is not None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            logits = self.model(batch.images, batch.input_ids, batch.attention_mask).logits
            loss = F.cross_entropy(logits, batch.labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return _now(self.device) - start


def _paired_fit(
    module: Any, plain: _PlainLoop, batches: list[Batch], precision: str, device: torch.device
) -> tuple[list[float], list[float]]:
    """One ``Trainer.fit`` of ``module`` on ``batches`` with a plain step after every Lightning step.

    Returns:
        (seconds of Lightning steps 0..N-2, seconds of the plain steps run after each of them).
    """
    import lightning as L
    from torch.utils.data import DataLoader

    starts: list[float] = []
    plain_s: list[float] = []

    class PairedClock(L.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            starts.append(_now(device))

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            plain_s.append(plain.step(batch_idx))

    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=len(batches),
        precision=precision,  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[PairedClock()],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))  # type: ignore[arg-type]
    lightning_s = [b - a - p for a, b, p in zip(starts, starts[1:], plain_s)]
    return lightning_s, plain_s[: len(lightning_s)]


def _now(device: torch.device) -> float:
    """Seconds on the loop's clock: wall time on CUDA (after a synchronize); on CPU the CPU time of this process,
    which time spent waiting for other processes' work does not inflate."""
    if device.type == "cuda":
        synchronize(device)
        return time.perf_counter()
    return time.process_time()


def _lightning_modules(size: ModelSize) -> tuple[Any, Any]:
    """(FusionLitModule, the same with a loss-only training_step) of ``size``, with the same initial weights."""
    from mmfuse.training import FusionLitModule

    class BareLitModule(FusionLitModule):
        """FusionLitModule without per-step logging and metrics."""

        def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
            assert batch.labels is not None
            return F.cross_entropy(self(batch), batch.labels)

    cfg = size.model
    modules = [
        cls(**{key: getattr(cfg, key) for key in MODEL_KEYS}, optim=size.optim, data_spec=size.spec)
        for cls in (FusionLitModule, BareLitModule)
    ]
    module, bare = modules
    bare.load_state_dict(module.state_dict())
    return module, bare


def _metric_update_s(size: ModelSize, batch_size: int, device: torch.device, calls: int = 50) -> float:
    """Median seconds of one ``MulticlassAccuracy`` update (what ``training_step`` adds per step)."""
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(size.spec.num_classes, average="micro").to(device)
    logits = torch.randn(batch_size, size.spec.num_classes, device=device)
    labels = torch.randint(0, size.spec.num_classes, (batch_size,), device=device)
    times = []
    for _ in range(calls + 3):
        start = _now(device)
        metric(logits, labels)
        times.append(_now(device) - start)
    return statistics.median(times[3:])


def measure_overhead(
    size: ModelSize,
    device: torch.device,
    batch_size: int = 32,
    steps: int = 15,
    rounds: int = 3,
    warmup: int = 3,
    precision: str = "32-true",
    seed: int = 0,
) -> OverheadResult:
    """Fit the Lightning module and its bare variant ``rounds`` times each (alternating which goes first), every
    Lightning step followed by a timed plain step.

    Args:
        size: the model size (its ``optim`` gives the optimizer settings of both loops).
        device: where to train.
        batch_size: batch size B.
        steps: steps per fit; the first ``warmup`` and the last (which has no end mark) are not counted.
        rounds: fits per Lightning variant.
        warmup: leading steps of each fit that are not counted.
        precision: ``32-true`` or ``bf16-mixed`` (Lightning's plugin vs. ``torch.autocast`` in the plain loop).
        seed: seed of the weights and batches.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = dict(zip(("lightning", "lightning_bare"), _lightning_modules(size)))
    plain_model = copy.deepcopy(modules["lightning"].model).to(device)
    pool = synthetic_batches(size, batch_size, count=4, seed=seed, device=device)
    batches = [pool[i % len(pool)] for i in range(steps)]

    def fit(name: str, batches: list[Batch]) -> tuple[list[float], list[float]]:
        plain = _PlainLoop(plain_model, batches, size.optim, precision, device)
        return _paired_fit(modules[name], plain, batches, precision, device)

    result = OverheadResult(size.name, precision, device.type, batch_size, steps, warmup, rounds)
    result.clock = "wall" if device.type == "cuda" else "process_cpu_time"
    pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in modules}
    with warnings.catch_warnings(), _quiet_lightning():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging intervals
        for name in modules:  # one short fit each, not counted: first-call costs (allocator, thread pools)
            fit(name, batches[: warmup + 2])
        for index in range(rounds):
            block: dict[str, float] = {}
            for name in sorted(modules, reverse=index % 2 == 1):
                lightning_s, plain_s = (times[warmup:] for times in fit(name, batches))
                pairs[name] += list(zip(lightning_s, plain_s))
                block |= {name: statistics.median(lightning_s), f"plain ({name})": statistics.median(plain_s)}
            result.per_round.append(block)
            logger.info("overhead round %d: %s", index + 1, {k: f"{v * 1e3:.1f} ms" for k, v in block.items()})
    return _summarise(result, pairs, _metric_update_s(size, batch_size, device))


def _summarise(result: OverheadResult, pairs: dict[str, list[tuple[float, float]]], metric_s: float) -> OverheadResult:
    """Medians per loop and the median per-step ratio of each Lightning variant to its paired plain steps."""
    ratios = {name: statistics.median(lit / p for lit, p in pairs[name]) for name in pairs}
    step_s: dict[str, float] = {}
    for name, values in pairs.items():
        step_s |= {
            name: statistics.median(lit for lit, _ in values),
            f"plain ({name})": statistics.median(p for _, p in values),
        }
    return dataclasses.replace(
        result,
        step_s=step_s,
        extra_s={name: statistics.median(lit - p for lit, p in values) for name, values in pairs.items()},
        ratio=ratios["lightning"],
        ratio_bare=ratios["lightning_bare"],
        metric_update_s=metric_s,
        meets_target=ratios["lightning"] <= result.target,
    )


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-fit info lines ("GPU available: ...") while the blocks run."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
