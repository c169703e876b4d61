"""Operator login sessions of the console, their CSRF tokens, and the brake on password guessing.

A session id is 32 random bytes (secrets.token_urlsafe), made new at every login, so an id an
attacker planted before the login (session fixation) never becomes an operator's. It travels
only in an HttpOnly cookie, never in a URL. Each session has its own CSRF token, which the page
reads from `GET /api/me` (same origin only) and sends back in a header with every state-changing
request; both are compared in constant time. Sessions end at logout, after IDLE_S without a
request, and after LIFETIME_S in any case (monotonic clock).
"""

import hmac
import secrets
import time
from collections import deque

IDLE_S = 15 * 60          # an unattended console logs itself out
LIFETIME_S = 8 * 3600     # one shift
MAX_SESSIONS = 256        # the oldest go first beyond that: a flood of logins cannot grow memory

# Failed logins: after FAILS_ALLOWED within FAIL_WINDOW_S for one account or one peer address,
# further attempts from it are refused unchecked until the window has passed.
FAILS_ALLOWED = 5
FAIL_WINDOW_S = 300.0
MAX_TRACKED = 4096        # keys (accounts, addresses) whose failures are remembered


class LoginSession:
    __slots__ = ("sid", "csrf", "operator", "stamp", "started", "seen")

    def __init__(self, sid, csrf, operator, stamp, now):
        self.sid, self.csrf, self.operator, self.stamp, self.started, self.seen = sid, csrf, operator, stamp, now, now


class LoginSessions:
    def __init__(self, clock=time.monotonic, idle_s=IDLE_S, lifetime_s=LIFETIME_S):
        self.clock = clock
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self._by_sid = {}

    def create(self, operator, stamp=None):
        """A new session for `operator` (an operator id; `stamp`: its account's version, see
        sources.stamp): a LoginSession with fresh id and token."""
        now = self.clock()
        s = LoginSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), operator, stamp, now)
        self._by_sid[s.sid] = s
        while len(self._by_sid) > MAX_SESSIONS:
            self._by_sid.pop(next(iter(self._by_sid)))
        return s

    def get(self, sid):
        """The live session of cookie value `sid`, or None (unknown, idle too long, too old).
        A hit counts as activity."""
        s = self.peek(sid)
        if s is not None:
            s.seen = self.clock()
        return s

    def peek(self, sid):
        """The live session of `sid` like get(), without counting as activity (a live stream)."""
        s = self._by_sid.get(sid) if isinstance(sid, str) and sid else None
        if s is None or not hmac.compare_digest(s.sid, sid):
            return None
        now = self.clock()
        if now - s.seen > self.idle_s or now - s.started > self.lifetime_s:
            self._by_sid.pop(sid, None)
            return None
        return s

    def drop(self, sid):
        self._by_sid.pop(sid, None)

    def drop_operator(self, operator):
        """End every session of `operator` (an account disabled or its password changed)."""
        for sid in [k for k, s in self._by_sid.items() if s.operator == operator]:
            self._by_sid.pop(sid, None)

    def __len__(self):
        return len(self._by_sid)


def csrf_ok(session, presented):
    return bool(presented) and isinstance(presented, str) and hmac.compare_digest(session.csrf.encode(),
                                                                                  presented.encode())


class FailedLogins:
    """Failures per key (an account name, a peer address) in a sliding window."""

    def __init__(self, clock=time.monotonic, allowed=FAILS_ALLOWED, window_s=FAIL_WINDOW_S):
        self.clock = clock
        self.allowed = allowed
        self.window_s = window_s
        self._fails = {}

    def _recent(self, key):
        q = self._fails.get(key)
        if q is None:
            return None
        cut = self.clock() - self.window_s
        while q and q[0] <= cut:
            q.popleft()
        if not q:
            del self._fails[key]
            return None
        return q

    def blocked_for(self, *keys):
        """Seconds until any of `keys` may try again (0.0 when none is blocked)."""
        wait = 0.0
        for key in keys:
            q = self._recent(key)
            if q is not None and len(q) >= self.allowed:
                wait = max(wait, q[0] + self.window_s - self.clock())
        return wait

    def failed(self, *keys):
        now = self.clock()
        for key in keys:
            q = self._recent(key)
            if q is None:
                while len(self._fails) >= MAX_TRACKED:
                    self._fails.pop(next(iter(self._fails)))
                q = self._fails[key] = deque()
            q.append(now)

    def succeeded(self, *keys):
        for key in keys:
            self._fails.pop(key, None)
