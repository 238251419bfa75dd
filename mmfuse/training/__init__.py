"""Lightning orchestration (the only package, with the data module and the CLI, that imports Lightning)."""

from mmfuse.training.callbacks import RunSummary
from mmfuse.training.lit_module import FusionLitModule

__all__ = ["FusionLitModule", "RunSummary"]
