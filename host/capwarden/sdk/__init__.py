"""A small async client for runtime authors (cap-supplement S3).

    client = await connect("ws://127.0.0.1:8765/cap/v1", "runtime-1", token)
    session = await client.acquire(fay_id, resource_id, "write",
                                   {"type": "descriptor_ref", "descriptor_id": did})
    session.on_change(lambda change: print(change))      # SessionStateChanged bodies
    await session.heartbeat()                            # from your own control loop, or
    await client.heartbeat()                             # one message for all your sessions
    data = await session.command(op=1, args=b"\\xf4\\x01")
    await session.release()
    await client.close()

Dual credentials (chapter 4 section 4.6): `await client.acquire_dual(fay_id, resource_id, mode,
DualCredential(ticket=token, descriptor_id=did))` picks the ticket while the terminal is online,
the descriptor (or the terminal's conversion of the ticket) while it is degraded, and tries the
other in a second AuthRequest when the first is refused for the credential; `client.terminal_mode`
follows the engine's mode notices (sdk/dual.py).

`client.query_sessions()` lists the runtime's sessions, `client.fay_terminated(fay_id)` ends
every session held for a Fay.

Handover offers reach `client.on_offer(callback)`; the callback returns (or awaits) True to
consent. After a dropped connection, `await client.reconnect()` and heartbeat within the
sessions' timeout: they belong to the runtime, not to the connection.

Everything the SDK raises is a capwarden error (catch capwarden.errors.CapwardenError for all):
CapError with the S2 code for a refusal (E_MALFORMED_REQUEST, before sending, for a request
that does not match the shipped schema, shared/schema/v1/schema.json); LinkClosed when the
connection drops; EngineTimeout (also a TimeoutError) when no answer comes in time;
EngineUnreachable (also a ConnectionError) when connect() or reconnect() cannot open one;
BadEngineURL (also a ValueError) for a URL that is not one.
The SDK needs the schema and capwarden.runtimeapi, nothing of the engine.
"""

from capwarden.errors import CapError, LinkClosed
from capwarden.sdk.client import Client, Session, connect
from capwarden.sdk.dual import DualCredential
from capwarden.sdk.errors import BadEngineURL, EngineTimeout, EngineUnreachable

__all__ = ["Client", "Session", "connect", "DualCredential", "CapError", "LinkClosed", "EngineTimeout", "EngineUnreachable", "BadEngineURL"]
