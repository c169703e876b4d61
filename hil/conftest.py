"""The HIL bench: one suite, the virtual board by default, a real board with --port.

    pytest hil                         # virtual board (MicroPython unix port on a pty)
    pytest hil --port /dev/ttyACM0     # the same tests against a flashed real board

Fixtures:
  board_port  the device address (a fresh virtual board per test unless --port)
  vboard      the VirtualBoard object; tests that need the virtual cable or unplug/reset use
              it and are skipped, with the reason, on a real board
  board       an opened capwarden.link.Board (async), closed after the test
  events      the list of events `board` reported, from the test's start
  run         run(coro) on the test's event loop (the board's)
Helpers (modes, speeds, refusal codes, waiting): hil/helpers.py.

A test may be `async def`: it runs on the `run` fixture's loop, the one its board was opened on.
"""

import inspect

import pytest

from capwarden.link import open_board
from hil.helpers import loop_runner


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    if "run" not in pyfuncitem.funcargs:
        raise pytest.UsageError("%s is async: it needs the board (or run) fixture, whose loop it runs on"
                                % pyfuncitem.name)
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    pyfuncitem.funcargs["run"](pyfuncitem.obj(**args))
    return True


def pytest_addoption(parser):
    parser.addoption("--port", default=None, help="run the HIL suite against the board on this port")
    parser.addoption("--heapsize", default=None, help="virtual board heap (default: the smallest board's)")


@pytest.fixture
def vboard(request):
    if request.config.getoption("--port"):
        pytest.skip("needs the virtual board (cable faults, unplug, reset); a real board was given with --port")
    from capwarden.sim import DEFAULT_HEAP, VirtualBoard

    vb = VirtualBoard(heapsize=request.config.getoption("--heapsize") or DEFAULT_HEAP)
    vb.start()
    yield vb
    vb.stop()


@pytest.fixture
def board_port(request):
    port = request.config.getoption("--port")
    if port:
        yield port
        return
    vb = request.getfixturevalue("vboard")
    yield vb.port


# run(coro): a coroutine to completion on the test's loop (tests stay plain functions).
run = pytest.fixture(loop_runner, name="run")


@pytest.fixture
def board(board_port, run):
    b = run(open_board(board_port, timeout=0.5, retries=3))
    yield b
    run(b.close())


@pytest.fixture
def events(board):
    """Every event `board` reports during the test, in order."""
    seen = []
    board.subscribe(seen.append)
    return seen
