"""Dual credentials (chapter 4 section 4.6): a Fay that holds a Trusted_Ticket and an
Authorization_Descriptor (or the terminal's conversion of its ticket) for the same resource.

    cred = DualCredential(ticket=token, descriptor_id=did)     # either may be None
    session = await acquire_dual(client, fay_id, resource_id, "read", cred)

Selection (the 4.6 table), by what the runtime knows of the terminal's mode (`online`, default
the client's `terminal_mode`: the engine's mode notices, or a ticket refused as offline):

| terminal | primary | fallback |
|---|---|---|
| online or not known | the ticket | the descriptor, else the converted credential |
| degraded | the descriptor, else the converted credential | the converted credential, else the ticket |

The converted credential is `descriptor_ref` = the ticket's jti: the terminal converts a
granted, convertible ticket to a local descriptor of that id (section 4.4.1), so it exists
once the ticket was granted there. The fallback is a second, independent AuthRequest (4.6:
"through two independent AuthRequests"), sent only when the terminal refused the primary
credential for a reason of the credential itself (FALLBACK_ON); a refusal for the resource
(busy, unavailable, unreachable, permission) is raised at once, since another credential
cannot change it. At most two AuthRequests per call.
"""

from capwarden.credentials import jws
from capwarden.errors import CapError

DEGRADED = "degraded"
OFFLINE_REJECTED = "E_TICKET_OFFLINE_REJECTED"
# Refusals where the other credential may succeed: the credential's own steps of S2 (parse,
# key and signature, validity, subject/terminal/resource/mode, revocation and the online checks).
FALLBACK_ON = ("E_TICKET_", "E_DESCRIPTOR_", "E_INVALID_SIGNATURE", "E_VERIFICATION_KEY_INVALID",
               "E_REVOCATION_QUERY_TIMEOUT")


class DualCredential:
    """What a Fay holds for one resource: a ticket (compact JWS), a descriptor id, or both."""

    def __init__(self, ticket=None, descriptor_id=None):
        if ticket is None and descriptor_id is None:
            raise ValueError("a DualCredential needs a ticket, a descriptor id, or both")
        self.ticket = ticket
        self.descriptor_id = descriptor_id
        self.converted_id = None
        if ticket is not None:
            try:
                t = jws.parse(ticket)     # read, not verified: the terminal verifies
            except CapError:
                t = None                  # the terminal will say what is wrong with it
            if t is not None and t.convertible:
                self.converted_id = t.credential_id

    def candidates(self, online):
        """The credential objects of an AuthRequest, in the order to try them (4.6 table)."""
        ticket = [{"type": "ticket", "ticket": self.ticket}] if self.ticket is not None else []
        ids = [d for d in (self.descriptor_id, self.converted_id) if d is not None]
        local = [{"type": "descriptor_ref", "descriptor_id": d} for d in dict.fromkeys(ids)]   # one per id
        return ticket + local if online else local + ticket

    def choose(self, online):
        """(primary, fallback or None) for the terminal's mode."""
        order = self.candidates(online)
        return order[0], (order[1] if len(order) > 1 else None)


def falls_back(code):
    """True when a refusal with S2 `code` is one the other credential may not share."""
    return code.startswith(FALLBACK_ON)


async def acquire_dual(client, fay_id, resource_id, mode, cred, online=None, wait_ms=0):
    """The selection of 4.6 and its fallback: returns the Session (its `credential` attribute
    says which credential was granted). `online`: True/False from the runtime's own knowledge,
    None for the client's `terminal_mode`. Raises CapError: the fallback's refusal when both
    were refused (its `primary_error` holds the primary's), else the primary's."""
    if online is None:
        online = client.terminal_mode != DEGRADED
    primary, fallback = cred.choose(online)
    try:
        session = await client.acquire(fay_id, resource_id, mode, primary, wait_ms=wait_ms)
        session.credential = primary
        return session
    except CapError as exc:
        if exc.code == OFFLINE_REJECTED:
            client.terminal_mode = DEGRADED     # what a runtime with no session learns it by
        if fallback is None or not falls_back(exc.code):
            raise
        first = exc
    try:
        session = await client.acquire(fay_id, resource_id, mode, fallback, wait_ms=wait_ms)
    except CapError as exc:
        exc.primary_error = first
        raise
    session.credential = fallback
    return session
