"""Lightning orchestration (the only package, with the data module and the CLI, that imports Lightning)."""

from mmfuse.training.callbacks import RunSummary
from mmfuse.training.checkpointing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    RngState,
    UnsafeCheckpointError,
    check_checkpoint_matches,
    check_output_dir,
    safe_load,
)
from mmfuse.training.lit_module import FusionLitModule
from mmfuse.training.precision import GradScalerMonitor, NonFiniteLossError, NonFiniteLossGuard
from mmfuse.training.provenance import Provenance

__all__ = [
    "AtomicCheckpointIO",
    "FusionLitModule",
    "GradScalerMonitor",
    "LastCheckpoint",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "Provenance",
    "RngState",
    "RunSummary",
    "UnsafeCheckpointError",
    "check_checkpoint_matches",
    "check_output_dir",
    "safe_load",
]
