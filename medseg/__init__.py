"""medseg: segmentation of tiny medical targets, with numbers that cannot lie.

The Python API (`medseg.api`): `medseg.fit(config)`, `medseg.load(run)` -> a predictor,
`medseg.evaluate(run)`, `medseg.export(run)`; `medseg.metrics` scores arrays under an
explicit contract. They are loaded on first use, so `import medseg` stays light.
"""

from importlib import import_module

__version__ = "0.2.0"

_API = ("fit", "load", "evaluate", "export", "Predictor", "Prediction")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module("medseg.api"), name)
    if name == "metrics":  # `import medseg; medseg.metrics.score(...)` without importing the submodule first
        return import_module("medseg.metrics")
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")
