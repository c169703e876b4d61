"""Coroutines from plain test functions, for every suite (tests/ and hil/).

    run = pytest.fixture(loop_runner)          # in a conftest: run(coro) on one loop per test
    assert await wait_until(lambda: done)      # inside a coroutine: poll a condition
"""

import asyncio
import time

RUN_TIMEOUT_S = 60   # generous: the machine has 2 shared cores; a hang still fails


def loop_runner():
    """Fixture body: yields run(coro), which runs coro to completion on a fresh loop kept for
    the whole test (a board opened in a fixture and used in the test share it)."""
    loop = asyncio.new_event_loop()
    try:
        yield lambda coro: loop.run_until_complete(asyncio.wait_for(coro, RUN_TIMEOUT_S))
    finally:
        settle(loop)
        loop.close()


def settle(loop, seconds=10.0):
    """Cancel and finish what a test left on `loop` (a failed assertion skips its own clean-up),
    so a left-over client does not close its socket from another thread after the loop is gone
    ("Event loop is closed", printing a traceback into the next test's time)."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=seconds))
        for t in tasks:
            if t.done() and not t.cancelled():
                t.exception()   # retrieved: the test's own failure already says what went wrong
    loop.run_until_complete(loop.shutdown_asyncgens())


async def wait_until(pred, seconds=5.0):
    """True as soon as pred() holds, polled every 20 ms (monotonic clock); False after `seconds`.
    Assert the result: a wait that runs out is a failure of its test."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()
