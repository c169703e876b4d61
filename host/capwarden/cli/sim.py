"""`capwarden sim`: start the virtual board and keep it running."""

import argparse
import os
import signal
import time

from capwarden.cli._common import add_json, baud_rate, err, heap_size, print_json

HELP = """\
Start the virtual board: the real MicroPython unix port on a pseudo-terminal, the agent
precompiled with mpy-cross and deployed with mpremote, behind the virtual cable. Prints the
device path; open it with any capwarden command (--port PATH) or pyserial. Ctrl-C stops it
(exit 130), so does SIGTERM (exit 0); if the board's process ends on its own, exit 1.

examples:
  capwarden sim                      # default heap (the smallest board: 64K)
  capwarden sim --heapsize 256K --baud 115200
  capwarden sim --json               # {"port": "/dev/pts/3", ...} once the agent runs
"""


def register(sub):
    p = sub.add_parser("sim", help="start the virtual board and print its device path",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", default="sim", help="board description under boards/ (default: sim)")
    p.add_argument("--heapsize", type=heap_size, default=None,
                   help="MicroPython heap, e.g. 64K, 256K (default: 64K)")
    p.add_argument("--baud", type=baud_rate, default=None, help="pace the cable at this baud rate (default: unpaced)")
    add_json(p, "print one JSON object once the board runs: port, board, heap, pid (on failure: the error)")
    p.set_defaults(func=main)


class _Terminated(BaseException):
    """SIGTERM: stop the board and end (exit 0), from wherever the command is, deploy included."""


def _on_sigterm(signum, frame):
    raise _Terminated


def main(args):
    from capwarden.errors import SimError
    from capwarden.sim import DEFAULT_HEAP, VirtualBoard

    heap = args.heapsize or DEFAULT_HEAP
    vb = VirtualBoard(board=args.board, heapsize=heap, baud=args.baud, progress=err)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        vb.start()
        if args.json:
            print_json({"ok": True, "port": vb.port, "board": args.board, "heapsize": heap, "baud": args.baud,
                        "pid": os.getpid()})
        else:
            print(vb.port, flush=True)
        err("virtual board running; Ctrl-C to stop")
        while vb.alive():
            time.sleep(0.2)
        status = vb.proc.returncode
        raise SimError("the virtual board's process ended by itself (%s)" % (
            "killed by signal %d" % -status if status < 0 else "exit status %d" % status))
    except _Terminated:
        return 0
    finally:
        # Nothing cuts the clean-up short: the staged firmware and the board's flash folder go.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            vb.stop()
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)
