"""The policy enforcement point: every runtime message passes here before anything acts on it.

Reference architecture (hyperty-runtime-architecture.txt): one enforcement point on the message
bus, default deny, no exemption list. A message is allowed only when

1. it comes from a runtime the server authenticated, and names that runtime as its sender;
2. its type has a route (routes.ROUTES: anything else, responses and pushes included, is refused);
3. the route's rule (a method below) allows it: a runtime acts only on its own sessions and on the handover offers made
   to it, and, when bound with `--runtime-fays`, only for its own Fays.

`check()` returns what the rule resolved from the registry (the session, the offer, the owned
subset of heartbeat ids), so a request handler never looks up a raw id by itself. Every deny
raises CapError with an S2 code; the engine answers and audits it.
"""

from capwarden.engine.registry import LIVE
from capwarden.errors import CapError


def deny(code, message):
    return CapError(code, message)


class PolicyEnforcementPoint:
    def __init__(self, registry, fay_bindings=None):
        self.registry = registry
        # runtime_id -> the Fays it may act for. A runtime with a binding acts for no other Fay;
        # one without (S4 defines none) is limited only by the credentials it presents.
        self.fay_bindings = {rid: frozenset(fays) for rid, fays in (fay_bindings or {}).items()}

    def check(self, runtime_id, msg, route):
        """What the message may act on, as its `route` (routes.ROUTES, None when it has none)
        resolves it. Raises CapError when it is denied."""
        if self.registry.runtime(runtime_id) is None:
            raise deny("E_PERMISSION_DENIED", "unknown runtime")
        if msg.get("sender_id") != runtime_id:
            raise deny("E_PERMISSION_DENIED", "sender_id %r is not this connection's runtime" % msg.get("sender_id"))
        if route is None:
            raise deny("E_PERMISSION_DENIED", "%s is not a request a runtime may send" % msg["message_type"])
        return route.rule(self, runtime_id, msg["body"])

    # ---- rules (named by routes.ROUTES) --------------------------------------------------------------------------------
    def _acts_for(self, runtime_id, fay_id):
        bound = self.fay_bindings.get(runtime_id)
        if bound is not None and fay_id not in bound:
            raise deny("E_PERMISSION_DENIED", "runtime %s does not act for %s" % (runtime_id, fay_id))

    def _own(self, runtime_id, session_id):
        s = self.registry.get(session_id)
        if s is None or s.state not in LIVE:
            raise deny("E_SESSION_NOT_FOUND", "no session %s (ended, or never granted)" % session_id)
        if s.runtime_id != runtime_id:
            raise deny("E_PERMISSION_DENIED", "session %s belongs to another runtime" % session_id)
        return s

    def auth_request(self, runtime_id, body):
        self._acts_for(runtime_id, body["fay_id"])

    def handover_request(self, runtime_id, body):
        self._acts_for(runtime_id, body["to_fay_id"])

    def fay_terminated(self, runtime_id, body):
        self._acts_for(runtime_id, body["fay_id"])

    def heartbeat(self, runtime_id, body):
        # Only the runtime's own live sessions are renewed; every other id, another runtime's
        # included, is "unknown": a heartbeat reveals nothing about others (faults.md 17).
        alive, unknown = [], []
        for sid in body["session_ids"]:
            s = self.registry.owned(runtime_id, sid)
            if s is not None and s.state in LIVE:
                alive.append(s)
            else:
                unknown.append(sid)
        return alive, unknown

    def own_session(self, runtime_id, body):
        return self._own(runtime_id, body["session_id"])

    def session_query(self, runtime_id, body):
        if "session_id" in body:
            return [self._own(runtime_id, body["session_id"])]
        return self.registry.of_runtime(runtime_id)

    def handover_response(self, runtime_id, body):
        h = self.registry.handovers.get(body["handover_id"])
        if h is None:
            raise deny("E_HANDOVER_TIMEOUT", "no pending handover %s (answered late, or never offered)"
                       % body["handover_id"])
        if h.holder.runtime_id != runtime_id:
            raise deny("E_PERMISSION_DENIED", "only the holder answers a handover offer")
        return h

