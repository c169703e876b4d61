"""Fixtures of tests/console live in consolerig.py (imported by that name, as tests/engine does)."""

from consolerig import *  # noqa: F401,F403
