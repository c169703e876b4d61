"""Errors of the trust services, each with the API code and HTTP status it answers with
(docs/trust-api.md "Conventions"). The service turns any TrustError into {"error", "message"};
anything else becomes `internal` without a traceback in the body."""

from capwarden.errors import CapwardenError


class TrustError(CapwardenError):
    """Base of the trust services' refusals. `code` and `status` are what the API answers."""
    code = "internal"
    status = 500
    exit_code = 1


class Unauthenticated(TrustError):
    """No token, or a token no authorizer or terminal holds."""
    code, status = "unauthenticated", 401


class Forbidden(TrustError):
    """Authenticated but not allowed: beyond the authorizer's policy (the message names the
    rule), a suspended authorizer or terminal, revoking what another authorizer issued."""
    code, status = "forbidden", 403


class NotFound(TrustError):
    """No such ticket, descriptor, terminal or list."""
    code, status = "not_found", 404


class InvalidRequest(TrustError):
    """A request that is malformed or asks for what no credential may hold (a ticket valid
    for more than 7 days, a grant pattern naming another terminal)."""
    code, status = "bad_request", 400


class Conflict(TrustError):
    """The state forbids it: already revoked, already superseded, a name already taken."""
    code, status = "conflict", 409


class Gone(TrustError):
    """A deregistered terminal."""
    code, status = "gone", 410
