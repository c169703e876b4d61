"""`capwarden demo`: the main job on the virtual board, narrated for a newcomer."""

import argparse
import asyncio
import statistics

from capwarden.cli._common import err

HELP = """\
Run the demonstration on the virtual board: start real MicroPython on a pseudo-terminal,
deploy the agent with mpremote, and let the host talk to it over the serial line: its
announcement, its resource table, round-trip times, and a fault on the virtual cable that
the link survives. No hardware and no set-up beyond `make demo`.
"""


def register(sub):
    p = sub.add_parser("demo", help="run the demonstration on the virtual board", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--heapsize", default=None, help="virtual board heap (default: the smallest board's, 64K)")
    p.set_defaults(func=main)


def step(text):
    print("\n== " + text, flush=True)


async def _talk(vb):
    from capwarden.link import open_board
    from capwarden.sim import TO_BOARD, TO_HOST

    step("The host opens %s with pyserial and says HELLO" % vb.port)
    board = await open_board(vb.port)
    info = board.info
    print("board %r, agent %s, protocol %d, boot id %08x" % (info.name, info.agent_version, info.protocol, info.boot_id))
    step("The board's resources (from its board description, boards/%s)" % info.name)
    for r in info.resources:
        print("  %-2d %-12s %-8s %s" % (r.index, r.name, r.cls, r.state))
    step("Ping: round trip through the virtual cable, and the board's heap")
    pings = [await board.ping() for _ in range(50)]
    rtts = [p["rtt_s"] * 1000 for p in pings]
    print("50 pings: median %.3f ms, max %.3f ms; heap %d bytes free of %d" % (
        statistics.median(rtts), max(rtts), pings[-1]["mem_free"], pings[-1]["mem_free"] + pings[-1]["mem_alloc"]))
    step("Faults on the cable: a corrupted request, a lost answer, line noise")
    vb.cable.inject(TO_BOARD, "corrupt")
    await board.ping()
    vb.cable.inject(TO_HOST, "drop")
    await board.ping()
    vb.cable.inject_bytes(TO_BOARD, b"\x13\x37 noise \x00")
    await board.ping()
    st = await board.stats()
    print("the host retried with the same request id; the board counted %d bad CRC, %d bad frames, "
          "and replayed %d answer(s) instead of running a request twice" % (st["bad_crc"], st["bad_frame"], st["replayed"]))
    await board.close()


def main(args):
    from capwarden.sim import DEFAULT_HEAP, VirtualBoard

    step("Starting the virtual board: MicroPython unix port, agent deployed with mpremote")
    vb = VirtualBoard(heapsize=args.heapsize or DEFAULT_HEAP, progress=print)
    vb.start()
    try:
        asyncio.run(_talk(vb))
    finally:
        vb.stop()
    step("Done: the virtual board is stopped")
    return 0
