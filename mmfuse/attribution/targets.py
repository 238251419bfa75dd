"""Targets: small callables that pick the one scalar per example an attribution explains.

A target takes the model output (an :class:`~mmfuse.models.ModelOutput`, whose ``logits`` it reads, or the plain
``(B, K)`` logits of a timm classifier) and, where it needs them, the batch; it returns ``(B,)`` scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from mmfuse.types import Batch

__all__ = ["Target", "ClassLogit", "PredictedClass", "LabelClass", "ScalarOf", "logits_of"]


def logits_of(output: Any) -> Tensor:
    """(B, K) logits of a ``ModelOutput`` (its ``.logits``) or of a classifier that returns a tensor."""
    logits = output if isinstance(output, Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise TypeError(f"expected (B, K) logits or an output with .logits, got {type(output).__name__}")
    return logits


class Target:
    """Base class: ``target(output, batch) -> (B,)`` scores, larger = more of what is explained."""

    def __call__(self, output: Any, batch: Batch | None = None) -> Tensor:
        raise NotImplementedError

    def fixed(self, output: Any, batch: Batch | None = None) -> Target:
        """This target with anything that depends on the input resolved on ``output`` (e.g. the predicted class).

        Methods that evaluate the model on altered inputs (integrated gradients) explain the class chosen on the
        real input; fixed targets are returned unchanged.
        """
        return self


@dataclass
class ClassLogit(Target):
    """The logit of a given class.

    Attributes:
        index: one class for every example, or a (B,) long tensor with one class per example. When the model ran
            on a batch that repeats the B examples k times (as integrated gradients does), the indices repeat too.
    """

    index: int | Tensor

    def __call__(self, output: Any, batch: Batch | None = None) -> Tensor:
        logits = logits_of(output)  # (B, K)
        if isinstance(self.index, int):
            return logits[:, self.index]
        index = self.index.to(logits.device).long().flatten()
        if logits.shape[0] % index.numel():
            raise ValueError(f"{index.numel()} class indices for a batch of {logits.shape[0]} examples")
        index = index.repeat(logits.shape[0] // index.numel())  # (B,) -> (k*B,) for k repeats of the batch
        return logits.gather(1, index[:, None])[:, 0]  # (B, K) -> (B,)


class PredictedClass(Target):
    """The logit of each example's top-scoring class."""

    def __call__(self, output: Any, batch: Batch | None = None) -> Tensor:
        logits = logits_of(output)
        return logits.gather(1, logits.argmax(dim=1, keepdim=True))[:, 0]  # (B, K) -> (B,)

    def fixed(self, output: Any, batch: Batch | None = None) -> Target:
        return ClassLogit(logits_of(output).argmax(dim=1).detach())

    def __repr__(self) -> str:
        return "PredictedClass()"


class LabelClass(Target):
    """The logit of each example's label (``batch.labels``)."""

    def __call__(self, output: Any, batch: Batch | None = None) -> Tensor:
        return self.fixed(output, batch)(output, batch)

    def fixed(self, output: Any, batch: Batch | None = None) -> Target:
        if batch is None or batch.labels is None:
            raise ValueError("LabelClass needs a batch with labels; use PredictedClass() or ClassLogit(k) otherwise")
        return ClassLogit(batch.labels.detach())

    def __repr__(self) -> str:
        return "LabelClass()"


@dataclass
class ScalarOf(Target):
    """Any differentiable ``fn(output) -> (B,)`` (a margin, a probability, a similarity...).

    Example:
        >>> import torch
        >>> target = ScalarOf(lambda out: logits_of(out).softmax(-1)[:, 0])
        >>> target(torch.zeros(2, 4)).tolist()
        [0.25, 0.25]
    """

    fn: Callable[[Any], Tensor]

    def __call__(self, output: Any, batch: Batch | None = None) -> Tensor:
        score = self.fn(output)
        if score.dim() != 1:
            raise ValueError(f"ScalarOf: fn must return one score per example (B,), got shape {tuple(score.shape)}")
        return score
