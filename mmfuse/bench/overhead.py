"""What Lightning costs per step: mmfuse's :class:`~mmfuse.training.FusionLitModule` under ``lightning.Trainer``
against a plain PyTorch loop and a Hugging Face Accelerate loop over the same model, batches and optimizer settings,
in one process.

The loops are interleaved step by step, so that load from other processes hits them alike: during ``Trainer.fit``,
a callback runs one step of the plain loop and one of the Accelerate loop (each on its own copy of the model; plain
first on even steps, Accelerate first on odd ones) at the end of every Lightning step and times them. A Lightning
step is the interval between the starts of consecutive Lightning steps, less the peer steps run inside it, so it
holds all of Lightning's per-step work (hooks, logging, metrics, optimizer and scheduler). The ratios are medians
over steps of lightning_i / plain_i and accelerate_i / plain_i, warm-up steps excluded. On CPU the clock is the
process's CPU time, so that waiting for other processes on a shared machine inflates no loop; on CUDA it is wall
time with the device synchronised at every mark, which exposes host overhead that asynchronous execution could
otherwise hide: the CUDA ratio is an upper bound.

The Accelerate loop is ``Accelerator(mixed_precision="no"|"bf16")``, ``accelerator.prepare(model, optimizer,
scheduler)``, forward and loss under ``accelerator.autocast()``, ``accelerator.backward(loss)``. It runs when
``accelerate`` is installed (``pip install 'mmfuse[bench]'``) and is recorded as skipped, with the reason, otherwise.

Time to the first step, per loop and fit, on the loop clock and on the wall clock: for Lightning, from just before
``lightning.Trainer(...)`` to the end of the first step; for the plain loop, its setup (optimizer and scheduler)
plus its first step; for Accelerate, its setup (``Accelerator(...)`` and ``prepare``) plus its first step. Every
loop receives a built model, and the medians are over the counted fits, so one-time costs of the process (imports,
thread pools) are not in it.

A second fit, ``lightning_bare`` (``bare=True``), runs the same module with a ``training_step`` that only computes
the loss (no ``self.log``, no metric update), to split Lightning's cost between the trainer loop and the module's
per-step logging and metrics. Lightning is imported only inside these functions, Accelerate only when
:class:`~mmfuse.bench.peer_loops.AccelerateLoop` is built.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import statistics
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmfuse.bench.peer_loops import (
    AccelerateLoop,
    PeerLoop,
    PlainLoop,
    accelerate_missing,
    clock_marks,
    loop_clock,
    system_time,
)
from mmfuse.bench.precision import synthetic_batches
from mmfuse.bench.sizes import ModelSize
from mmfuse.bench.timing import p10_p90, release_memory
from mmfuse.config import MODEL_KEYS
from mmfuse.types import Batch

__all__ = ["OVERHEAD_TARGET", "OverheadResult", "measure_overhead"]

logger = logging.getLogger(__name__)
OVERHEAD_TARGET = 1.02


@dataclass
class OverheadResult:
    """Lightning against the plain and Accelerate loops.

    Attributes:
        size: model size name.
        precision: ``32-true`` or ``bf16-mixed``.
        device: ``cpu`` or ``cuda``.
        batch_size: batch size B.
        steps_per_block: steps of each ``Trainer.fit``.
        warmup_steps: leading steps of each fit that are not counted.
        rounds: fits per Lightning variant.
        step_s: median seconds per step of each Lightning variant (``lightning``, ``lightning_bare``), of the
            peer steps paired with each (``plain (<variant>)``, ``accelerate (<variant>)``) and, when Accelerate
            ran, of the peer steps of every fit (``plain``, ``accelerate``).
        extra_s: per Lightning variant, the median over steps of lightning_i - plain_i: Lightning's cost per step;
            ``accelerate``: the median of accelerate_i - plain_i over the steps of every fit.
        ratio: median over counted steps of lightning_i / plain_i (each plain step ran right after its
            Lightning step).
        ratio_bare: the same for ``lightning_bare`` (module logging and metrics removed); None when not run.
        ratio_accelerate: median over the counted steps of every fit of accelerate_i / plain_i; None when not run.
        ratio_p10_p90: the 10th and 90th percentiles of those per-step ratios, by loop (``lightning``,
            ``lightning_bare``, ``accelerate``): the spread the medians come from.
        ratio_to_fastest: ``lightning``, ``plain`` and ``accelerate``: the median step of each in the ``lightning``
            fits over the smallest of them (1.0 = the fastest loop).
        first_step_s: median over counted fits of each loop's time to its first step (``lightning``,
            ``lightning_bare``, ``plain``, ``accelerate``), on the loop clock.
        first_step_wall_s: the same on the wall clock.
        system_s: median over the counted steps of every fit of each loop's kernel CPU seconds per step (page
            faults on freshly mapped memory; part of the CPU clock): where loops differ by more than their own
            work, it shows how much of it is the allocator's.
        metric_update_s: median seconds of one ``MulticlassAccuracy`` update on (B, K) logits, alone.
        per_round: every fit's median seconds per step, by loop (``plain (<variant>)``, ``accelerate (<variant>)``:
            the peer steps paired with that fit).
        skipped: loop -> why it did not run (Accelerate not installed, or not asked for).
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
    ratio_accelerate: float | None = None
    ratio_to_fastest: dict[str, float] = field(default_factory=dict)
    ratio_p10_p90: dict[str, tuple[float, float]] = field(default_factory=dict)
    first_step_s: dict[str, float] = field(default_factory=dict)
    first_step_wall_s: dict[str, float] = field(default_factory=dict)
    system_s: dict[str, float] = field(default_factory=dict)
    metric_update_s: float | None = None
    per_round: list[dict[str, float]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    clock: str = "wall"
    target: float = OVERHEAD_TARGET
    meets_target: bool | None = None


@dataclass
class _Fit:
    """The timings of one ``Trainer.fit`` with its peer steps.

    Attributes:
        lightning: seconds of Lightning steps 0..N-2.
        peers: loop name -> seconds of its steps run after each of those Lightning steps.
        first_step: loop name (the Lightning variant's own name for Lightning) -> (loop clock, wall) seconds to the
            end of its first step: from just before ``Trainer(...)``, or the peer's setup plus first step.
        system: loop name -> kernel CPU seconds of each of those steps.
    """

    lightning: list[float]
    peers: dict[str, list[float]]
    first_step: dict[str, tuple[float, float]]
    system: dict[str, list[float]]


def _paired_fit(
    name: str, module: Any, peers: dict[str, PeerLoop], batches: list[Batch], precision: str, device: torch.device
) -> _Fit:
    """One ``Trainer.fit`` of ``module`` on ``batches`` with one step of every peer loop after each Lightning step."""
    import lightning as L
    from torch.utils.data import DataLoader

    starts: list[float] = []
    starts_system: list[float] = []
    first: list[tuple[float, float]] = []
    peer_s: dict[str, list[float]] = {name: [] for name in peers}
    peer_steps: list[float] = []  # seconds of all peer steps run after each Lightning step
    peer_system: list[float] = []  # their kernel seconds

    class PairedClock(L.Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            starts.append(loop_clock(device))
            starts_system.append(system_time())

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if not first:
                first.append(clock_marks(device))
            names = list(peers) if batch_idx % 2 == 0 else list(peers)[::-1]
            for name in names:
                peer_s[name].append(peers[name].step(batch_idx))
            peer_steps.append(sum(peer_s[name][-1] for name in names))
            peer_system.append(sum(peers[name].system_s[-1] for name in names))

    created = clock_marks(device)
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
    lightning_s = [b - a - p for a, b, p in zip(starts, starts[1:], peer_steps)]
    first_step = {name: (first[0][0] - created[0], first[0][1] - created[1])}
    for peer, loop in peers.items():
        assert loop.first_step is not None
        first_step[peer] = loop.first_step
    n = len(lightning_s)
    system = {name: [b - a - p for a, b, p in zip(starts_system, starts_system[1:], peer_system)]}
    system |= {peer: loop.system_s[:n] for peer, loop in peers.items()}
    return _Fit(lightning_s, {peer: s[:n] for peer, s in peer_s.items()}, first_step, system)


def _lightning_modules(size: ModelSize, bare: bool) -> dict[str, Any]:
    """``lightning``: FusionLitModule of ``size``; with ``bare``, ``lightning_bare``: the same with a loss-only
    training_step and the same initial weights."""
    from mmfuse.training import FusionLitModule

    class BareLitModule(FusionLitModule):
        """FusionLitModule without per-step logging and metrics."""

        def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
            assert batch.labels is not None
            return F.cross_entropy(self(batch), batch.labels)

    cfg = size.model
    classes = {"lightning": FusionLitModule} | ({"lightning_bare": BareLitModule} if bare else {})
    modules = {
        name: cls(**{key: getattr(cfg, key) for key in MODEL_KEYS}, optim=size.optim, data_spec=size.spec)
        for name, cls in classes.items()
    }
    for module in modules.values():
        module.load_state_dict(modules["lightning"].state_dict())
    return modules


def _metric_update_s(size: ModelSize, batch_size: int, device: torch.device, calls: int = 50) -> float:
    """Median seconds of one ``MulticlassAccuracy`` update (what ``training_step`` adds per step)."""
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(size.spec.num_classes, average="micro").to(device)
    logits = torch.randn(batch_size, size.spec.num_classes, device=device)
    labels = torch.randint(0, size.spec.num_classes, (batch_size,), device=device)
    times = []
    for _ in range(calls + 3):
        start = loop_clock(device)
        metric(logits, labels)
        times.append(loop_clock(device) - start)
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
    accelerate: bool = True,
    bare: bool = True,
) -> OverheadResult:
    """Fit the Lightning module (and its bare variant) ``rounds`` times each (alternating which goes first), every
    Lightning step followed by a timed step of the plain loop and of the Accelerate loop.

    Args:
        size: the model size (its ``optim`` gives the optimizer settings of every loop).
        device: where to train.
        batch_size: batch size B.
        steps: steps per fit; the first ``warmup`` and the last (which has no end mark) are not counted.
        rounds: fits per Lightning variant.
        warmup: leading steps of each fit that are not counted.
        precision: ``32-true`` or ``bf16-mixed`` (Lightning's plugin, ``torch.autocast`` in the plain loop,
            ``Accelerator(mixed_precision="bf16")``).
        seed: seed of the weights and batches.
        accelerate: run the Accelerate loop when ``accelerate`` is installed (recorded in ``skipped`` otherwise).
        bare: also fit ``lightning_bare`` (the module without per-step logging and metrics).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = _lightning_modules(size, bare)
    initial = copy.deepcopy(modules["lightning"].model)  # each Accelerate fit prepares a fresh copy of it
    plain_model = copy.deepcopy(initial).to(device)
    pool = synthetic_batches(size, batch_size, count=4, seed=seed, device=device)
    batches = [pool[i % len(pool)] for i in range(steps)]
    skipped = {} if bare else {"lightning_bare": "not asked for (bare=False)"}
    missing = accelerate_missing() if accelerate else "not asked for (accelerate=False)"
    if missing is not None:
        skipped["accelerate"] = missing

    def fit(name: str, batches: list[Batch]) -> _Fit:
        release_memory()  # the previous fit's trainer, optimizers and Accelerate copy (some in reference cycles)
        peers: dict[str, PeerLoop] = {"plain": PlainLoop(plain_model, batches, size.optim, precision, device)}
        if missing is None:
            model = copy.deepcopy(initial).to(device)
            peers["accelerate"] = AccelerateLoop(model, batches, size.optim, precision, device)
        return _paired_fit(name, modules[name], peers, batches, precision, device)

    result = OverheadResult(size.name, precision, device.type, batch_size, steps, warmup, rounds, skipped=skipped)
    result.clock = "wall" if device.type == "cuda" else "process_cpu_time"
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in modules}  # variant -> loop -> step seconds
    firsts: dict[str, list[tuple[float, float]]] = {}  # loop -> (loop clock, wall) time to the first step, per fit
    system: dict[str, list[float]] = {}  # loop -> kernel seconds of its counted steps, every fit
    with warnings.catch_warnings(), _quiet_lightning():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging intervals
        for name in modules:  # one short fit each, not counted: first-call costs (allocator, thread pools)
            fit(name, batches[: warmup + 2])
        for index in range(rounds):
            block: dict[str, float] = {}
            for name in sorted(modules, reverse=index % 2 == 1):
                done = fit(name, batches)
                counted = {name: done.lightning[warmup:]} | {peer: s[warmup:] for peer, s in done.peers.items()}
                for loop, seconds in counted.items():
                    samples[name].setdefault(loop, []).extend(seconds)
                    block[name if loop == name else f"{loop} ({name})"] = statistics.median(seconds)
                for loop, seconds_to_first in done.first_step.items():
                    firsts.setdefault(loop, []).append(seconds_to_first)
                for loop, seconds in done.system.items():
                    system.setdefault(loop, []).extend(seconds[warmup:])
            result.per_round.append(block)
            logger.info("overhead round %d: %s", index + 1, {k: f"{v * 1e3:.1f} ms" for k, v in block.items()})
    result.first_step_s = {loop: statistics.median(t[0] for t in times) for loop, times in firsts.items()}
    result.first_step_wall_s = {loop: statistics.median(t[1] for t in times) for loop, times in firsts.items()}
    result.system_s = {loop: statistics.median(seconds) for loop, seconds in system.items()}
    return _summarise(result, samples, _metric_update_s(size, batch_size, device))


def _summarise(result: OverheadResult, samples: dict[str, dict[str, list[float]]], metric_s: float) -> OverheadResult:
    """Medians per loop, the median per-step ratios to the paired plain steps, and each loop against the fastest.

    Args:
        result: the result so far.
        samples: Lightning variant -> loop (the variant itself, ``plain``, ``accelerate``) -> counted step seconds,
            aligned by step.
        metric_s: seconds of one metric update.
    """
    step_s: dict[str, float] = {}
    for variant, loops in samples.items():
        step_s |= {
            (loop if loop == variant else f"{loop} ({variant})"): statistics.median(s) for loop, s in loops.items()
        }
    paired = {variant: list(zip(loops[variant], loops["plain"])) for variant, loops in samples.items()}
    per_step = {variant: [lit / p for lit, p in pairs] for variant, pairs in paired.items()}
    ratios = {variant: statistics.median(values) for variant, values in per_step.items()}
    extra_s = {variant: statistics.median(lit - p for lit, p in pairs) for variant, pairs in paired.items()}
    ratio_accelerate = None
    accelerate = [pair for loops in samples.values() for pair in zip(loops.get("accelerate", []), loops["plain"])]
    if accelerate:  # the peers' steps of every fit, pooled: they do not depend on the Lightning variant
        step_s |= {"accelerate": statistics.median(a for a, _ in accelerate)}
        step_s |= {"plain": statistics.median(p for _, p in accelerate)}
        per_step["accelerate"] = [a / p for a, p in accelerate]
        ratio_accelerate = statistics.median(per_step["accelerate"])
        extra_s["accelerate"] = statistics.median(a - p for a, p in accelerate)
    medians = {loop: statistics.median(s) for loop, s in samples["lightning"].items()}
    return dataclasses.replace(
        result,
        step_s=step_s,
        extra_s=extra_s,
        ratio=ratios["lightning"],
        ratio_bare=ratios.get("lightning_bare"),
        ratio_accelerate=ratio_accelerate,
        ratio_to_fastest={loop: seconds / min(medians.values()) for loop, seconds in medians.items()},
        ratio_p10_p90={loop: p10_p90(values) for loop, values in per_step.items()},
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
