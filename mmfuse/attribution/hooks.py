"""Forward/backward capture on a module named by its dotted path, always undone on exit.

Hooks go on the pure model (never a LightningModule) inside context managers, so no handle outlives a call and no
activation is kept alive between calls (the leak users of pytorch-grad-cam report in loops).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmfuse._compat import registered_hooks
from mmfuse.errors import ConfigError
from mmfuse.registry import close_matches

__all__ = ["Capture", "capture_output", "explain_mode", "hook_count", "resolve_module", "gradients"]


def _nearby_paths(path: str, modules: dict[str, nn.Module]) -> list[str]:
    """Close spellings of ``path``, then the children of its longest valid prefix."""
    hints = close_matches(path, [name for name in modules if name], n=6)
    parts = path.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:cut])
        if prefix in modules:
            children = [f"{prefix}.{name}" if prefix else name for name, _ in modules[prefix].named_children()]
            hints += [child for child in children if child not in hints]
            break
    return hints[:12]


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (``model.get_submodule``; never ``eval``).

    Raises:
        ConfigError: no such module; the message lists valid paths near the given one.
    """
    if path:
        try:
            return model.get_submodule(path)  # follows the path only: no walk over the whole model on every call
        except AttributeError:
            pass
    hints = _nearby_paths(path, dict(model.named_modules()))
    raise ConfigError(f"target_layer={path!r} is not a module of {type(model).__name__}. Valid paths near it: {hints}")


@dataclass
class Capture:
    """What :func:`capture_output` recorded in the last forward pass.

    Attributes:
        path: dotted path of the hooked module.
        output: the module's output tensor (its first tensor when it returns a tuple); None before a forward.
    """

    path: str
    output: Tensor | None = None


def _first_tensor(output: Any) -> tuple[Tensor, int | None]:
    if isinstance(output, Tensor):
        return output, None
    if isinstance(output, (tuple, list)):
        for i, item in enumerate(output):
            if isinstance(item, Tensor):
                return item, i
    raise TypeError(f"the hooked module returned {type(output).__name__}, which holds no tensor")


@contextmanager
def capture_output(model: nn.Module, path: str) -> Iterator[Capture]:
    """Record the output of ``model.<path>`` in each forward pass while the context is open.

    An output that does not require grad (a frozen encoder fed plain images) is replaced by a detached copy that
    does, so :func:`gradients` can always differentiate with respect to it.

    Args:
        model: the model to hook.
        path: dotted module path (``vision.backbone.layer4``).

    Yields:
        The :class:`Capture` filled in by each forward pass; the hook is removed on exit, even after an error.
    """
    module = resolve_module(model, path)
    capture = Capture(path)

    def hook(_: nn.Module, __: Any, output: Any) -> Any:
        tensor, index = _first_tensor(output)
        replaced = tensor if tensor.requires_grad else tensor.detach().requires_grad_(True)
        capture.output = replaced
        if replaced is tensor:
            return None
        if index is None:
            return replaced
        items = list(output)
        items[index] = replaced
        return type(output)(items)

    handle = module.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()
        capture.output = None


def gradients(score: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    """Gradients of ``score.sum()`` with respect to ``tensors`` (zeros where a tensor does not reach it).

    Uses ``torch.autograd.grad``: parameters' ``.grad`` stay untouched and the backward stops at ``tensors``.

    Args:
        score: (B,) one scalar per example; examples are independent in eval mode, so the sum's gradient holds
            each example's own gradient.
        tensors: activations captured in the same forward pass.

    Returns:
        One gradient per tensor, same shape and dtype.
    """
    grads = torch.autograd.grad(score.sum(), tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


def hook_count(model: nn.Module) -> int:
    """How many forward, forward-pre and backward hooks are registered on ``model``'s modules (for leak checks)."""
    return sum(registered_hooks(module) for module in model.modules())


@contextmanager
def explain_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, gradients on and every parameter differentiable for the duration; restored on exit.

    Each module's own ``training`` flag and each parameter's ``requires_grad`` are put back as they were (a frozen
    encoder stays frozen and in eval afterwards). Gradients are taken with ``torch.autograd.grad``, so no
    parameter's ``.grad`` changes.
    """
    training = {module: module.training for module in model.modules()}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    if any(training.values()):
        model.eval()
    for p in frozen:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield model
    finally:
        for p in frozen:
            p.requires_grad_(False)
        for module, flag in training.items():
            if module.training != flag:  # only what changed: a model explained in eval mode is left untouched
                module.training = flag
