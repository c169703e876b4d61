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

Handover offers reach `client.on_offer(callback)`; the callback returns (or awaits) True to
consent. After a dropped connection, `await client.reconnect()` and heartbeat within the
sessions' timeout: they belong to the runtime, not to the connection. Errors come back as
capwarden.errors.CapError with the S2 code; requests that do not match the shipped schema
(shared/schema/v1/schema.json) are refused before they are sent.
"""

from capwarden.sdk.client import Client, Session, connect

__all__ = ["Client", "Session", "connect"]
