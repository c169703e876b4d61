"""`capwarden flash`: deploy the agent to a board with mpremote."""

import argparse
import time

from capwarden.cli._common import add_json, err, print_json

HELP = """\
Deploy the CAP agent to a board with mpremote: the shared protocol code, the agent and the
board's description (boards/NAME), precompiled with mpy-cross (or as source with --source, when
the board's MicroPython is not the version mpy-cross targets). A running agent is stopped first
(a bare Ctrl-C: it drives every resource to its safe state and returns to the REPL), and the
board is reset at the end so that main.py starts the new agent.

The virtual board (`capwarden sim`, the MicroPython unix port) has no soft reset: a reset ends
its process. flash sees which board it talks to and, on the virtual board, copies without a
reset and restarts the agent from the new files instead.

examples:
  capwarden flash --port /dev/ttyACM0 --board pico_camera
  capwarden flash --port /dev/ttyUSB0 --board esp32_drone --source
  capwarden flash --port auto --board pico_camera --json
  capwarden flash --port /dev/pts/3 --board sim     # the device path 'capwarden sim' printed
"""

KEY_FILE = "link.key"    # where the agent reads its link key (capagent.link.KEY_FILE)

# Run on the board's REPL: which MicroPython port it is ("linux" or "darwin": the unix port).
PLATFORM = "import sys; print(sys.platform)"
UNIX_PORT = ("linux", "darwin")
REPL_TIMEOUT = 15    # seconds for a board's REPL to answer (a slow USB board answers in well under 1)

# Start the new agent on the unix port without a reset: forget the modules of the old one (so the
# copied files are imported, not the cached ones), then run main.py as a boot would.
RESTART = ("import gc, sys\nfor m in [m for m in sys.modules if m.split('.')[0] in ('capagent', 'capshared', "
           "'board', 'main')]:\n    del sys.modules[m]\ngc.collect()\nexec(open('main.py').read())")


def register(sub):
    p = sub.add_parser("flash", help="deploy the agent to a board with mpremote", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True,
                   help="the board's serial port, e.g. /dev/ttyACM0, any pyserial URL, or 'auto' (see 'capwarden ports')")
    p.add_argument("--board", required=True, help="board description under boards/ (e.g. pico_camera)")
    p.add_argument("--source", action="store_true", help="copy .py sources instead of precompiled .mpy")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board (or restart the agent) afterwards")
    p.add_argument("--resume", action="store_true",
                   help="no soft reset before copying (mpremote 'resume'); the agent is not restarted")
    add_json(p, "print one JSON object: board, port, files, whether the agent was restarted (also on failure)")
    p.set_defaults(func=main)


def stop_agent(port):
    """Send a bare Ctrl-C so a running agent goes safe and yields the REPL to mpremote.
    Raises LinkError when the port cannot be opened."""
    import serial

    try:
        with serial.serial_for_url(port, baudrate=115200, timeout=0.2) as s:
            s.write(b"\x00\x03")
            s.flush()
            time.sleep(0.3)
    except (serial.SerialException, OSError) as exc:
        from capwarden.errors import LinkError

        raise LinkError("cannot open %s: %s" % (port, exc)) from None


def board_platform(port):
    """sys.platform of the MicroPython at `port`, asked without a reset. Raises SimError."""
    from capwarden.errors import SimError
    from capwarden.sim import firmware

    try:
        lines = firmware.mpremote_exec(port, PLATFORM, timeout=REPL_TIMEOUT).strip().splitlines()
    except firmware.Interrupted:
        raise
    except SimError as exc:
        why = "no answer in %d s" % REPL_TIMEOUT if isinstance(exc, firmware.ToolTimeout) else str(exc)
        raise SimError("no MicroPython REPL on %s (%s): is MicroPython installed on the board (boards/NAME/"
                       "README.md says how), and is no other program using the port?" % (port, why)) from None
    return lines[-1].strip() if lines else ""


def main(args):
    import os
    import shutil

    from capwarden.errors import SimError
    from capwarden.link.transport import resolve_port
    from capwarden.sim import firmware

    # The arguments first, the slow work after: an unknown board is a usage error (2) and a port
    # that cannot be opened or gives no REPL a failure (1), before anything is compiled.
    port = resolve_port(args.port)   # 'auto': the one supported board plugged in, else LinkError
    firmware.files(args.board)
    err("stopping any running agent on %s" % port)
    stop_agent(port)
    platform = board_platform(port)
    unix = platform in UNIX_PORT
    if unix:
        err("%s is the MicroPython unix port (the virtual board): it has no soft reset, so the files "
            "are copied without one and the agent is restarted from them" % port)
    staged, written = firmware.stage(args.board, compile=not args.source)
    restarted = False
    # A new link key (issue 12): onto the board with the agent, and into the engine's store for
    # this port once the copy succeeded. Never printed; only its id is shown.
    from capwarden.link import linkauth

    key = linkauth.generate()
    linkauth.write_key(os.path.join(staged, KEY_FILE), key)
    written = list(written) + [KEY_FILE]
    try:
        err("copying %d files with mpremote" % len(written))
        firmware.deploy(port, staged, written, resume=args.resume or unix,
                        progress=lambda i, n, rel: err("  [%d/%d] %s" % (i, n, rel)))
        linkauth.remember(port, key)
        err("link key %s written to the board and to %s" % (key.key_id.hex(), linkauth.key_path(port)))
        if unix and not (args.no_reset or args.resume):
            err("restarting the agent from the new main.py")
            firmware.mpremote_exec(port, RESTART, follow=False, timeout=30)
            restarted = True
        elif not (args.no_reset or args.resume):
            err("resetting the board: main.py starts the agent")
            try:
                firmware.reset(port)
                restarted = True
            except firmware.Interrupted:
                raise
            except SimError as exc:   # the files are on the board; a board that drops off as it resets
                err("the board did not confirm its reset (%s); if the agent does not start, power-cycle it" % exc)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    if args.json:
        print_json({"ok": True, "board": args.board, "port": port, "platform": platform, "key_id": key.key_id.hex(),
                    "files": len(written), "compiled": not args.source, "agent_restarted": restarted})
    else:
        print("flashed %s to %s%s" % (args.board, port, "" if restarted else " (agent not restarted)"))
    return 0
