"""Sessions (chapter 2 section 2.5) and their state machine.

Every transition but those out of `creating` is pushed to the owning runtime as
SessionStateChanged with `previous_state`, `state` and `reason` (the requester of a session
still `creating` learns its fate from its own AuthResult or HandoverResult instead).

| from             | to               | reason pushed         | when                                       |
|------------------|------------------|-----------------------|--------------------------------------------|
| creating         | active           | granted, handover     | credential valid and the board locked it   |
|                  |                  |                       | (or moved it here by a handover)           |
| creating         | terminated       | (not pushed)          | denied by the board, withdrawn while it    |
|                  |                  |                       | waited, or a handover that did not happen  |
| active           | handover_pending | handover_offered      | the holder is offered a handover           |
| handover_pending | active           | handover_rejected,    | the holder refused, or the offer timed out |
|                  |                  | handover_timeout      | (rollback: the holder keeps control)       |
| handover_pending | terminating      | handover              | the holder consented: the board moved it   |
| active or        | terminating      | released,             | SessionRelease                             |
| handover_pending |                  | fay_terminated,       | FayTerminated                              |
|                  |                  | heartbeat_timeout,    | AND rule: connection down, heartbeat late  |
|                  |                  | credential_expired,   | not_after (+ leeway) or the key's end      |
|                  |                  | revoked, key_invalid, | revocation or key change in the store      |
|                  |                  | resource_removed,     | resource unplugged                         |
|                  |                  | resource_fault,       | resource faulted                           |
|                  |                  | board_reset,          | the board rebooted (new boot id)           |
|                  |                  | lease_expired,        | the board ended the grant while unheard    |
|                  |                  | board_unreachable,    | a handover's outcome could not be read     |
|                  |                  | engine_stopped,       | `capwarden serve` is stopping              |
|                  |                  | operator_takeover,    | an operator took it (takeover.py)          |
|                  |                  | manual_override       | the board's manual override input took it  |
| terminating      | terminated       | the same reason       | the board grant is released (or was gone)  |

`suspended` is a flag on an active session, not a state (S3): pushed with state unchanged and
reason heartbeat_missed when the connection is up but heartbeats stopped, heartbeat_resumed
when they return. Any transition not in TRANSITIONS is a bug and raises IllegalTransition.
"""

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
    def __init__(self, fay_id, runtime_id, resource_id, access_mode, now_mono, now_wall):
        self.session_id = uuid_text(new_uuid7())
        self.fay_id = fay_id
        self.runtime_id = runtime_id
        self.resource_id = resource_id
        self.access_mode = access_mode
        self.granted_modes = ()
        self.state = "creating"
        self.suspended = False
        self.created_at = int(now_wall)
        self.last_heartbeat_at = self.created_at
        self.last_hb_mono = now_mono          # liveness uses monotonic time only
        self.credential_ref = None            # CredentialRef (type, id, not_after) + what re-checks need
        self.checked_generation = None        # the authorizer generation it was last checked under
        self.board = None                     # registry.BoardHandle
        self.res = None                       # the resource's index on that board
        self.token = 0                        # the board's session token
        self.epoch = 0                        # the board's fencing epoch of this grant
        self.interval_ms = 1000
        self.timeout_ms = 5000
        self.busy_ms = 0                      # the busy marker of the last heartbeat (faults.md 18)
        self.handover = None                  # handover.Handover offered to this holder
        self.moved_from = None                # the operator's hold a hand-back is moving to this waiting request
        self.origin = None                    # the connection a creating session's answer goes to

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
                "expires_at": self.credential_ref["ends_at"] if self.credential_ref else 0,
                "credential_ref": {k: self.credential_ref[k] for k in ("type", "id", "not_after")}
                if self.credential_ref else {}}
