"""A granted session of the runtime SDK, and the marker of the SDK methods that send requests."""

import asyncio
import logging
from collections import deque

from capwarden.credentials.b64 import b64u_decode, b64u_encode
from capwarden.errors import CapError
from capwarden.sdk.errors import EngineTimeout

log = logging.getLogger("capwarden.sdk")

# The newest changes kept for reading back, per session (older ones are dropped, oldest first).
CHANGES_KEPT = 64


def sends(*message_types):
    """Marks a method as the SDK's way to send these runtime requests (tests/test_routes.py
    checks that every route has one)."""
    def mark(method):
        method.sends = message_types
        return method
    return mark


class Session:
    """A granted session. Its state follows the engine's pushes (SessionStateChanged)."""

    def __init__(self, client, body, fay_id, resource_id, access_mode):
        self.client = client
        self.session_id = body["session_id"]
        self.fay_id = fay_id
        self.resource_id = resource_id
        self.access_mode = access_mode
        self.granted_modes = body.get("granted_modes", [])
        self.expires_at = body.get("expires_at")
        self.interval_ms = body["heartbeat_interval_ms"]
        self.timeout_ms = body["heartbeat_timeout_ms"]
        self.state = "active"
        self.suspended = False
        self.changes = deque(maxlen=CHANGES_KEPT)
        self._callbacks = []
        self._ended = asyncio.get_running_loop().create_future()

    def on_change(self, callback):
        """callback(SessionStateChanged body) on every change; exceptions are logged, not raised."""
        self._callbacks.append(callback)

    def _changed(self, body):
        self.state = body["state"]
        self.suspended = body["suspended"]
        self.changes.append(body)
        if self.state == "terminated" and not self._ended.done():
            self._ended.set_result(body["reason"])
        for cb in list(self._callbacks):
            try:
                cb(body)
            except Exception:  # the author's callback must not stop the client from reading
                log.exception("on_change callback failed")

    async def ended(self, timeout=None):
        """Wait until the session is terminated; returns the reason. Raises EngineTimeout after
        `timeout` seconds (None: no limit)."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._ended), timeout)
        except TimeoutError:
            raise EngineTimeout("session %s did not end within %s s" % (self.session_id, timeout)) from None

    @sends("Heartbeat")
    async def heartbeat(self):
        """One heartbeat, sent from the caller's own loop (so a hung loop stops it, faults.md 10).
        Returns True while the engine knows the session. Raises what Client.request raises."""
        body = await self.client.request("Heartbeat", {"session_ids": [self.session_id]})
        if self.session_id not in body["alive"]:
            self.client._forget(self.session_id)
            return False
        return True

    @sends("Heartbeat")
    async def busy(self, ms):
        """A heartbeat saying a long but healthy operation is under way (faults.md 18): the
        session is not suspended or expired for `ms` milliseconds, within the engine's maximum;
        the next plain heartbeat ends it (busy(0) too). Returns the milliseconds granted, which
        may be less than asked. Raises CapError (E_SESSION_NOT_FOUND when the engine no longer
        knows the session), and what Client.request raises."""
        body = await self.client.request("Heartbeat", {"session_ids": [self.session_id], "busy_ms": int(ms)})
        if self.session_id not in body["alive"]:
            raise CapError("E_SESSION_NOT_FOUND", "the engine no longer knows session %s" % self.session_id)
        return body["busy_ms"]

    @sends("SessionRelease")
    async def release(self):
        """End the session (SessionRelease). Raises what Client.request raises."""
        await self.client.request("SessionRelease", {"session_id": self.session_id})
        self.client._forget(self.session_id)

    @sends("ResourceCommand")
    async def command(self, op, args=b""):
        """Run driver operation `op` with `args` on the resource; returns the answer bytes.
        Raises CapError (E_PERMISSION_DENIED when suspended or not allowed by the mode; E_INTERNAL
        for answer data that is not base64url), and what Client.request raises."""
        body = await self.client.request("ResourceCommand", {
            "session_id": self.session_id, "op": op, "args": b64u_encode(args)})
        try:
            return b64u_decode(body["data"])
        except ValueError:
            raise CapError("E_INTERNAL", "the engine answered data that is not base64url") from None
