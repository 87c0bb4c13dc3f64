"""The run report: plots and small tables from a run folder, as report.html and report.md.

`build_report(run_dir)` (re)writes runs/NAME/report.html (self-contained: images embedded,
inline CSS, no JavaScript), runs/NAME/report.md and the PNGs it references in
runs/NAME/report_assets/. The report is derived from the run folder, so rewriting it is safe.
`comparison` renders `medseg compare`'s result through the same HTML and Markdown renderers.
"""

__all__ = ["build_report"]


def __getattr__(name: str):
    # loaded on first use: the report pulls in matplotlib and torch, which `medseg compare` does not need
    if name == "build_report":
        from medseg.report.build import build_report

        return build_report
    raise AttributeError(f"module 'medseg.report' has no attribute {name!r}")
