"""The audit log's file: hash-chained JSON lines, checked by `verify()`, and the repair of a
torn last line (`repair_torn_tail()`, `capwarden audit --repair`). The writer is audit.AuditLog.

Each line is one JSON object: seq, ts, who (runtime, fay), what (action, resource), which
credential and grant (epoch), outcome and reason, prev (the previous line's hash) and hash =
SHA-256 of the line without `hash`, in canonical JSON. Editing, removing or reordering any line
breaks the chain at that point; `verify()` says where, and returns every entry before it.
"""

import hashlib
import json
import os
import time

from capwarden.errors import StoreError

GENESIS = "0" * 64
TORN = "torn"        # Check.kind of a log whose only problem is its last line
BROKEN = "broken"    # Check.kind of a chain broken before its end


def canonical(body):
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def digest(entry):
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"}).encode()).hexdigest()


class Check:
    """What `verify()` found. `entries`: every entry of the verified prefix, in order; `problem`:
    None when the whole log verifies, else what is wrong and where; `kind`: None, TORN (only the
    last line is incomplete) or BROKEN; `line`: the first line that does not verify; `good_bytes`:
    the length of the verified prefix."""

    __slots__ = ("entries", "problem", "kind", "line", "good_bytes", "size")

    def __init__(self, entries, problem, kind, line, good_bytes, size):
        self.entries, self.problem, self.kind, self.line = entries, problem, kind, line
        self.good_bytes, self.size = good_bytes, size


def verify(path):
    """Check the log at `path`. Returns a Check. Raises OSError when it cannot be read.

    Zero bytes after the last whole line are space a group-commit writer preallocated and did
    not give back (it stopped without closing): not a problem. A partial line before them is
    torn; zero bytes followed by anything else are not a crash's doing (BROKEN).
    """
    with open(path, "rb") as f:
        data = f.read()
    entries = []
    prev = GENESIS
    pos = 0
    n = 0
    size = len(data)
    while pos < size:
        n += 1
        if data[pos] == 0:
            if len(data.rstrip(b"\0")) <= pos:
                break                                   # preallocated space: the end of the log
            return Check(entries, "line %d starts with zero bytes followed by data" % n, BROKEN, n, pos, size)
        end = data.find(b"\n", pos)
        nul = data.find(b"\0", pos, size if end < 0 else end)
        if end < 0 or nul >= 0:
            cut = nul if nul >= 0 else size
            if len(data.rstrip(b"\0")) <= cut:
                return Check(entries, "line %d is torn (%d bytes, no newline): a crash during a write, so it was "
                             "never acknowledged; the %d entries before it verify" % (n, cut - pos, len(entries)),
                             TORN, n, pos, size)
            return Check(entries, "line %d is not JSON" % n, BROKEN, n, pos, size)
        try:
            e = json.loads(data[pos:end])
        except (ValueError, RecursionError):
            return Check(entries, "line %d is not JSON" % n, BROKEN, n, pos, size)
        if not isinstance(e, dict) or e.get("prev") != prev or e.get("seq") != n or e.get("hash") != digest(e):
            return Check(entries, "the hash chain breaks at line %d (edited, removed or reordered)" % n, BROKEN, n,
                         pos, size)
        prev = e["hash"]
        entries.append(e)
        pos = end + 1
    return Check(entries, None, None, None, pos, size)


def read(path):
    """(entries, problem): every entry up to the first line that does not verify; problem None
    when the log is intact. Raises OSError when it cannot be read."""
    c = verify(path)
    return c.entries, c.problem


def repair_torn_tail(path):
    """Move a torn last line aside and cut the log back to its verified prefix.

    Returns (aside_path, torn_bytes), or None when there is nothing to repair. Raises StoreError
    when the chain is broken before its end (that is not a crash: nothing is cut) or the files
    cannot be written. The torn bytes are on disk in the aside file before the log is cut.
    """
    try:
        c = verify(path)
    except OSError as exc:
        raise StoreError("cannot read the audit log %s: %s" % (path, exc.strerror or exc)) from None
    if c.kind is None:
        return None
    if c.kind != TORN:
        raise StoreError("audit log %s: %s. %s" % (path, c.problem, advice(c, path)))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        with open(path, "rb") as f:
            f.seek(c.good_bytes)
            tail = f.read().rstrip(b"\0")     # without the preallocated zeros after it
        aside, k = "%s.torn-%s" % (path, stamp), 1
        while True:
            try:
                fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                break
            except FileExistsError:
                k += 1
                aside = "%s.torn-%s-%d" % (path, stamp, k)
        try:
            write_all(fd, tail)
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, c.good_bytes)
            os.fsync(fd)
        finally:
            os.close(fd)
        sync_dir(path)
    except OSError as exc:
        raise StoreError("cannot repair the audit log %s: %s" % (path, exc.strerror or exc)) from None
    return aside, len(tail)


def advice(c, path):
    if c.kind == TORN:
        return ("Run 'capwarden audit --file %s --repair' to move the torn line aside (it was never acknowledged) "
                "and go on" % path)
    return ("That is not a torn write and is not repaired: keep the file as evidence (check it with 'capwarden "
            "audit --file %s'), and move it aside to start a new log" % path)


def truncate(path, size):
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError("cannot cut the audit log %s back to %d bytes: %s" % (path, size, exc.strerror or exc)) \
            from None


def write_all(fd, data, offset=None):
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        view = view[n:]
        offset = None if offset is None else offset + n


def sync_dir(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
