"""One model report: what is known about a checkpoint (its config and provenance) and every check that was run on it
(dataset audit, baseline ladder, counterfactual invariance, robustness, faithfulness of explanations), gathered from
the Markdown files those commands write, into ``report.md`` (images copied next to it) and a self-contained
``report.html`` (images embedded). A check whose file is not found is listed as "not run", with the command that
runs it.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfuse.io import write_atomic
from mmfuse.tables import format_table

__all__ = ["SECTIONS", "Section", "SectionSpec", "find_sections", "write_model_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SectionSpec:
    """A kind of check the report knows.

    Attributes:
        key: short name (``--run`` uses it).
        title: section title.
        filename: the Markdown file its command writes.
        command: how to run it, shown when it was not run.
        data_files: machine-readable files written beside it, linked from the report.
    """

    key: str
    title: str
    filename: str
    command: str
    data_files: tuple[str, ...] = ()


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("audit", "Dataset audit", "audit.md", "mmfuse audit --config C --ckpt K --out DIR", ("audit.json",)),
    SectionSpec(
        "baselines", "Baseline ladder", "baselines.md", "mmfuse baselines --config C --out DIR", ("baselines.json",)
    ),  # fmt: skip
    SectionSpec(
        "counterfactual",
        "Counterfactual invariance",
        "counterfactual.md",
        "mmfuse probe counterfactual --config C --ckpt K --out DIR",
        ("counterfactual.json",),
    ),  # fmt: skip
    SectionSpec(
        "robustness",
        "Robustness outside the lab",
        "robustness.md",
        "mmfuse probe robustness --config C --ckpt K --out DIR",
        ("robustness.json",),
    ),  # fmt: skip
    SectionSpec(
        "faithfulness",
        "Faithfulness of explanations",
        "faithfulness.md",
        "mmfuse explain --config C --ckpt K --out DIR --evaluate",
        ("faithfulness.json",),
    ),  # fmt: skip
)
"""The checks a model report gathers, in report order."""

_IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,5}) ", re.MULTILINE)


@dataclass
class Section:
    """One check of the report.

    Attributes:
        spec: which check.
        source: the Markdown file found, or None when the check was not run.
        others: further files of the same name that were not used (an earlier ``--from`` directory wins).
        data_files: the machine-readable files found beside it.
    """

    spec: SectionSpec
    source: Path | None = None
    others: list[Path] = field(default_factory=list)
    data_files: list[Path] = field(default_factory=list)


def find_sections(directories: Sequence[str | Path]) -> list[Section]:
    """Look for each check's file in ``directories`` and their direct subdirectories (the first found wins)."""
    sections = []
    for spec in SECTIONS:
        found = [p for d in map(Path, directories) for p in _candidates(d, spec.filename)]
        section = Section(spec, found[0] if found else None, found[1:])
        if section.source is not None:
            beside = [section.source.parent / name for name in spec.data_files]
            section.data_files = [p for p in beside if p.is_file()]
        sections.append(section)
    return sections


def _candidates(directory: Path, filename: str) -> list[Path]:
    direct = directory / filename
    nested = sorted(p / filename for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []
    return [p for p in [direct, *nested] if p.is_file()]


def write_model_report(
    out_dir: str | Path,
    *,
    checkpoint: Mapping[str, Any],
    config_text: str,
    config_path: str,
    provenance: Mapping[str, Any] | None,
    provenance_path: str | None,
    sections: Sequence[Section],
) -> tuple[Path, Path]:
    """Write ``report.md`` (with images under ``assets/``) and ``report.html`` (images embedded) into ``out_dir``.

    Args:
        out_dir: output directory (created).
        checkpoint: facts about the checkpoint, shown as a table (path, size, epoch, step, model, classes...).
        config_text: the experiment config as given (YAML text).
        config_path: where it came from.
        provenance: the run's ``provenance.json`` content, or None when there is none.
        provenance_path: where it was looked for.
        sections: the checks, found or not (see :func:`find_sections`).

    Returns:
        The paths of ``report.md`` and ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f"Model report: {Path(str(checkpoint.get('path', 'model'))).name}"
    parts = [f"# {title}", "", *_summary(sections), "", "## Checkpoint", "", *_table(checkpoint)]
    parts += ["", "## Configuration", "", f"From `{config_path}`:", "", "```yaml", config_text.rstrip(), "```"]
    parts += ["", "## Provenance", "", *_provenance(provenance, provenance_path)]
    images: dict[str, Path] = {}
    for section in sections:
        parts += ["", *_section(section, out, images)]
    markdown = "\n".join(parts) + "\n"
    md_path, html_path = out / "report.md", out / "report.html"
    write_atomic(md_path, markdown)
    write_atomic(html_path, _html(title, markdown, images))
    return md_path, html_path


def _summary(sections: Sequence[Section]) -> list[str]:
    rows = [
        [s.spec.title, "not run", f"`{s.spec.command}`"]
        if s.source is None
        else [s.spec.title, "included", f"`{s.source}`"]
        for s in sections
    ]
    return [format_table(["check", "status", "source"], rows, "md")]


def _table(facts: Mapping[str, Any]) -> list[str]:
    rows = [[key, json.dumps(value) if isinstance(value, dict | list) else value] for key, value in facts.items()]
    return [format_table(["", ""], [row for row in rows if row[1] is not None], "md")]


def _provenance(provenance: Mapping[str, Any] | None, path: str | None) -> list[str]:
    if provenance is None:
        return [f"No `provenance.json` found (looked in `{path}`)." if path else "No run directory to look in."]
    git = provenance.get("git") or {}
    facts = {
        "created": provenance.get("created"),
        "command": " ".join(provenance.get("argv") or []) or None,
        "git commit": git.get("commit") or git.get("error"),
        "git branch": git.get("branch"),
        "uncommitted changes": git.get("dirty"),
        "seed": provenance.get("seed"),
        "data fingerprint": provenance.get("data_fingerprint"),
        "hardware": provenance.get("hardware"),
        "packages": provenance.get("packages"),
    }
    return [f"From `{path}`:", "", *_table(facts)]


def _section(section: Section, out: Path, images: dict[str, Path]) -> list[str]:
    spec = section.spec
    if section.source is None:
        return [f"## {spec.title}", "", f"**Not run.** Run it with `{spec.command}` and pass its directory to --from."]
    text = section.source.read_text(encoding="utf-8")
    text = _HEADING.sub(lambda m: "#" + m.group(1) + " ", text)  # the section's own headings one level down
    if not text.lstrip().startswith("## "):
        text = f"## {spec.title}\n\n{text}"

    def relink(match: re.Match[str]) -> str:
        alt, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:", target):  # a URL or data URI: leave it
            return match.group(0)
        image = (section.source.parent / target).resolve()  # type: ignore[union-attr]
        if not image.is_file():
            log.warning("%s links a missing image %s", section.source, target)
            return f"*(missing image: {target})*"
        copy = Path("assets") / spec.key / image.name
        (out / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, out / copy)
        images[copy.as_posix()] = out / copy
        return f"![{alt}]({copy.as_posix()})"

    lines = [_IMAGE_LINK.sub(relink, text).rstrip(), "", f"*Source: `{section.source}`.*"]
    for data_file in section.data_files:
        copy = Path("assets") / spec.key / data_file.name
        (out / copy).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_file, out / copy)
        lines.append(f"*Data: [{data_file.name}]({copy.as_posix()}).*")
    if section.others:
        lines.append(f"*Also found and not used: {', '.join(f'`{p}`' for p in section.others)}.*")
    return lines


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; vertical-align: top; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
"""


def _html(title: str, markdown_text: str, images: Mapping[str, Path]) -> str:
    """The report as one HTML page, images embedded as data URIs."""
    import markdown  # only the HTML page needs it

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    for link, path in images.items():
        uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
        body = body.replace(f'src="{link}"', f'src="{uri}"')
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
