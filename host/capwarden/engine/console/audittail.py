"""The tail of the audit log and the state of its hash chain, for the console.

The log is read incrementally: each refresh reads only the bytes after the last verified line
and checks each new line against the previous one (auditfile.digest, the writer's own hash), so
following a long log costs its growth, not its size. The first refresh verifies the whole file
once. A chain that breaks stays reported as broken (with where) until the engine restarts: the
console never shows a later "intact" over a problem it has seen.
"""

import json
import os
from collections import deque

from capwarden.engine.auditfile import GENESIS, digest

TAIL = 20             # entries the page shows
READ_LIMIT = 1 << 20  # bytes read per refresh at most (a huge backlog is caught up over refreshes)


class AuditTail:
    def __init__(self, path, keep=TAIL):
        self.path = path
        self.entries = deque(maxlen=keep)
        self.offset = 0        # bytes of verified whole lines
        self.prev = GENESIS
        self.seq = 0
        self.problem = None
        self.taken_from = {}   # resource id -> the Fays an operator's take-over ended (hand-back suggestion)

    def refresh(self):
        """Read what was appended since the last call. Returns True when anything changed."""
        if self.problem or not self.path:
            return False
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.problem = "the log is shorter than the %d bytes already verified" % self.offset
                    return True
                f.seek(self.offset)
                data = f.read(min(size - self.offset, READ_LIMIT))
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.problem = "cannot read the audit log: %s" % (exc.strerror or exc)
            return True
        changed = False
        pos = 0
        while pos < len(data) and data[pos] != 0:      # zeros: space preallocated ahead of the log
            end = data.find(b"\n", pos)
            if end < 0:
                break                                   # a line still being written
            try:
                e = json.loads(data[pos:end])
            except (ValueError, RecursionError):
                e = None
            if not isinstance(e, dict) or e.get("prev") != self.prev or e.get("seq") != self.seq + 1 \
                    or e.get("hash") != digest(e):
                self.problem = "the hash chain breaks at line %d (edited, removed or reordered)" % (self.seq + 1)
                return True
            self.entries.append(e)
            if e.get("action") == "takeover" and e.get("from_fays") and isinstance(e.get("resource"), str):
                self.taken_from[e["resource"]] = e["from_fays"]
            self.prev, self.seq = e["hash"], e["seq"]
            pos = end + 1
            changed = True
        self.offset += pos
        return changed

    def state(self):
        """What the page shows: the chain's state and the last entries, newest first."""
        if not self.path:
            return {"intact": False, "problem": "this engine keeps no audit log file", "entries_verified": 0,
                    "head": GENESIS, "tail": []}
        return {"intact": self.problem is None, "problem": self.problem, "entries_verified": self.seq,
                "head": self.prev, "tail": list(reversed(self.entries))}
