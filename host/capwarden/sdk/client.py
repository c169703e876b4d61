"""The runtime SDK's client and session objects."""

import asyncio
import base64
import inspect
import json

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from capwarden.engine import protocol
from capwarden.errors import CapError, LinkClosed


class Session:
    def __init__(self, client, body, fay_id):
        self.client = client
        self.session_id = body["session_id"]
        self.fay_id = fay_id
        self.resource_id = body["resource_id"]
        self.access_mode = body["access_mode"]
        self.granted_modes = body.get("granted_modes", [])
        self.expires_at = body.get("expires_at")
        self.interval_ms = body.get("heartbeat_interval_ms", 1000)
        self.timeout_ms = body.get("heartbeat_timeout_ms", 5000)
        self.state = "active"
        self.suspended = False
        self.changes = []
        self._callbacks = []
        self._ended = asyncio.get_running_loop().create_future()

    def on_change(self, callback):
        self._callbacks.append(callback)

    def _changed(self, body):
        self.state = body["state"]
        self.suspended = body["suspended"]
        self.changes.append(body)
        if self.state == "terminated" and not self._ended.done():
            self._ended.set_result(body["reason"])
        for cb in list(self._callbacks):
            cb(body)

    async def ended(self, timeout=None):
        """Wait until the session is terminated; returns the reason."""
        return await asyncio.wait_for(asyncio.shield(self._ended), timeout)

    async def heartbeat(self):
        """One heartbeat from the caller's loop. Returns True while the engine knows the session."""
        body = await self.client.request("Heartbeat", {"session_ids": [self.session_id]})
        return self.session_id in body["alive"]

    async def release(self):
        await self.client.request("SessionRelease", {"session_id": self.session_id})

    async def command(self, op, args=b""):
        body = await self.client.request("ResourceCommand", {
            "session_id": self.session_id, "op": op, "args": base64.urlsafe_b64encode(args).rstrip(b"=").decode()})
        d = body["data"]
        return base64.urlsafe_b64decode(d + "=" * (-len(d) % 4))


class Client:
    def __init__(self, ws, runtime_id):
        self.ws = ws
        self.runtime_id = runtime_id
        self.sessions = {}
        self.pushes = []
        self._pending = {}
        self._offer = None
        self._reader = asyncio.ensure_future(self._read())

    async def close(self):
        await self.ws.close()
        self._reader.cancel()

    def on_offer(self, callback):
        """callback(HandoverOffered body) -> bool or awaitable bool: consent or refuse."""
        self._offer = callback

    async def send_raw(self, text):
        await self.ws.send(text)

    async def request(self, message_type, body, timeout=60, raw=False):
        """Send one request; returns the response body. Raises CapError for an Error answer."""
        msg = protocol.make(message_type, body, self.runtime_id)
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg["message_id"]] = fut
        try:
            await self.ws.send(protocol.dumps(msg))
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg["message_id"], None)
        if raw:
            return reply
        if reply["message_type"] == "Error":
            raise CapError(reply["body"]["error_code"], reply["body"]["error_message"])
        return reply["body"]

    async def acquire(self, fay_id, resource_id, mode, credential, wait_ms=0):
        body = {"fay_id": fay_id, "resource_id": resource_id, "access_mode": mode, "credential": credential}
        if wait_ms:
            body["wait_ms"] = wait_ms
        r = await self.request("AuthRequest", body, timeout=60 + wait_ms / 1000.0)
        if r["result"] != "granted":
            raise CapError(r["error_code"], r["error_message"])
        s = Session(self, r, fay_id)
        self.sessions[s.session_id] = s
        return s

    async def handover(self, resource_id, to_fay_id, mode, credential, timeout_ms=10000):
        r = await self.request("HandoverRequest", {"resource_id": resource_id, "to_fay_id": to_fay_id,
                                                   "access_mode": mode, "credential": credential,
                                                   "timeout_ms": timeout_ms}, timeout=timeout_ms / 1000.0 + 30)
        if r["result"] == "completed":
            listed = await self.request("SessionQuery", {"session_id": r["session_id"]})
            info = listed["sessions"][0]
            s = Session(self, dict(info, heartbeat_interval_ms=1000), to_fay_id)
            self.sessions[s.session_id] = s
            r["session"] = s
        return r

    async def _read(self):
        try:
            async for frame in self.ws:
                msg = json.loads(frame)
                corr = msg.get("correlation_id")
                if corr in self._pending and not self._pending[corr].done():
                    self._pending[corr].set_result(msg)
                    continue
                self.pushes.append(msg)
                mtype = msg["message_type"]
                if mtype == "SessionStateChanged":
                    s = self.sessions.get(msg["body"]["session_id"])
                    if s:
                        s._changed(msg["body"])
                elif mtype == "HandoverOffered":
                    asyncio.ensure_future(self._answer(msg["body"]))
        except ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(LinkClosed("the engine closed the connection"))

    async def _answer(self, offer):
        accept = False
        if self._offer is not None:
            accept = self._offer(offer)
            if inspect.isawaitable(accept):
                accept = await accept
        try:
            await self.request("HandoverResponse", {"handover_id": offer["handover_id"], "accept": bool(accept)})
        except CapError:
            pass  # answered too late: the engine already rolled back


async def connect(url, runtime_id, token, ssl=None, unix_path=None):
    """Open a runtime connection. Raises an OSError or websockets error if refused."""
    headers = {"Authorization": "Bearer " + token}
    if unix_path:
        from websockets.asyncio.client import unix_connect

        ws = await unix_connect(unix_path, "ws://localhost/cap/v1", additional_headers=headers, max_size=None)
    else:
        ws = await ws_connect(url, additional_headers=headers, ssl=ssl, max_size=None, ping_interval=None)
    return Client(ws, runtime_id)
