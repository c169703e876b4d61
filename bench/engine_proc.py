"""An engine process for the benchmarks, as `capwarden serve` runs one, in front of a virtual board.

    python -m bench.engine_proc STORE TOKENS_JSON [--line bare|cable] [--sync group|each] [--baud N]

`--line bare`: the host reads the board's pty directly (no cable relay thread), as it reads a USB
serial port, like for like with the raw echo baseline; `cable`: through the virtual cable, as
`serve --board sim` does. `--sync each` turns group commit off (one fdatasync per audit entry,
the engine's behaviour before group commit): the baseline of the throughput figure.

Prints the URL, then answers lines on stdin: "stats" (one JSON object: audit entries and
fdatasync calls so far, CPU seconds), "stop".
"""

import argparse
import asyncio
import json
import os
import sys
import time


async def start(store, tokens, line="bare", sync="group", grants=None, baud=None):
    """Start a board, the engine and its server in this process. Returns (engine, server, stop).

    baud: the board's line paced at this rate by the virtual cable (as a UART board's is), the
    host reading the cable's pty; None for the bare pty."""
    from capwarden.engine.liveness import LivenessPolicy

    liveness = LivenessPolicy(default=(1000, 5000))
    if line == "cable":
        from capwarden.engine.app import EngineApp

        app = EngineApp(store, "127.0.0.1:0", tokens, sim=True, heapsize="2M" if grants else None, sim_grants=grants,
                        liveness=liveness)
        await app.start()
        engine, server, stop = app.engine, app.server, app.stop
    else:
        from capwarden.engine.audit import AuditLog
        from capwarden.engine.authorizer import StoreAuthorizer
        from capwarden.engine.engine import Engine
        from capwarden.engine.server import Server
        from capwarden.link import Board, FdTransport
        from capwarden.sim import VirtualBoard

        from capwarden.link import open_transport

        vb = VirtualBoard(heapsize="2M" if grants else "64K", grants=grants, baud=baud)
        vb.start()
        if baud:
            board = Board(open_transport(vb.port), timeout=0.5, retries=3, key=vb.link_key)
        else:
            board = Board(FdTransport(vb.detach_cable(), "virtual board pty"), timeout=0.5, retries=3, key=vb.link_key)
        await board.open()
        engine = Engine(StoreAuthorizer(store), {board.info.name: board}, AuditLog(os.path.join(store, "audit.log")),
                        liveness=liveness)
        await engine.start()
        server = await Server(tokens, "127.0.0.1:0").start(engine)

        async def stop():
            await server.close()
            await engine.stop()
            await board.close()
            vb.stop()
    if sync == "each":
        engine.audit.group_commit(False)      # the server still awaits durable(): nothing is pending
    return engine, server, stop


async def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("store")
    p.add_argument("tokens")
    p.add_argument("--line", choices=("bare", "cable"), default="bare")
    p.add_argument("--sync", choices=("group", "each"), default="group")
    p.add_argument("--grants", type=int, default=None, help="the board's grant table (default 16, a small board's)")
    p.add_argument("--baud", type=int, default=None, help="pace the board's line (bare line only)")
    a = p.parse_args(argv)
    engine, server, stop = await start(a.store, json.loads(a.tokens), a.line, a.sync, a.grants, a.baud)
    print(server.url, flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "stats":
            print(json.dumps({"entries": engine.audit.seq, "syncs": engine.audit.syncs, "cpu": time.process_time()}),
                  flush=True)
        else:
            break
    await stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
