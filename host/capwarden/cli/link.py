"""`capwarden link rekey`: a new link key for a board, over its authenticated link."""

from capwarden.cli._common import add_json, err, formatter, needs_action, positive_float, print_json, run

HELP = """\
Manage a board's link key: the 16-byte key that authenticates every frame between the engine
and the board (docs/link-auth.md).

  rekey   replace the board's key with a new random one over the authenticated link, without
          flashing. The new key is kept beside the old one before the board is asked, so a
          lost answer loses nothing: the next connection takes whichever key the board holds.
          Frames sealed under the old key (an old engine, a recording) are refused from then on.

The port must be free: stop 'capwarden serve' on it first. The key is never printed; only its
key id (a fingerprint) is.

examples:
  capwarden link rekey --port /dev/ttyACM0
  capwarden link rekey --port /dev/ttyACM0 --json
"""


def register(sub):
    p = sub.add_parser("link", help="manage a board's link key (rekey)", description=HELP,
                       formatter_class=formatter())
    p.set_defaults(func=needs_action(p))
    s = p.add_subparsers(dest="link_command", metavar="SUBCOMMAND")
    r = s.add_parser("rekey", help="give a board a new link key over its authenticated link", description=HELP,
                     formatter_class=formatter())
    r.add_argument("--port", required=True, help="device: a serial port, any pyserial URL, ble://ADDR or 'auto'")
    r.add_argument("--timeout", type=positive_float("--timeout"), default=2.0,
                   help="seconds to wait for each answer (default 2)")
    add_json(r)
    r.set_defaults(func=main)


async def _rekey(port, timeout):
    from capwarden.link import open_board, rekey

    board = await open_board(port, timeout=timeout)
    try:
        return await rekey(board, port)
    finally:
        await board.close()


def main(args):
    from capwarden.link.transport import resolve_port

    port = resolve_port(args.port)
    if port == "sim":
        from capwarden.errors import UsageError

        raise UsageError("a virtual board started for one command has no key worth replacing: give the port of "
                         "a running board ('capwarden sim' prints it)")
    old, new = run(_rekey(port, args.timeout))
    if args.json:
        print_json({"ok": True, "port": port, "old_key_id": old.key_id.hex(), "key_id": new.key_id.hex()})
    else:
        err("link key of %s replaced: key id %s -> %s" % (port, old.key_id.hex(), new.key_id.hex()))
    return 0
