"""Push to the fleet over MQTT (issue 13 item 3): "revocation list version N", "key set version N".

A push only says "fetch now": the signed document over HTTPS stays the source of truth, so a
message carries a kind and a version and nothing a terminal acts on without fetching and
verifying (docs/trust-api.md "Push"). Topics:

    capwarden/v1/terminals/{terminal_id}   {"kind": "revocations", "version": N}
    capwarden/v1/keysets                   {"kind": "keyset", "version": N}

The service calls a publisher after each commit. `MqttPublisher` never fails or delays that
answer: a call only records the newest version per topic and wakes one background task that
owns the broker connection, publishes at QoS 1 (the broker acknowledges each message; a message
lost with a connection is sent again after the reconnect) and reconnects with a growing pause
when the broker is gone, logging as it goes. Versions only grow and a terminal fetches whatever
is newest, so versions waiting for the same topic are merged: the backlog is bounded by the
number of topics, never by the number of events.

`listen()` is the terminal's side: subscribe, hand each valid message to a callback, reconnect.
"""

import asyncio
import json
import logging
import ssl
import urllib.parse

from capwarden.engine.server import is_loopback
from capwarden.errors import CapwardenError

log = logging.getLogger("capwarden.trust.push")

TOPIC_ROOT = "capwarden/v1"
KEYSET_TOPIC = TOPIC_ROOT + "/keysets"
REVOCATIONS = "revocations"
KEYSET = "keyset"
KINDS = (REVOCATIONS, KEYSET)
QOS = 1
MAX_MESSAGE = 256                 # {"kind": "revocations", "version": N} is about 40 bytes
MAX_VERSION = (1 << 53) - 1
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0
PUBLISH_TIMEOUT_S = 10.0
MAX_INFLIGHT = 256                # QoS 1 publishes awaiting their PUBACK at once
DEFAULT_PORT = {"mqtt": 1883, "mqtts": 8883}


class PushError(CapwardenError):
    """A broker address or push message that cannot be used. Examples: a URL that is not
    mqtt:// or mqtts://, plain mqtt:// to a broker that is not on loopback, a message that is
    not {"kind", "version"}."""


def terminal_topic(terminal_id):
    return "%s/terminals/%s" % (TOPIC_ROOT, terminal_id)


def encode_message(kind, version):
    return json.dumps({"kind": kind, "version": version}, separators=(",", ":")).encode()


def decode_message(data):
    """(kind, version) of a push message. Raises PushError for anything else."""
    try:
        if len(data) > MAX_MESSAGE:
            raise ValueError("longer than %d bytes" % MAX_MESSAGE)
        obj = json.loads(bytes(data))
    except (ValueError, TypeError) as exc:
        raise PushError("push message is not JSON: %s" % exc) from None
    if (type(obj) is not dict or set(obj) != {"kind", "version"} or obj["kind"] not in KINDS
            or type(obj["version"]) is not int or not 0 <= obj["version"] <= MAX_VERSION):
        raise PushError("push message is not {\"kind\": %s, \"version\": N}" % "|".join(KINDS))
    return obj["kind"], obj["version"]


class Broker:
    """Where and how to connect: from mqtt://[USER[:PASS]@]HOST[:PORT] or mqtts://... (TLS,
    port 8883 by default). Plain mqtt:// only to a loopback broker, as the engine allows plain
    ws:// only on loopback: a fleet's broker carries per-terminal passwords. Keyword options
    override the URL: username, password, ca_file (the broker's CA; the system's by default),
    cert_file and key_file (a client certificate), client_id."""

    def __init__(self, url, username=None, password=None, ca_file=None, cert_file=None, key_file=None,
                 client_id=None):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in DEFAULT_PORT or not u.hostname:
            raise PushError("broker URL %r: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]" % _safe(url))
        try:
            self.port = u.port or DEFAULT_PORT[u.scheme]
        except ValueError:
            raise PushError("broker URL %r: bad port" % _safe(url)) from None
        self.host = u.hostname
        self.tls = u.scheme == "mqtts"
        if not self.tls and not is_loopback(self.host):
            raise PushError("plain mqtt:// is only allowed to a loopback broker: use mqtts://%s" % self.host)
        self.username = username if username is not None else (urllib.parse.unquote(u.username) if u.username else None)
        self.password = password if password is not None else (urllib.parse.unquote(u.password) if u.password else None)
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.client_id = client_id

    def __repr__(self):
        return "Broker(%s://%s:%d)" % ("mqtts" if self.tls else "mqtt", self.host, self.port)

    def client(self, **kw):
        """An aiomqtt.Client for this broker (not yet connected: use it with `async with`)."""
        import aiomqtt

        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        return aiomqtt.Client(self.host, self.port, username=self.username, password=self.password,
                              identifier=self.client_id, tls_context=ctx, timeout=PUBLISH_TIMEOUT_S, **kw)


def _safe(url):
    """A URL without its password, for messages (errors never print a secret)."""
    u = urllib.parse.urlsplit(url)
    if u.password is None:
        return url
    return url.replace(":" + u.password + "@", ":***@", 1)


class NullPublisher:
    """No broker configured: terminals learn of changes by polling. Does nothing."""

    async def start(self):
        pass

    async def revocations(self, versions):
        pass

    async def keyset(self, version):
        pass

    async def aclose(self):
        pass


class MqttPublisher:
    """Publishes to an MQTT broker in the background. revocations({terminal_id: version}) and
    keyset(version) return at once, whatever the broker's state; start() (optional: the first
    call starts it too) and aclose() belong to the service's lifespan."""

    def __init__(self, url, **options):
        self.broker = url if isinstance(url, Broker) else Broker(url, **options)
        self._pending = {}           # topic -> newest version not yet acknowledged by the broker
        self._wake = asyncio.Event()
        self._task = None
        self.connected = False
        self.published = 0           # messages the broker acknowledged (tests, status)

    async def start(self):
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="capwarden-mqtt-publisher")

    async def revocations(self, versions):
        for tid, version in versions.items():
            self._note(terminal_topic(tid), version)
        await self.start()

    async def keyset(self, version):
        self._note(KEYSET_TOPIC, version)
        await self.start()

    def _note(self, topic, version):
        if version > self._pending.get(topic, -1):
            self._pending[topic] = version
            self._wake.set()

    async def aclose(self):
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self):
        import aiomqtt

        pause = RECONNECT_FIRST_S
        while True:
            try:
                async with self.broker.client(max_inflight_messages=MAX_INFLIGHT) as client:
                    self.connected = True
                    log.info("push: connected to %r", self.broker)
                    pause = RECONNECT_FIRST_S
                    # The publisher subscribes to nothing: its message iterator ends only when
                    # the connection does, which is how a broker lost while idle is noticed.
                    lost = asyncio.get_running_loop().create_task(_until_disconnected(client))
                    try:
                        while True:
                            if not self._pending:
                                self._wake.clear()
                                woken = asyncio.get_running_loop().create_task(self._wake.wait())
                                try:
                                    await asyncio.wait((woken, lost), return_when=asyncio.FIRST_COMPLETED)
                                finally:
                                    woken.cancel()
                                if lost.done():
                                    lost.result()
                            await self._drain(client)
                    finally:
                        lost.cancel()
            except aiomqtt.MqttError as exc:
                log.warning("push: broker %r unavailable (%s); %d topic(s) waiting, retrying in %.1f s",
                            self.broker, exc, len(self._pending), pause)
            except (OSError, ssl.SSLError) as exc:
                log.warning("push: cannot reach %r (%s); retrying in %.1f s", self.broker, exc, pause)
            finally:
                self.connected = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECONNECT_MAX_S)

    async def _drain(self, client):
        batch = list(self._pending.items())[:MAX_INFLIGHT]

        async def one(topic, version):
            await client.publish(topic, encode_message(_kind(topic), version), qos=QOS)
            # Forget the topic only when nothing newer arrived while the broker acknowledged.
            if self._pending.get(topic) == version:
                del self._pending[topic]
            self.published += 1

        results = await asyncio.gather(*(one(t, v) for t, v in batch), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r   # what is not acknowledged stays pending for the next connection


async def _until_disconnected(client):
    async for _msg in client.messages:
        pass


def _kind(topic):
    return KEYSET if topic == KEYSET_TOPIC else REVOCATIONS


def publisher_for(url, **options):
    """The publisher for a service configuration: NullPublisher without a broker URL."""
    return MqttPublisher(url, **options) if url else NullPublisher()


async def listen(broker, topics, on_message, on_connect=None):
    """Subscribe to `topics` on `broker` (a Broker) and call `await on_message(kind, version)`
    for every valid message, until cancelled. Reconnects with a growing pause; after each
    (re)connection `await on_connect()` runs (a terminal fetches then: pushes sent while it was
    away are not queued for it). Invalid messages are logged and dropped: a push is only a hint."""
    import aiomqtt

    pause = RECONNECT_FIRST_S
    while True:
        try:
            async with broker.client() as client:
                for t in topics:
                    await client.subscribe(t, qos=QOS)
                pause = RECONNECT_FIRST_S
                if on_connect is not None:
                    await on_connect()
                async for msg in client.messages:
                    try:
                        kind, version = decode_message(msg.payload)
                    except PushError as exc:
                        log.warning("push: dropped a message on %s: %s", msg.topic, exc)
                        continue
                    await on_message(kind, version)
        except aiomqtt.MqttError as exc:
            log.warning("push: broker %r unavailable (%s); retrying in %.1f s", broker, exc, pause)
        except (OSError, ssl.SSLError) as exc:
            log.warning("push: cannot reach %r (%s); retrying in %.1f s", broker, exc, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, RECONNECT_MAX_S)
