"""The run report: plots and small tables from a run folder, as report.html and report.md.

`build_report(run_dir)` (re)writes runs/NAME/report.html (self-contained: images embedded,
inline CSS, no JavaScript), runs/NAME/report.md and the PNGs it references in
runs/NAME/report_assets/. The report is derived from the run folder, so rewriting it is safe.
"""

from medseg.report.build import build_report

__all__ = ["build_report"]
