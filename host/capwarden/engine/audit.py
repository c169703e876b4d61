"""The audit log: an append-only, hash-chained record of every decision.

Each line is one JSON object: seq, ts, who (runtime, fay), what (action, resource), which
credential and grant (epoch), outcome and reason, prev (the previous line's hash) and hash =
SHA-256 of the line without `hash`, in canonical JSON. Editing, removing or reordering any line
breaks the chain at that point; `verify()` says where. Lines are appended with fsync; a torn
last line (a crash mid-write) is reported, never silently accepted.
"""

import hashlib
import json
import os
import threading
import time

from capwarden.errors import StoreError

GENESIS = "0" * 64


def _digest(entry):
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuditLog:
    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self.seq = 0
        self.last = GENESIS
        if path and os.path.exists(path):
            entries, problem = read(path)
            if entries:
                self.seq = entries[-1]["seq"]
                self.last = entries[-1]["hash"]
            if problem:
                raise StoreError("audit log %s: %s. Check it with 'capwarden audit --file %s'; move it aside "
                                 "to start a new one" % (path, problem, path))

    def record(self, action, outcome, reason="", **fields):
        """Append one entry (fsynced before this returns). Raises StoreError if it cannot be
        written; the chain in memory then stays at the last entry that is on disk."""
        with self._lock:
            entry = {"seq": self.seq + 1, "ts": int(time.time()), "action": action, "outcome": outcome,
                     "reason": reason}
            entry.update({k: v for k, v in fields.items() if v is not None})
            entry["prev"] = self.last
            entry["hash"] = _digest(entry)
            if self.path:
                self._append((json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode())
            self.seq, self.last = entry["seq"], entry["hash"]
            return entry

    def _append(self, data):
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError("cannot append to the audit log %s: %s" % (self.path, exc.strerror or exc)) from None


def read(path):
    """(entries, problem): entries up to the first broken link; problem None when intact."""
    entries = []
    prev = GENESIS
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        return entries, "the last line is torn (no newline): a crash during a write"
    for n, raw in enumerate(lines, 1):
        try:
            e = json.loads(raw)
        except ValueError:
            return entries, "line %d is not JSON" % n
        if not isinstance(e, dict) or e.get("prev") != prev or e.get("hash") != _digest(e) or e.get("seq") != n:
            return entries, "the hash chain breaks at line %d (edited, removed or reordered)" % n
        prev = e["hash"]
        entries.append(e)
    return entries, None
