"""A board whose grant table holds more than 255 grants (a board description may set its own
size): every count the wire carries for it is wide enough. The grant count in HEARTBEAT_R, the
GRANTS listing's total and page start were one byte, so
300 grants read as 44: the engine saw grants missing from the board, reconciled at every
heartbeat and ended 256 healthy, heartbeating sessions as lease_expired (found while measuring;
issue 9: "a table that overflows silently")."""

import asyncio

from capwarden.engine import invariants
from enginerig import runtime

N = 300


def test_more_than_255_grants_keep_their_sessions(world, run, in_process):
    async def scenario():
        app = await in_process(heapsize="2M", sim_grants=N + 8, board_heartbeat_ms=200)
        board = app.boards["sim"]
        a = await runtime(app, "rtA")
        sessions = [await world.take(a, "gps", "read") for _ in range(N)]
        res = board.resource_index("gps")
        assert len(await board.grants(res)) == N                  # every page of the listing
        r = await board.heartbeat(10 ** 6)
        assert r["grants"] == N
        for _ in range(8):                                        # several board heartbeats and sweeps
            await a.heartbeat()
            await asyncio.sleep(0.25)
        ended = [s for s in sessions if s.state != "active"]
        assert not ended, (len(ended), ended[0].changes[-1])
        assert invariants.check(app.engine, app.audit_path) == []
        assert await invariants.check_boards(app.engine) == []
        await a.close()

    run(scenario())
