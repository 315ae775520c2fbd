"""Reports: self-contained HTML (jinja2, autoescaped) and PNG plots (matplotlib Agg).

``write_report`` and ``Section`` are imported here; plotting lives in ``obliviate.report.plots``
(imported on demand, since matplotlib is slow to load).
"""

from obliviate.report.html import Section, render_report, write_report

__all__ = ["Section", "render_report", "write_report"]
