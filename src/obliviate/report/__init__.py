"""Reports: self-contained HTML (jinja2, autoescaped) and PNG plots (matplotlib Agg).

``write_report`` and ``Section`` build a page; ``build_report`` / ``write_run_report`` /
``write_comparison_report`` build one from run folders (``obliviate report``). Plotting lives in
``obliviate.report.plots`` (imported on demand, since matplotlib is slow to load).
"""

from obliviate.report.html import Section, render_report, write_report
from obliviate.report.run_folder import Run, collect_run
from obliviate.report.run_report import build_report, write_comparison_report, write_run_report

__all__ = [
    "Section", "render_report", "write_report", "Run", "collect_run", "build_report", "write_comparison_report",
    "write_run_report",
]
