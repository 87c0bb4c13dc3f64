"""medseg: segmentation of tiny medical targets, with numbers that cannot lie."""

__version__ = "0.1.0"
