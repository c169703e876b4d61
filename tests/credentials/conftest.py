"""Fixtures of tests/credentials: they live in credrig.py, which the tests import by that name (a
module named conftest is one per process, so importing from it depends on which folders run)."""

from credrig import *  # noqa: F401,F403
