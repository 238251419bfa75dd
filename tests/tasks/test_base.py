"""The objective registry covers every task a model config can name."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from mmfuse.config import ModelConfig, Task
from mmfuse.errors import ConfigError
from mmfuse.tasks import TASKS, build_objective


def test_every_task_has_an_objective() -> None:
    assert sorted(TASKS.names()) == sorted(typing.get_args(Task))


def test_an_unknown_task_is_named() -> None:
    cfg = dataclasses.replace(ModelConfig(), task="captioning")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="captioning"):
        build_objective(cfg)
