"""`capwarden ping`: round-trip time and the board's announcement."""

import argparse
import statistics

from capwarden.cli._common import add_json, board_port, int_range, positive_float, print_json, run

HELP = """\
Ping the CAP agent on a board: prints its announcement (agent version, board, boot id), its
resource table, free heap, round-trip times, and the link's counters on both sides (frames
dropped for a bad CRC or framing, late copies refused, and the frames link authentication
dropped before any handler: bad tag (forged, altered, another key or session), replay, no key
or session). --ring adds the board's own audit ring:
its last grants, ends, handovers and failsafes, with epochs and the board's ms clock.

A port that answers nothing has no CAP agent running: deploy it with 'capwarden flash'.

examples:
  capwarden ping --port /dev/ttyACM0
  capwarden ping --port auto                    # the one supported board plugged in ('capwarden ports')
  capwarden ping --port sim --count 50          # start a virtual board just for this
  capwarden ping --port socket://192.0.2.1:2217 --json
  capwarden ping --port /dev/ttyACM0 --ring      # what the board did last (after a failsafe)
"""


def register(sub):
    p = sub.add_parser("ping", help="ping a board and show its resources", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True,
                   help="device: a serial port, any pyserial URL, ble://ADDR, 'auto' (see 'capwarden ports') or 'sim'")
    p.add_argument("--count", type=int_range(1, 100000, "--count"), default=10, help="pings to send (default 10)")
    p.add_argument("--timeout", type=positive_float("--timeout"), default=1.0,
                   help="seconds to wait for each answer (default 1)")
    p.add_argument("--ring", action="store_true", help="also print the board's audit ring (faults.md 70)")
    add_json(p)
    p.add_argument("--trace", action="store_true", help="print every frame sent and received (stderr)")
    p.set_defaults(func=main)


async def _ping(port, count, timeout, ring):
    from capwarden.link import open_board

    board = await open_board(port, timeout=timeout)
    try:
        results = [await board.ping() for _ in range(max(1, count))]
        stats = await board.stats()
        link = {"board": {k: stats[k] for k in ("bad_crc", "bad_frame", "overrun", "lost", "dup", "replayed", "stale",
                                                "bad_tag", "replay", "no_key")},
                "host": board.host_counts()}
        entries = (await board.audit_ring()).entries if ring else None
        return board.info, results, link, entries
    finally:
        await board.close()


def main(args):
    if args.trace:
        import logging

        logging.basicConfig(format="%(relativeCreated)8.1f ms %(message)s")
        logging.getLogger("capwarden.link").setLevel(logging.DEBUG)
    from capwarden.errors import LinkError, LinkTimeout
    from capwarden.link.transport import resolve_port

    port = resolve_port(args.port)
    with board_port(port, quiet=args.json) as port:
        try:
            info, results, link, ring = run(_ping(port, args.count, args.timeout, args.ring))
        except LinkTimeout as exc:
            raise LinkError("%s. Nothing answered on %s: is the CAP agent on that board? Deploy it with "
                            "'capwarden flash --port %s --board NAME' (boards: pico_camera, esp32_drone)"
                            % (exc, port, port)) from None
    rtts = [r["rtt_s"] * 1000 for r in results]
    last = results[-1]
    if args.json:
        print_json({
            "board": info.name, "agent_version": info.agent_version, "boot_id": info.boot_id,
            "protocol": info.protocol, "resources": [dict(vars(r), shorthand="%s/%s" % (info.name, r.name)) for r in info.resources],
            "mem_free": last["mem_free"], "mem_alloc": last["mem_alloc"], "uptime_ms": last["uptime_ms"],
            "rtt_ms": {"min": min(rtts), "median": statistics.median(rtts), "max": max(rtts)}, "count": len(rtts),
            "link": link, **({"ring": [vars(e) for e in ring]} if ring is not None else {}),
        })
        return 0
    print("board %s, agent %s, protocol %d, boot id %08x, up %.1f s" % (
        info.name, info.agent_version, info.protocol, info.boot_id, last["uptime_ms"] / 1000))
    print("heap: %d bytes free, %d in use" % (last["mem_free"], last["mem_alloc"]))
    print("resources (BOARD/NAME: what --resource and --grant take, under the terminal's id):")
    for r in info.resources:
        print("  %-2d %-20s %-8s %-8s modes: %s" % (r.index, "%s/%s" % (info.name, r.name), r.cls, r.state,
                                                    ",".join(r.modes)))
    print("%d pings: round trip min %.3f ms, median %.3f ms, max %.3f ms" % (
        len(rtts), min(rtts), statistics.median(rtts), max(rtts)))
    for side, counts in (("board", link["board"]), ("host", link["host"])):
        print("link, %s side: %s" % (side, ", ".join("%s %d" % (k.replace("_", " "), v) for k, v in counts.items())))
    if ring is not None:
        print("audit ring (%d entries, oldest first):" % len(ring))
        for e in ring:
            print("  #%-5d %9.3f s  %-14s %-12s session %-10d epoch %-6d %s" % (
                e.seq, e.t_ms / 1000, e.kind, e.name, e.session, e.epoch, e.reason))
    return 0
