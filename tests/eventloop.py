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
    yield lambda coro: loop.run_until_complete(asyncio.wait_for(coro, RUN_TIMEOUT_S))
    loop.close()


async def wait_until(pred, seconds=5.0):
    """True as soon as pred() holds, polled every 20 ms (monotonic clock); False after `seconds`.
    Assert the result: a wait that runs out is a failure of its test."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()
