"""What the notebooks share: find the repository, train an experiment briefly into a real run directory, load a
trained model with examples of its data (image, question, label and the boxes of the objects the question is
about), and draw examples with their answers.

Lightning, ``datasets`` and matplotlib are imported inside the functions that need them, never when this module
is imported (``mmfuse`` exports it).

Example (from anywhere inside the repository)::

    run = train_briefly(repo_root() / "experiments/notebook_tiny.yaml", "/tmp/runs")
    examples = load_examples(run.model_dir, n=16)
    predictions = examples.logits().argmax(dim=-1)
    examples_figure(examples.batch.images, examples.texts, predictions, examples.labels, examples.class_names)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmfuse.errors import ConfigError
from mmfuse.types import Batch

__all__ = ["BriefRun", "ModelExamples", "examples_figure", "load_examples", "repo_root", "train_briefly"]


def repo_root(start: str | Path | None = None) -> Path:
    """The mmfuse repository: the first of ``start`` and its parents that holds ``experiments/`` and
    ``pyproject.toml``, else the checkout this package was installed from in editable mode.

    Args:
        start: where to start looking; None = the working directory (a notebook's own folder under Jupyter).

    Returns:
        The repository's root folder.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[1]):
        if (folder / "experiments").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    raise ConfigError(f"no mmfuse repository (a folder with experiments/ and pyproject.toml) at or above {here}")


@dataclasses.dataclass
class BriefRun:
    """A finished training run, laid out as ``mmfuse fit`` lays it out.

    Attributes:
        cli: the :class:`~mmfuse.training.cli.MMFuseCLI` it ran with (``.model``, ``.datamodule``, ``.trainer``,
            ``.config``).
        run_dir: ``<root>/version_N``: ``config.yaml``, ``metrics.csv``, ``provenance.json``, ``checkpoints/``.
        model_dir: ``run_dir / "model"``, the best checkpoint's model as a ``save_pretrained`` directory.
        metrics: the trainer's metrics after the last validation (e.g. ``val/acc``), as floats.
        seconds: wall time of ``fit``, data preparation included.
    """

    cli: Any
    run_dir: Path
    model_dir: Path
    metrics: dict[str, float]
    seconds: float


def train_briefly(experiment: str | Path, root_dir: str | Path, overrides: Sequence[str] = ()) -> BriefRun:
    """Train an experiment in this process, as ``mmfuse fit --config experiment`` would, into ``root_dir``.

    The run gets the same checks before fit, the same run directory (resolved config, metrics, checkpoints,
    provenance) and the same ``model/`` directory after it as a ``mmfuse fit`` run.

    Args:
        experiment: an experiment YAML, e.g. ``experiments/notebook_tiny.yaml``.
        root_dir: ``trainer.default_root_dir``: the run directory is ``root_dir/version_N``.
        overrides: command-line style overrides, e.g. ``["--trainer.max_steps=20"]``.

    Returns:
        The finished run.
    """
    from mmfuse.training.cli import build_from_config  # imports Lightning

    cli = build_from_config(experiment, [*overrides, f"--trainer.default_root_dir={root_dir}"])
    start = time.perf_counter()
    cli.before_fit()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.after_fit()  # writes <run>/model and prints the run summary
    seconds = time.perf_counter() - start
    log_dir = cli.trainer.log_dir
    model_dir = Path(log_dir or root_dir) / "model"
    if log_dir is None or not (model_dir / "config.json").is_file():
        raise RuntimeError(f"the run under {root_dir} wrote no model/: it needs a logger and at least one checkpoint")
    run_dir = Path(log_dir)
    metrics = {name: float(value) for name, value in cli.trainer.callback_metrics.items() if value.numel() == 1}
    return BriefRun(cli=cli, run_dir=run_dir, model_dir=model_dir, metrics=metrics, seconds=seconds)


@dataclasses.dataclass
class ModelExamples:
    """A trained model in eval mode with examples of a split of its data.

    Attributes:
        model: the :class:`~mmfuse.models.ImageTextModel`.
        tokenizer: its tokenizer.
        class_names: label names, index-aligned with the logits.
        batch: the B examples: images (B, 3, H, W) in [0, 1], input_ids / attention_mask (B, L), labels (B,).
        boxes: per example the (K, 4) xyxy pixel boxes of the objects the question is about.
        texts: the B questions as written.
        indices: the examples' positions in the split.
        split: the split's name.
    """

    model: Any
    tokenizer: Any
    class_names: tuple[str, ...]
    batch: Batch
    boxes: list[Tensor]
    texts: list[str]
    indices: list[int]
    split: str

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def labels(self) -> Tensor:
        """(B,) true classes."""
        assert self.batch.labels is not None, "the collated rows carry labels"
        return self.batch.labels

    def tokens(self, row: int) -> list[str]:
        """The real (unpadded) tokens of example ``row``, as the tokenizer writes them."""
        ids = self.batch.input_ids[row][self.batch.attention_mask[row]]
        return list(self.tokenizer.convert_ids_to_tokens(ids.tolist()))

    def subset(self, rows: Sequence[int]) -> ModelExamples:
        """The examples at positions ``rows`` (of this set, not of the split), in that order."""
        picked = torch.as_tensor(list(rows), dtype=torch.long)
        batch = Batch(
            self.batch.images[picked],
            self.batch.input_ids[picked],
            self.batch.attention_mask[picked],
            self.labels[picked],
        )
        return dataclasses.replace(
            self,
            batch=batch,
            boxes=[self.boxes[i] for i in picked.tolist()],
            texts=[self.texts[i] for i in picked.tolist()],
            indices=[self.indices[i] for i in picked.tolist()],
        )

    @torch.no_grad()
    def logits(self, batch_size: int = 64) -> Tensor:
        """(B, K) class scores of the model on every example, on the CPU."""
        device = next(self.model.parameters()).device
        scores = []
        for start in range(0, len(self.batch), batch_size):
            rows = slice(start, start + batch_size)
            chunk = Batch(self.batch.images[rows], self.batch.input_ids[rows], self.batch.attention_mask[rows])
            chunk = chunk.to(device)
            scores.append(self.model(chunk.images, chunk.input_ids, chunk.attention_mask).logits.float().cpu())
        return torch.cat(scores)


def load_examples(
    model: str | Path,
    *,
    split: str = "val",
    n: int = 64,
    index: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    device: str = "cpu",
) -> ModelExamples:
    """Load a trained model and examples of the data it was trained on, checked as ``mmfuse explain`` checks them.

    Args:
        model: a checkpoint written by ``mmfuse fit`` (``<run>/checkpoints/*.ckpt``) or a ``save_pretrained``
            directory inside a run directory (``<run>/model``); the data comes from the run's ``config.yaml``.
        split: ``val``, ``test``, ``train`` or ``shift``.
        n: take the first ``n`` examples of the split.
        index: take these positions of the split instead.
        overrides: config overrides as in ``mmfuse fit``, e.g. ``["--data.cache_dir", "/tmp/cache"]``.
        device: ``cpu`` or ``cuda``.

    Returns:
        The model and the examples.
    """
    from mmfuse.commands import explain as explain_command
    from mmfuse.data import ImageTextCollator

    path = Path(model)
    if path.is_dir():
        argv = ["--model", str(path)]
    elif path.is_file():
        argv = ["--ckpt", str(path), "--config", str(path.resolve().parent.parent / "config.yaml")]
    else:
        raise ConfigError(f"model {str(model)!r}: no such checkpoint file or save_pretrained directory")
    argv += ["--split", split, "--n", str(n), "--device", device]
    argv += ["--index", *map(str, index)] if index is not None else []
    parser = argparse.ArgumentParser(prog="load_examples")
    explain_command.add_arguments(parser)
    # NOTE: the command requires an output folder; preparing the inputs writes nothing there.
    args = parser.parse_args([*argv, "--out", os.devnull])
    args.overrides = list(overrides)  # as `mmfuse explain` gathers them from its command line
    inputs = explain_command.prepare(args)
    rows = inputs.rows
    batch = ImageTextCollator(inputs.tokenizer)([rows[i] for i in range(rows.num_rows)])
    pairs = zip(rows["boxes"], rows["target_objects"])
    boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4)[list(t)] for b, t in pairs]  # (K, 4) each
    return ModelExamples(
        model=inputs.model,
        tokenizer=inputs.tokenizer,
        class_names=tuple(inputs.class_names),
        batch=batch,
        boxes=boxes,
        texts=list(rows["text"]),
        indices=list(inputs.indices),
        split=split,
    )


def examples_figure(
    images: Tensor,
    questions: Sequence[str],
    predictions: Tensor | Sequence[int] | None,
    labels: Tensor | Sequence[int] | None,
    class_names: Sequence[str],
    *,
    boxes: Sequence[Tensor] | None = None,
    columns: int = 4,
    title: str = "",
) -> Any:
    """Examples in a grid: each image with its question, the prediction and the label (green when right, red
    when wrong), and optionally the boxes of the objects the question is about.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        questions: the B questions.
        predictions: (B,) predicted classes, or None.
        labels: (B,) true classes, or None.
        class_names: class index -> name.
        boxes: per example a (K, 4) xyxy pixel box tensor, drawn in white; None draws none.
        columns: images per row.
        title: figure title.

    Returns:
        A matplotlib Figure on its own Agg canvas (Jupyter shows it; ``fig.savefig(path)`` saves it).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from mmfuse.attribution.viz import to_rgb

    count = int(images.shape[0])
    if len(questions) != count:
        raise ValueError(f"{count} images but {len(questions)} questions")
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    figure = Figure(figsize=(2.6 * columns, 3.1 * rows + (0.4 if title else 0.0)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(ax for row in axes for ax in row):
        ax.set_axis_off()
        if i >= count:
            continue
        ax.imshow(to_rgb(images[i]), interpolation="nearest")
        for x0, y0, x1, y1 in [] if boxes is None else boxes[i].tolist():
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="white", lw=1.5))
        caption = _caption(i, questions[i], predictions, labels, class_names)
        ax.set_title(caption, fontsize=8, color=_colour(i, predictions, labels))
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def _caption(
    i: int,
    question: str,
    predictions: Tensor | Sequence[int] | None,
    labels: Tensor | Sequence[int] | None,
    class_names: Sequence[str],
) -> str:
    """The question wrapped to the image's width, then ``prediction / label``."""
    lines = textwrap.wrap(question, 28)
    answer = []
    if predictions is not None:
        answer.append(f"predicted {_name(class_names, int(predictions[i]))}")
    if labels is not None:
        answer.append(f"label {_name(class_names, int(labels[i]))}")
    return "\n".join([*lines, " · ".join(answer)] if answer else lines)


def _colour(i: int, predictions: Tensor | Sequence[int] | None, labels: Tensor | Sequence[int] | None) -> str:
    if predictions is None or labels is None:
        return "black"
    return "tab:green" if int(predictions[i]) == int(labels[i]) else "tab:red"


def _name(class_names: Sequence[str], index: int) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)
