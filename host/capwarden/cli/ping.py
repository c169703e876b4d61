"""`capwarden ping`: round-trip time and the board's announcement."""

import argparse
import json
import statistics

from capwarden.cli._common import board_port, err, run

HELP = """\
Ping the CAP agent on a board: prints its announcement (agent version, board, boot id), its
resource table, free heap, and round-trip times.

examples:
  capwarden ping --port /dev/ttyACM0
  capwarden ping --port sim --count 50          # start a virtual board just for this
  capwarden ping --port socket://192.0.2.1:2217 --json
"""


def register(sub):
    p = sub.add_parser("ping", help="ping a board and show its resources", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="device: a serial port, any pyserial URL, ble://ADDR, or 'sim'")
    p.add_argument("--count", type=int, default=10, help="pings to send (default 10)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each answer (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", action="store_true", help="print every frame sent and received (stderr)")
    p.set_defaults(func=main)


async def _ping(port, count, timeout):
    from capwarden.link import open_board

    board = await open_board(port, timeout=timeout)
    try:
        results = [await board.ping() for _ in range(max(1, count))]
        return board.info, results
    finally:
        await board.close()


def main(args):
    if args.trace:
        import logging

        logging.basicConfig(format="%(relativeCreated)8.1f ms %(message)s")
        logging.getLogger("capwarden.link").setLevel(logging.DEBUG)
    if args.count < 1:
        err("--count must be at least 1")
        return 2
    with board_port(args.port, quiet=args.json) as port:
        info, results = run(_ping(port, args.count, args.timeout))
    rtts = [r["rtt_s"] * 1000 for r in results]
    last = results[-1]
    if args.json:
        print(json.dumps({
            "board": info.name, "agent_version": info.agent_version, "boot_id": info.boot_id,
            "protocol": info.protocol, "resources": [vars(r) for r in info.resources],
            "mem_free": last["mem_free"], "mem_alloc": last["mem_alloc"], "uptime_ms": last["uptime_ms"],
            "rtt_ms": {"min": min(rtts), "median": statistics.median(rtts), "max": max(rtts)}, "count": len(rtts),
        }))
        return 0
    print("board %s, agent %s, protocol %d, boot id %08x, up %.1f s" % (
        info.name, info.agent_version, info.protocol, info.boot_id, last["uptime_ms"] / 1000))
    print("heap: %d bytes free, %d in use" % (last["mem_free"], last["mem_alloc"]))
    print("resources:")
    for r in info.resources:
        print("  %-2d %-14s %-8s %-8s modes: %s" % (r.index, r.name, r.cls, r.state, ",".join(r.modes)))
    print("%d pings: round trip min %.3f ms, median %.3f ms, max %.3f ms" % (
        len(rtts), min(rtts), statistics.median(rtts), max(rtts)))
    return 0
