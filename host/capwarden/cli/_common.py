"""What every `capwarden` command shares: the exit-code rule, error and `--json` output, input
and output files, argument types. docs/cli.md is the user's copy of the exit-code table.

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

from capwarden.errors import CapwardenError, UsageError

EXIT_OK = 0
EXIT_DENIED = 1           # denied, or invalid input
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130    # 128 + SIGINT


class InputError(CapwardenError):
    """A file or value that was read is not what it must be (exit 1). Examples: a key file that
    is not JSON, a TLS certificate that does not parse."""

    exit_code = EXIT_DENIED


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


# ---- input files ---------------------------------------------------------------------------

def _os_reason(exc):
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder, not a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or str(exc)


def check_input(path, what, option=None):
    """Refuse at once (UsageError, exit 2) an input file that is missing, a folder or unreadable,
    before any slow work (a board, a connection). `option` names the flag in the message."""
    flag = "%s " % option if option else ""
    if not path:
        raise UsageError("%sneeds a file name" % flag)
    if os.path.isdir(path):
        raise UsageError("%s%s: %s is a folder, not a file" % (flag, what, path))
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise UsageError("cannot read %s %s%s: %s" % (what, flag, path, _os_reason(exc))) from None


def read_input(path, what, limit, code):
    """Bytes of an input file of at most `limit` bytes (the credential's own size limit).

    A file that cannot be read at all (missing, a folder, no permission) is a usage error
    (UsageError, exit 2). A larger file is invalid input: CapError(code) (exit 1), decided
    from its size before it is read where the size is known, and never read past limit + 1
    bytes (a pipe or a file that grows). What it holds is the caller's to judge (exit 1).
    """
    from capwarden.errors import CapError

    def too_large(size):
        return CapError(code, "%s is %s, more than the %d bytes a %s may have" % (path, size, limit, what), None)

    if os.path.isdir(path):
        raise UsageError("cannot read %s %s: it is a folder, not a file" % (what, path))
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise too_large("%d bytes" % size)
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError("cannot read %s %s: %s" % (what, path, _os_reason(exc))) from None
    if len(data) > limit:
        raise too_large("longer than its size said")
    return data


def load_signing_key(path):
    """The issuer's SigningKey from `--key PATH`. Missing or unreadable: UsageError (2); not a
    key file: InputError (1)."""
    from capwarden.credentials.issue import SigningKey

    check_input(path, "signing key", "--key")
    try:
        return SigningKey.load(path)
    except UsageError as exc:   # the credential layer calls a bad key file a usage error
        raise InputError("%s (expected PREFIX.key as written by 'capwarden keys generate')" % exc) from None


# ---- output files --------------------------------------------------------------------------

def check_output(path, what="output", option="--out"):
    """Refuse at once (UsageError, exit 2) an output path that cannot be written: an existing
    folder, a parent folder that does not exist (never created silently) or is not writable."""
    if not path:
        raise UsageError("%s needs a file name" % option)
    if os.path.isdir(path):
        raise UsageError("%s %s is a folder; give a file name inside it" % (option, path))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError("%s %s: the folder %s does not exist; create it first" % (option, path, parent))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError("%s %s: cannot write %s there: permission denied" % (option, path, what))
    # Try it: access() says yes to root on a read-only or virtual file system (/proc).
    import tempfile

    try:
        fd, probe = tempfile.mkstemp(prefix=".capwarden-probe-", dir=parent)
    except OSError as exc:
        raise UsageError("%s %s: cannot write %s in %s: %s" % (option, path, what, parent, _os_reason(exc))) from None
    os.close(fd)
    os.unlink(probe)


def write_output(path, data, mode=0o644, what="output", option="--out"):
    """Write `data` atomically to `path` (checked by check_output first). Raises UsageError."""
    from capwarden.credentials.store import write_atomic

    check_output(path, what, option)
    try:
        write_atomic(path, data, mode)
    except OSError as exc:
        raise UsageError("%s %s: cannot write %s: %s" % (option, path, what, _os_reason(exc))) from None


# ---- argument types (argparse: a bad value is a usage error, exit 2, at once) ----------------

def _int_in(lo, hi, what):
    import argparse

    def parse(text):
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be a whole number (got %r)" % (what, text)) from None
        if not lo <= v <= (hi if hi is not None else v):
            raise argparse.ArgumentTypeError("%s must be %s (got %d)" % (
                what, ("%d..%d" % (lo, hi)) if hi is not None else "at least %d" % lo, v))
        return v
    parse.__name__ = what
    return parse


def int_range(lo, hi=None, what="a number"):
    """An argparse type: an int in lo..hi (hi None: no upper bound)."""
    return _int_in(lo, hi, what)


def nonneg_float(what="a number of seconds"):
    import argparse
    import math

    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be a number (got %r)" % (what, text)) from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError("%s must be 0 or more (got %r)" % (what, text))
        return v
    parse.__name__ = what
    return parse


def positive_float(what="a number"):
    import argparse

    base = nonneg_float(what)

    def parse(text):
        v = base(text)
        if v <= 0:
            raise argparse.ArgumentTypeError("%s must be more than 0 (got %r)" % (what, text))
        return v
    parse.__name__ = what
    return parse


baud_rate = int_range(1, 10_000_000, "a baud rate")


def heap_size(text):
    """An argparse type for a MicroPython heap size: bytes, or a number with K or M (64K, 2M)."""
    import argparse

    t = text.strip().upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in ("K", "M") else t
    if not digits.isdigit() or not 8 * 1024 <= int(digits) * mult <= 64 * 1024 * 1024:
        raise argparse.ArgumentTypeError("a heap size is bytes or a number with K or M, 8K..64M, e.g. 64K "
                                         "(got %r)" % text)
    return text.strip()


def listen_address(text):
    """An argparse type: HOST:PORT (port 0..65535; 0 picks a free one) or unix:PATH."""
    import argparse

    if text.startswith("unix:"):
        if len(text) == 5:
            raise argparse.ArgumentTypeError("unix:PATH needs a path, e.g. unix:/run/capwarden.sock")
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("HOST:PORT with a port 0..65535, or unix:PATH, e.g. 127.0.0.1:8765 "
                                         "(got %r)" % text)
    return text


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


# ---- identifiers -----------------------------------------------------------------------------

ID_FORMATS = {
    "fay": ("a Fay_ID", "'fay:' and a lowercase UUIDv7", "fay:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "capwarden id new fay"),
    "terminal": ("a Terminal_ID", "'terminal:' and a lowercase UUIDv7",
                 "terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "capwarden id new terminal"),
    "uuid": ("an id", "a lowercase UUIDv7", "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", None),
}


def id_format_error(kind, option, value):
    """The message for an id in the wrong format: what it must be, an example, how to make one."""
    name, form, example, make = ID_FORMATS[kind]
    shown = value if len(value) <= 60 else value[:57] + "..."
    return "%s must be %s: %s, e.g. %s%s (got %r)" % (option, name, form, example,
                                                      "; make one with '%s'" % make if make else "", shown)


def check_id(value, kind, option):
    """Refuse (UsageError, exit 2) an id argument that is not in the spec's format (S1)."""
    from capwarden.credentials.ids import FAY_RE, TERMINAL_RE, UUID_RE

    pattern = {"fay": FAY_RE, "terminal": TERMINAL_RE, "uuid": UUID_RE}[kind]
    if not isinstance(value, str) or not pattern.match(value):
        raise UsageError(id_format_error(kind, option, str(value)))
    return value


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


def needs_action(parser):
    """The `func` of a command with actions (keys, issue, ...) run without one: its help on
    stderr, and a usage error (exit 2; one object with --json)."""
    def missing(args):
        parser.print_help(sys.stderr)
        raise UsageError("give an action (see 'capwarden %s --help')" % parser.prog.split()[-1])
    return missing
