"""What every `capwarden` command shares: the exit-code rule, error and `--json` output, human
times, the store; input and output files (files.py) and argument types (argtypes.py) are
re-exported here. docs/cli.md is the user's copy of the exit-code table.

Exit codes (cap-supplement S4, plus 130 for an interrupt as shells expect):

    0   done, or granted
    1   denied, or invalid input: a file or answer that was read is not what it must be
        (garbage, oversize, a bad signature, a corrupt store), or a step failed after the
        command line was accepted (a board or engine that cannot be reached or went away, a
        session ended by someone else while held)
    2   usage error: the command line cannot be carried out as written (an unknown option, a
        value out of range or in the wrong format, a file or folder it names that is missing,
        unreadable, a folder instead of a file, or cannot be created; an output that exists
        where the command never overwrites; an address that cannot be listened on)
    130 interrupted (Ctrl-C)
"""

import asyncio
import contextlib
import os
import sys

from capwarden.cli.argtypes import (ID_FORMATS, baud_rate, check_id, heap_size, id_format_error,  # noqa: F401
                                    int_range, listen_address, nonneg_float, positive_float)
from capwarden.cli.files import (InputError, check_input, check_output, load_signing_key,  # noqa: F401
                                 read_input, write_output)
from capwarden.errors import CapwardenError, UsageError  # noqa: F401

EXIT_OK = 0
EXIT_DENIED = 1           # denied, or invalid input
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130    # 128 + SIGINT


def err(text):
    print(text, file=sys.stderr, flush=True)


def error_line(command, exc):
    """The one line a failure prints on stderr: 'capwarden COMMAND: what was wrong'. Never a
    traceback, never a token (errors are written not to hold one)."""
    text = str(exc) or exc.__class__.__name__
    return "capwarden%s: %s" % (" " + command if command else "", " ".join(text.splitlines()))


# ---- --json: exactly one object on stdout, success or failure -------------------------------

class _JsonState:
    printed = 0


def print_json(obj):
    import json

    _JsonState.printed += 1
    print(json.dumps(obj, sort_keys=True), flush=True)


def json_reset():
    _JsonState.printed = 0


def json_printed():
    return _JsonState.printed


# Commands whose --json object is a decision: their failure object says granted false too.
DECISION_COMMANDS = ("verify", "request")


def failure_object(exc, exit_code, command=None):
    """The one object a --json command prints when it fails before printing its own."""
    obj = {"ok": False, "exit_code": exit_code, "error_code": getattr(exc, "code", None),
           "error": " ".join((str(exc) or exc.__class__.__name__).splitlines())}
    if command in DECISION_COMMANDS:
        obj["granted"] = False
    return obj


# ---- times ---------------------------------------------------------------------------------

def human_time(ts, now=None):
    """'2026-12-31T10:04:40Z (in 30 days)': ISO 8601 UTC and how far from now."""
    import datetime
    import time

    if ts is None:
        return "never"
    try:
        iso = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ts)
    now = time.time() if now is None else now
    return "%s (%s)" % (iso, relative(ts - now))


def relative(delta):
    """'in 3 hours', '5 minutes ago', 'now'."""
    a = abs(delta)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if a >= size:
            n = int(a / size + 0.5)
            text = "%d %s%s" % (n, unit, "" if n == 1 else "s")
            return "in " + text if delta > 0 else text + " ago"
    return "now"


# ---- the store, boards, misc ------------------------------------------------------------------

def add_store(p):
    from capwarden.credentials.store import default_store

    p.add_argument("--store", default=None, metavar="DIR",
                   help="the terminal's store folder (default: $CAPWARDEN_STORE, else %s)" % default_store())


def add_json(p, text="print one JSON object (also on failure)", inherited=False):
    """--json on a parser. `inherited`: a subcommand's copy of its parent's --json, which must
    not reset the parent's to False (argparse copies a subparser's defaults over the parent's)."""
    import argparse

    p.add_argument("--json", action="store_true", help=text, **({"default": argparse.SUPPRESS} if inherited else {}))


def store_path(args):
    from capwarden.credentials.store import default_store

    return args.store or default_store()


def resource_arg(text, terminal_id):
    """A Resource_ID from the command line: a full TERMINAL_ID/BOARD/NAME, or the board shorthand
    BOARD/NAME taken under this terminal (as `issue --grant` takes patterns)."""
    if text.startswith("terminal:") or not terminal_id:
        return text
    return "%s/%s" % (terminal_id, text)


@contextlib.contextmanager
def board_port(port, heapsize=None, quiet=False):
    """Yield a device address: `port` itself, or a fresh virtual board's pty when port is 'sim'."""
    if port != "sim":
        yield port
        return
    from capwarden.sim import DEFAULT_HEAP, VirtualBoard

    vb = VirtualBoard(heapsize=heapsize or DEFAULT_HEAP, progress=None if quiet else err)
    vb.start()
    try:
        yield vb.port
    finally:
        vb.stop()


def run(coro):
    return asyncio.run(coro)


# A ticket file may end with a line break (`capwarden issue ticket` writes one; CRLF from an
# editor): the file may be that much longer than the ticket itself.
LINE_END = 2


def now_arg(value):
    import time

    return int(time.time()) if value is None else value


def formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def import_and_report(args, what, do, done_json, done_text):
    """Run an import `do()` and report it: JSON (with --json) or text. CapError -> exit 1."""
    from capwarden.errors import CapError

    try:
        result = do()
    except CapError as exc:
        if args.json:
            print_json({"imported": False, "error_code": exc.code, "message": exc.message, "field": exc.field})
            return 1
        raise
    if args.json:
        print_json(dict(done_json(result), imported=True, error_code=None))
    else:
        print(done_text(result))
    return 0


def check_store(store):
    """`store` if it is a store folder; else UsageError (exit 2) saying how to make one."""
    from capwarden.credentials.terminal import TERMINAL

    if not os.path.isfile(os.path.join(store, TERMINAL)):
        what = "no folder" if not os.path.exists(store) else "no store"
        raise UsageError("%s at %s: create one with 'capwarden init --store %s' (or give --store, or set "
                         "CAPWARDEN_STORE)" % (what, store, store))
    return store


def open_store(args, **kw):
    """The Terminal of --store. A folder that does not exist or holds no store is a usage error
    (exit 2, saying how to make one); a store that cannot be read is a StoreError (exit 1)."""
    from capwarden.credentials import Terminal

    store = check_store(store_path(args))
    try:
        return Terminal.open(store, **kw)
    except OSError as exc:
        from capwarden.errors import StoreError

        raise StoreError("cannot read the store %s: %s" % (store, exc.strerror or exc)) from None


def register_import_list(sub, name, text, helps, import_, list_, list_json=None):
    """`capwarden NAME import FILE | list`, both on a store, both with --json: the shape the
    descriptors and revocations commands share. helps: (command, import, list) one-liners."""
    p = sub.add_parser(name, help=helps[0], description=text, formatter_class=formatter())
    s = p.add_subparsers(dest=name + "_command", metavar="ACTION")
    i = s.add_parser("import", help=helps[1], description=text, formatter_class=formatter())
    add_store(i)
    i.add_argument("file")
    add_json(i)
    i.set_defaults(func=import_)
    ls = s.add_parser("list", help=helps[2], description=text, formatter_class=formatter())
    add_store(ls)
    add_json(ls, *([list_json] if list_json else []))
    ls.set_defaults(func=list_)
    p.set_defaults(func=needs_action(p))
    return p


def needs_action(parser):
    """The `func` of a command with actions (keys, issue, ...) run without one: its help on
    stderr, and a usage error (exit 2; one object with --json)."""
    def missing(args):
        parser.print_help(sys.stderr)
        raise UsageError("give an action (see 'capwarden %s --help')" % parser.prog.split()[-1])
    return missing
