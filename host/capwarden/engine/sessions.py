"""Sessions (chapter 2 section 2.5) and their state machine.

    | from             | to               | when                                              |
    |------------------|------------------|---------------------------------------------------|
    | creating         | active           | credential valid and the board granted the lock   |
    | creating         | terminated       | denied (credential, busy board, unreachable)      |
    | active           | handover_pending | the holder is offered a handover                  |
    | handover_pending | active           | the holder refuses, or the offer times out         |
    | handover_pending | terminating      | the holder consents: the board moves the grant    |
    | active           | terminating      | release, Fay terminated, heartbeat expiry (AND    |
    |                  |                  | rule), credential expiry or revocation, resource  |
    |                  |                  | removed or faulty, board reset                    |
    | terminating      | terminated       | the board grant is released (or already gone)     |

`suspended` is a flag on an active session, not a state (S3): set when the connection is up but
heartbeats stopped, cleared when they return. Any other transition is a bug and raises.
"""

import time

from capwarden.credentials.ids import new_uuid7, uuid_text

TRANSITIONS = {
    "creating": {"active", "terminated"},
    "active": {"handover_pending", "terminating"},
    "handover_pending": {"active", "terminating"},
    "terminating": {"terminated"},
    "terminated": set(),
}


class IllegalTransition(RuntimeError):
    pass


class Session:
    def __init__(self, fay_id, runtime_id, resource_id, access_mode, now_mono):
        self.session_id = uuid_text(new_uuid7())
        self.fay_id = fay_id
        self.runtime_id = runtime_id
        self.resource_id = resource_id
        self.access_mode = access_mode
        self.granted_modes = ()
        self.state = "creating"
        self.suspended = False
        self.created_at = int(time.time())
        self.last_heartbeat_at = self.created_at
        self.last_hb_mono = now_mono          # liveness uses monotonic time only
        self.credential_ref = None            # {"type", "id", "not_after", "issuer_id"}
        self.board = None
        self.res = None
        self.token = 0                        # the board's session token
        self.epoch = 0
        self.interval_ms = 1000
        self.timeout_ms = 5000
        self.handover = None

    def move(self, new_state):
        if new_state not in TRANSITIONS[self.state]:
            raise IllegalTransition("%s -> %s" % (self.state, new_state))
        old = self.state
        self.state = new_state
        return old

    def to_json(self):
        return {"session_id": self.session_id, "fay_id": self.fay_id, "resource_id": self.resource_id,
                "access_mode": self.access_mode, "granted_modes": list(self.granted_modes), "state": self.state,
                "suspended": self.suspended, "created_at": self.created_at,
                "last_heartbeat_at": self.last_heartbeat_at,
                "expires_at": self.credential_ref["not_after"] if self.credential_ref else 0,
                "credential_ref": {k: self.credential_ref[k] for k in ("type", "id", "not_after")}
                if self.credential_ref else {}}
