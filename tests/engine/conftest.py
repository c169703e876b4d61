"""Fixtures of tests/engine: they live in enginerig.py, which the tests import by that name (a
module named conftest is one per process, so importing from it depends on which folders run)."""

from enginerig import *  # noqa: F401,F403
