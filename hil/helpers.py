"""What the HIL tests share: modes, a long lease, motor speeds, refusal codes, waiting."""

import os
import sys

import pytest

from capshared.limits import MODE_CONFIGURE, MODE_EXECUTE, MODE_READ, MODE_WRITE
from capwarden.errors import DeviceError

_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if _TESTS not in sys.path:   # `pytest hil` alone: tests/conftest.py, which adds it, is not loaded
    sys.path.insert(0, _TESTS)
from eventloop import loop_runner, wait_until  # noqa: E402,F401 (shared with tests/)

R, W, X, C = MODE_READ, MODE_WRITE, MODE_EXECUTE, MODE_CONFIGURE
LONG = 60000   # a lease no test outlives: ms


def speed(v):
    """A motor speed as the sim board's motors take it (op 1) and report it (op 2)."""
    return int(v).to_bytes(2, "little", signed=True)


def code_of(run, coro):
    """The device code name of the DeviceError `coro` raises (and fail if it raises none)."""
    with pytest.raises(DeviceError) as exc:
        run(coro)
    return exc.value.code


def of_type(events, kind):
    return [e for e in events if isinstance(e, kind)]
