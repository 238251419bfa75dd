"""Lightning orchestration (the only package, with the data module and the CLI, that imports Lightning)."""

from mmfuse.training.callbacks import EMAWeights, EncoderFreezeSchedule, RunSummary
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
from mmfuse.training.loggers import ResumableCSVLogger, TrackersConfig, build_trackers
from mmfuse.training.optim import param_groups
from mmfuse.training.precision import GradScalerMonitor, NonFiniteLossError, NonFiniteLossGuard
from mmfuse.training.predictions import PredictionWriter
from mmfuse.training.provenance import Provenance

__all__ = [
    "AtomicCheckpointIO",
    "EMAWeights",
    "EncoderFreezeSchedule",
    "FusionLitModule",
    "GradScalerMonitor",
    "LastCheckpoint",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "PredictionWriter",
    "Provenance",
    "ResumableCSVLogger",
    "RngState",
    "RunSummary",
    "TrackersConfig",
    "UnsafeCheckpointError",
    "build_trackers",
    "check_checkpoint_matches",
    "check_output_dir",
    "param_groups",
    "safe_load",
]
