"""Device logic tests: every test_ of tests/device/mp_*.py runs under the MicroPython unix port,
importing exactly the firmware a board gets (mpharness.firmware_path)."""

import glob
import os

import pytest

import mpharness

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [(os.path.basename(p), name) for p in sorted(glob.glob(os.path.join(HERE, "mp_*.py")))
         for name in mpharness.collect(p)]


@pytest.mark.micropython
@pytest.mark.parametrize("module,name", CASES, ids=["%s::%s" % c for c in CASES])
def test_on_micropython(module, name):
    # Tests named for the 64 KB budget run precompiled, in 64 KB plus what their rig occupies
    # beside the agent (mpharness.budget_heap): the agent has the room a board gives it.
    small = "64k" in name
    board = module[len("mp_board_"):-3] if module.startswith("mp_board_") else "sim"
    path = os.path.join(HERE, module)
    heap = mpharness.budget_heap(path, board=board) if small else "256K"
    failure = mpharness.run(path, name, heapsize=heap, timeout=120, compiled=small,
                            paths=mpharness.firmware_path(board))
    assert failure is None, failure
