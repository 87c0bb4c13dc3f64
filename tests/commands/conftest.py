"""Fixtures the command tests share with the data tests."""

from tests.data.conftest import one_line  # noqa: F401 — re-exported as a fixture here
