"""The chaos schedules share one virtual board per pytest process (rig.shared_board)."""

import pytest

from .rig import shared_board


@pytest.fixture(scope="session", autouse=True)
def _stop_the_shared_board():
    yield
    shared_board().stop()
