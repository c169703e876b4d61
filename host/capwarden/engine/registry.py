"""The engine's one registry: runtimes, sessions, boards and their resources, pending handovers.

Reference architecture (hyperty-runtime-architecture.txt): the registry is the single place
that knows what exists and who owns it. The enforcement point asks it; the request handlers
only ever act on what the enforcement point resolved from it.
"""

import asyncio
import random
from collections import OrderedDict

LIVE = ("active", "handover_pending")
MAX_TOKEN = (1 << 30) - 1      # board session tokens are ints below 2**30


class Runtime:
    """A runtime known by its id. Its sessions outlive any one of its connections."""

    RECENT = 4096

    def __init__(self, runtime_id):
        self.runtime_id = runtime_id
        self.connections = set()      # senders: async callables taking a message dict
        # message_id -> (fingerprint, future of the final response): a retry with the same id
        # is answered with the same response, never executed twice (faults.md 31, 49; I72).
        self.recent = OrderedDict()

    def remember(self, message_id, fingerprint, future):
        """None for a new message id (now remembered); else (fingerprint, future) of the first."""
        hit = self.recent.get(message_id)
        if hit is not None:
            return hit
        self.recent[message_id] = (fingerprint, future)
        if len(self.recent) > self.RECENT:
            self.recent.popitem(last=False)
        return None

    @property
    def connected(self):
        return bool(self.connections)


class BoardHandle:
    """A board client under the name its resources appear with (TERMINAL_ID/BOARD/RESOURCE)."""

    def __init__(self, name, board):
        self.name = name
        self.board = board
        self.hb_seq = 0
        self.retired = set()    # session tokens the board must still be told to end
        self.down = None        # why the link is down, while it is (boards.link_down)
        self.reconcile_lock = asyncio.Lock()
        self.ring_next = 1      # the board's audit-ring entry to read next (boards.read_ring)


class Registry:
    def __init__(self, terminal_id, boards):
        self.terminal_id = terminal_id
        self.boards = {name: BoardHandle(name, b) for name, b in boards.items()}
        self.runtimes = {}
        self.sessions = {}
        self.handovers = {}
        self._token = random.randrange(MAX_TOKEN)   # a restarted engine does not reuse the last one's
        self._tokens = set()

    # ---- runtimes -----------------------------------------------------------------------------
    def add_runtime(self, runtime_id):
        return self.runtimes.setdefault(runtime_id, Runtime(runtime_id))

    def runtime(self, runtime_id):
        return self.runtimes.get(runtime_id)

    # ---- resources ----------------------------------------------------------------------------
    def resolve(self, resource_id):
        """(board handle, resource index, class) for a present TERMINAL_ID/BOARD/RESOURCE, else None."""
        prefix = self.terminal_id + "/"
        if not resource_id.startswith(prefix):
            return None
        parts = resource_id[len(prefix):].split("/")
        if len(parts) != 2 or parts[0] not in self.boards:
            return None
        h = self.boards[parts[0]]
        for r in h.board.info.resources:
            if r.name == parts[1]:
                return (h, r.index, r.cls) if r.state == "present" else None
        return None

    def resource_ids(self):
        return ["%s/%s/%s" % (self.terminal_id, h.name, r.name)
                for h in self.boards.values() for r in h.board.info.resources]

    # ---- sessions -----------------------------------------------------------------------------
    def new_token(self):
        """A board session token not held by any registered session."""
        while True:
            self._token = self._token % MAX_TOKEN + 1
            if self._token not in self._tokens and not any(self._token in h.retired for h in self.boards.values()):
                return self._token

    def add(self, session):
        self.sessions[session.session_id] = session
        self._tokens.add(session.token)

    def drop(self, session):
        if self.sessions.pop(session.session_id, None) is not None:
            self._tokens.discard(session.token)

    def get(self, session_id):
        return self.sessions.get(session_id)

    def owned(self, runtime_id, session_id):
        """The session if it exists and belongs to `runtime_id`, else None."""
        s = self.sessions.get(session_id)
        return s if s is not None and s.runtime_id == runtime_id else None

    def of_runtime(self, runtime_id, fay_id=None, live_only=True):
        return [s for s in self.sessions.values() if s.runtime_id == runtime_id
                and (fay_id is None or s.fay_id == fay_id) and (not live_only or s.state in LIVE)]

    def on_board(self, handle, res=None):
        return [s for s in self.sessions.values()
                if s.board is handle and (res is None or s.res == res)]

    def holders(self, resource_id):
        return [s for s in self.sessions.values() if s.resource_id == resource_id and s.state in LIVE]

    def live(self):
        return [s for s in self.sessions.values() if s.state in LIVE]
