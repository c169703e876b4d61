"""The runtime API's routes: for each request a runtime may send, its final response, the
enforcement rule that must allow it (pep.py) and the handler that acts on it (handlers.py).

This table is the one source of all three: the engine dispatches through it, the enforcement
point denies every message type without a route (responses and pushes included), and
tests/test_routes.py holds it to the shipped schema, the SDK and the tests. Adding a runtime
request takes a schema entry, one Route here (with its handler and rule), an SDK method and
tests.
"""

from typing import Callable, NamedTuple

from capwarden.engine import handlers
from capwarden.engine.pep import PolicyEnforcementPoint as Rules


class Route(NamedTuple):
    request: str        # the request's message_type
    response: str       # the message_type of its answer when it is not refused (an Error)
    rule: Callable      # rule(pep, runtime_id, body) -> target; raises CapError to deny
    handler: Callable   # async handler(engine, runtime_id, body, target, origin) -> response body


# S3, plus the two extensions in docs/DECISIONS.md (HandoverResponse, ResourceCommand).
ROUTES = {r.request: r for r in (
    Route("AuthRequest", "AuthResult", Rules.auth_request, handlers.auth_request),
    Route("Heartbeat", "HeartbeatAck", Rules.heartbeat, handlers.heartbeat),
    Route("SessionRelease", "SessionReleased", Rules.own_session, handlers.session_release),
    Route("FayTerminated", "SessionsReleased", Rules.fay_terminated, handlers.fay_terminated),
    Route("SessionQuery", "SessionList", Rules.session_query, handlers.session_query),
    Route("HandoverRequest", "HandoverResult", Rules.handover_request, handlers.handover_request),
    Route("HandoverResponse", "HandoverResponseAck", Rules.handover_response, handlers.handover_response),
    Route("ResourceCommand", "ResourceCommandResult", Rules.own_session, handlers.resource_command),
)}

# What the engine sends unasked, and the answer to a refused request: no route, never accepted
# from a runtime. Every message type of the schema is a request, a response, a push or ERROR.
PUSHES = ("SessionStateChanged", "HandoverOffered")
ERROR = "Error"
