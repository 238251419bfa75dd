"""The model report: sections found by file name, missing ones listed as not run, images copied and embedded."""

from __future__ import annotations

from pathlib import Path

from mmfuse.probes.report import SECTIONS, find_sections, write_model_report

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00\x00"
    b"\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _checks(root: Path) -> tuple[Path, Path]:
    audit, probes = root / "audit", root / "probes"
    (probes / "cf").mkdir(parents=True)
    audit.mkdir()
    (audit / "audit.md").write_text("# Dataset audit\n\n## Balance\n\nok\n\n![class shares](class_shares.png)\n")
    (audit / "class_shares.png").write_bytes(PNG)
    (audit / "audit.json").write_text("{}")
    (probes / "cf" / "counterfactual.md").write_text("# Counterfactual invariance\n\nVerdict: **PASS**\n")
    (probes / "robustness.md").write_text("accuracy table\n\n![curves](robustness.png) ![gone](missing.png)\n")
    (probes / "robustness.png").write_bytes(PNG)
    return audit, probes


def test_find_sections_in_directories_and_subdirectories(tmp_path: Path) -> None:
    audit, probes = _checks(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "robustness.md").write_text("older")
    sections = {s.spec.key: s for s in find_sections([audit, probes, tmp_path / "other"])}
    assert [s.key for s in SECTIONS] == ["audit", "baselines", "counterfactual", "robustness", "faithfulness"]
    assert sections["audit"].source == audit / "audit.md" and sections["audit"].data_files == [audit / "audit.json"]
    assert sections["counterfactual"].source == probes / "cf" / "counterfactual.md"
    assert sections["robustness"].source == probes / "robustness.md"
    assert sections["robustness"].others == [tmp_path / "other" / "robustness.md"]
    assert sections["baselines"].source is None and sections["faithfulness"].source is None


def test_report_lists_missing_checks_and_embeds_images(tmp_path: Path) -> None:
    audit, probes = _checks(tmp_path)
    out = tmp_path / "report"
    md_path, html_path = write_model_report(
        out, checkpoint={"path": "/runs/v0/checkpoints/best.ckpt", "epoch": 2, "classes": ["red", "blue"]},
        config_text="model:\n  width: 32\n", config_path="exp.yaml",
        provenance={"git": {"commit": "abc123"}, "seed": 0}, provenance_path="/runs/v0/provenance.json",
        sections=find_sections([audit, probes]),
    )  # fmt: skip
    markdown = md_path.read_text()
    assert markdown.startswith("# Model report: best.ckpt")
    assert "| Baseline ladder | not run | `mmfuse baselines --config C --out DIR` |" in markdown
    assert "## Faithfulness of explanations\n\n**Not run.**" in markdown
    assert "| Dataset audit | included |" in markdown and "### Balance" in markdown  # headings one level down
    assert "## Robustness outside the lab\n\naccuracy table" in markdown  # a file without a title gets one
    assert "![class shares](assets/audit/class_shares.png)" in markdown and "*(missing image: missing.png)*" in markdown
    assert (out / "assets" / "audit" / "class_shares.png").read_bytes() == PNG
    assert "[audit.json](assets/audit/audit.json)" in markdown and "| git commit | abc123 |" in markdown
    assert "```yaml\nmodel:\n  width: 32\n```" in markdown and '| classes | ["red", "blue"] |' in markdown
    page = html_path.read_text()
    assert (
        page.count('src="data:image/png;base64,') == 2 and "<table>" in page and "assets/audit/class_shares" not in page
    )


def test_report_without_provenance_or_checks(tmp_path: Path) -> None:
    md_path, _ = write_model_report(
        tmp_path, checkpoint={"path": "x.ckpt"}, config_text="{}", config_path="c.yaml", provenance=None,
        provenance_path="/runs/v0", sections=find_sections([]),
    )  # fmt: skip
    markdown = md_path.read_text()
    assert "No `provenance.json` found (looked in `/runs/v0`)." in markdown
    assert markdown.count("| not run |") == len(SECTIONS) and markdown.count("**Not run.**") == len(SECTIONS)
