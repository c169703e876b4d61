"""Helpers shared by the board commands (sim, ping, flash)."""

import asyncio
import contextlib
import sys


def err(text):
    print(text, file=sys.stderr, flush=True)


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


def add_store(p):
    from capwarden.credentials.store import default_store

    p.add_argument("--store", default=None, metavar="DIR",
                   help="the terminal's store folder (default: $CAPWARDEN_STORE, else %s)" % default_store())


def store_path(args):
    from capwarden.credentials.store import default_store

    return args.store or default_store()


def read_input(path, what):
    """Bytes of a credential file. Raises UsageError with a clear message."""
    import os

    from capwarden.errors import UsageError

    try:
        size = os.path.getsize(path)
        if size > 1024 * 1024:
            raise UsageError("%s is %d bytes: too large for a %s" % (path, size, what))
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None


def print_json(obj):
    import json

    print(json.dumps(obj, sort_keys=True))


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
