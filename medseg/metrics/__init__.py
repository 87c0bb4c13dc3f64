"""Metrics under an explicit contract: per case, summarised, swept over thresholds, from folders."""

from importlib import import_module

from medseg.metrics.contract import METRICS_VERSION, MetricContract

# The config schema imports this package for MetricContract; the functions pull in scipy
# and are loaded on first use so that reading a config stays fast.
_LAZY = {
    "case_metrics": "medseg.metrics.cases",
    "summarize": "medseg.metrics.summary",
    "threshold_sweep": "medseg.metrics.sweep",
    "sweep_cases": "medseg.metrics.sweep",
    "score_folders": "medseg.metrics.folders",
    "score_validation": "medseg.metrics.validation",
    "score": "medseg.metrics.validation",
    "image_contract": "medseg.metrics.validation",
    "volume_metrics": "medseg.metrics.validation",
}

__all__ = ["METRICS_VERSION", "MetricContract", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medseg.metrics' has no attribute {name!r}")
