"""What the SDK raises besides CapError (a refusal with its S2 code) and LinkClosed (the
connection dropped): both kinds below are capwarden errors (capwarden.errors.CapwardenError,
through LinkError) that are also the built-in kind a caller may already catch."""

from capwarden.errors import CapwardenError, LinkError


class EngineUnreachable(LinkError, ConnectionError):
    """connect() or reconnect() could not open a connection to the engine. `status` is the HTTP
    status of a refused handshake, else None.

    Examples: nothing listens at the URL or socket (an OSError before); the TLS handshake
    failed; 401, the token is not valid (check CAPWARDEN_TOKEN or --token); 404, the URL's
    path is not /cap/v1. Also a ConnectionError (and so an OSError).
    """

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class EngineTimeout(LinkError, TimeoutError):
    """Nothing came from the engine within the time given: no answer to a request within its
    `timeout`, or no end of a session awaited with Session.ended(timeout). Also a TimeoutError
    (asyncio.TimeoutError is that class)."""


class BadEngineURL(CapwardenError, ValueError):
    """connect() was given a URL that is not ws://HOST[:PORT]/PATH or wss://... (a port out of
    range, no host): nothing was opened. Also a ValueError."""
