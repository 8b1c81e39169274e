"""The campaign report: `report.md` (GitHub Markdown) and its figures, written from a spec and a status.

    from flopwise.report import write_report
    path = write_report(spec, status, Path("reports/quickstart"), "quickstart")

Importing this package does not import matplotlib (the operator image has none); the figures import it when
they are drawn, and without it the report is still written, saying why each figure is missing.
"""

from __future__ import annotations

from pathlib import Path

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.api.status import TrainingCampaignStatus
from flopwise.report.markdown import render
from flopwise.report.plots import PLOTS, render_all

REPORT_FILE = "report.md"

__all__ = ["PLOTS", "REPORT_FILE", "render", "write_report"]


def write_report(spec: TrainingCampaignSpec, status: TrainingCampaignStatus, out_dir: Path,
                 campaign_name: str) -> Path:
    """Write ``out_dir/report.md`` and its PNG figures (created as needed); returns the Markdown file's path.

    Renders for any valid status, from a bare plan to a finished campaign: what is missing reads "not available".
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = render_all(spec, status, out_dir)
    path = out_dir / REPORT_FILE
    path.write_text(render(spec, status, campaign_name, figures), encoding="utf-8")
    return path
