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


# A ticket file may end with a line break (`capwarden issue ticket` writes one; CRLF from an
# editor): the file may be that much longer than the ticket itself.
LINE_END = 2


def read_input(path, what, limit, code):
    """Bytes of an input file of at most `limit` bytes (the credential's own size limit).

    A larger file is invalid input (S4: exit 1): CapError(code), decided from its size before
    it is read where the size is known, and never read past limit + 1 bytes (a pipe or a file
    that grows). A file that cannot be read at all is a usage error (exit 2).
    """
    import os

    from capwarden.errors import CapError, UsageError

    def too_large(size):
        return CapError(code, "%s is %s, more than the %d bytes a %s may have" % (path, size, limit, what), None)

    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise too_large("%d bytes" % size)
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
    if len(data) > limit:
        raise too_large("longer than its size said")
    return data


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
