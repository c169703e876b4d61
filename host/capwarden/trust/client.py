"""The terminal's client of the trust services (issue 13 item 4), used by the engine (issue 14).

    c = TrustClient("https://trust.example", state_dir, anchor=ra_public_keys)
    await c.register(enrollment_secret)            # once: device key proof, token, terminal id
    await c.sync_keysets()                         # walk key sets one version at a time, ack each
    await c.sync_revocations()                     # delta from the version held, or a full list
    status = await c.ticket_status(jti)            # signed ticket-status (§4.3.2 step 5)
    await c.run()                                  # push (MQTT) + jittered poll, until cancelled

Nothing from the service is acted on before its signature is checked (capwarden.trust.signed):
key sets against the RA trust held (capwarden.trust.keysets.verify_next, TUF's walk); revocation
lists, their entries and ticket statuses against the issuer Verification_Keys of the last key
set verified. The transport (TLS) protects the token, never the content. What a terminal stores
is handed to the caller first (on_keyset, on_revocations) and the version recorded only once
that returned, so a crash in between fetches the same document again rather than losing it.

What the client keeps in its state folder: capwarden.trust.clientstate.
"""

import asyncio
import inspect
import logging
import random as _random
import time
import urllib.parse

import httpx

from capwarden.credentials import cbor, keys
from capwarden.credentials.model import parse_key_json, parse_revocation_obj
from capwarden.credentials.revocation import MAX_STATEMENT, statement_signed_bytes
from capwarden.engine.server import is_loopback
from capwarden.errors import CapError, CapwardenError
from capwarden.trust import clientstate, keysets, push, signed
from capwarden.trust.signed import SignedDocError

log = logging.getLogger("capwarden.trust.client")

POLL_MIN_S = 5.0
POLL_MAX_S = 30.0
HTTP_TIMEOUT_S = 5.0
STATUS_MAX_AGE_S = 300         # a ticket status older than this is a replay (issue 14 caches <= 5 min)
CLOCK_LEEWAY_S = 60
MAX_WALK = 1000                # key-set versions walked in one sync: a bound, not a policy


class TrustClientError(CapwardenError):
    """Base of the trust client's errors."""


class TrustConfigError(TrustClientError):
    """The client cannot be used as configured. Examples: plain http:// to a service that is not
    on loopback, no RA anchor, a state folder of another terminal. Fix the configuration."""

    exit_code = 2


class NotRegistered(TrustClientError):
    """The terminal has no registration yet: run register() (`capwarden trust` enrollment)."""

    exit_code = 2


class TrustUnavailable(TrustClientError):
    """The service could not be reached or failed (connection refused, timeout, HTTP 5xx).
    The terminal goes on with what it holds (issue 14 degrades on this)."""


class TrustTimeout(TrustUnavailable, TimeoutError):
    """The service did not answer within the client's timeout."""


class TrustRefused(TrustClientError):
    """The service answered with an error (4xx): `status` and `code` (docs/trust-api.md),
    e.g. 401 unauthenticated (a revoked token), 403 forbidden (a suspended terminal)."""

    def __init__(self, status, code, message):
        self.status, self.code = status, code
        super().__init__("trust service refused (%d %s): %s" % (status, code, message))


class UntrustedDocument(TrustClientError):
    """A document from the service that must not be acted on: bad signature, unknown signer,
    wrong type or terminal, a key-set walk that does not hold. Nothing of it was used."""


class UnknownSigner(UntrustedDocument):
    """A document (or a revocation list entry) signed only by keys the key set held does not
    list: perhaps an issuer key rotated in with no lead time, so the client syncs its key sets
    and tries once more before refusing it."""


class RollbackRefused(UntrustedDocument):
    """A document older than what the terminal holds (a replayed revocation list, a lower key
    set): refused, the terminal never goes back to a lower version."""


class TicketStatus:
    __slots__ = ("jti", "revoked", "revoked_at", "checked_at")

    def __init__(self, jti, revoked, revoked_at, checked_at):
        self.jti, self.revoked, self.revoked_at, self.checked_at = jti, revoked, revoked_at, checked_at

    def __repr__(self):
        return "TicketStatus(%r, revoked=%r, revoked_at=%r, checked_at=%r)" % (
            self.jti, self.revoked, self.revoked_at, self.checked_at)


async def _call(cb, *args):
    if cb is not None:
        r = cb(*args)
        if inspect.isawaitable(r):
            await r


class TrustClient:
    """One terminal's client. `base_url`: the service (https://, or http:// on loopback only);
    `state_dir`: its state folder. Options:

    anchor: the RA public keys handed over at enrollment (list of {"key_id", "algorithm",
        "key_material"}); needed until the first key set is held, kept in the state after.
    device_key: a credentials SigningKey or PrivateKey; default: device.key in state_dir,
        generated at registration.
    on_keyset(payload): store a verified key set (its "keys" are Verification_Key JSON, source
        ra-distributed) before it is acknowledged; on_revocations(statements, full): import
        verified RevocationStatements (CBOR bytes each; full=True for a full list). Either may
        be a coroutine function; an exception leaves the version held unchanged.
    mqtt_url / mqtt_options: the push broker (push.Broker); none: poll only.
    poll_min_s, poll_max_s: the jittered poll; http: an httpx.AsyncClient to use (tests: the
    service app in-process); ca_file: the service's CA; timeout_s; now (wall clock, for
    ticket-status age), random and sleep: injectable for tests.
    """

    def __init__(self, base_url, state_dir, anchor=None, device_key=None, on_keyset=None, on_revocations=None,
                 mqtt_url=None, mqtt_options=None, poll_min_s=POLL_MIN_S, poll_max_s=POLL_MAX_S, http=None,
                 ca_file=None, timeout_s=HTTP_TIMEOUT_S, now=time.time, random=_random.random, sleep=asyncio.sleep):
        u = urllib.parse.urlsplit(base_url)
        if u.scheme not in ("https", "http") or not u.hostname:
            raise TrustConfigError("trust service URL %r: expected https://HOST[:PORT]" % base_url)
        if u.scheme == "http" and not is_loopback(u.hostname):
            raise TrustConfigError("plain http:// is only allowed to a loopback service: use https://%s" % u.netloc)
        if not 0 < poll_min_s <= poll_max_s:
            raise TrustConfigError("the poll interval needs 0 < poll_min_s <= poll_max_s")
        self.base_url = base_url.rstrip("/")
        self.state_dir = state_dir
        self.on_keyset, self.on_revocations = on_keyset, on_revocations
        self.poll_min_s, self.poll_max_s = poll_min_s, poll_max_s
        self._now, self._random, self._sleep = now, random, sleep
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout_s, verify=ca_file or True)
        self.broker = push.Broker(mqtt_url, **(mqtt_options or {})) if mqtt_url else None
        self._kick = asyncio.Event()
        self._wanted = set()            # push kinds that named a newer version since the last sync
        self._ks_lock = asyncio.Lock()
        self._rl_lock = asyncio.Lock()
        self.last_success = None        # time.monotonic() of the last answer from the service
        self.failures = 0               # consecutive TrustUnavailable
        clientstate.open_folder(state_dir)
        try:
            self.state = clientstate.load(state_dir, self.base_url, anchor)
        except SignedDocError as exc:
            raise TrustConfigError("the RA anchor given: %s" % exc) from None
        except ValueError as exc:
            raise TrustConfigError(str(exc)) from None
        self._device_key = device_key
        self._keys_cache = None         # (key-set version, [(key record, PublicKey)])

    # ---- state ---------------------------------------------------------------------------
    def _save(self):
        clientstate.save(self.state_dir, self.state)

    @property
    def terminal_id(self):
        return self.state["terminal_id"]

    @property
    def keyset_version(self):
        return self.state["keyset_version"]

    @property
    def revocations_version(self):
        return self.state["revocations_version"]

    def keyset(self):
        """The payload of the last key set verified, or None."""
        doc = self.state["keyset"]
        return None if doc is None else signed.payload_of(doc, signed.KEY_SET)

    def device_key(self):
        """The device key (SigningKey), loaded from or created in the state folder."""
        if self._device_key is None:
            self._device_key = clientstate.device_key(self.state_dir, self._now())
        return self._device_key

    def _issuer_keys(self):
        """{key_id: (PublicKey, issuer_id)} of the issuer keys of the key set held that are not
        revoked or past their valid_until (parsed once per key-set version)."""
        version = self.state["keyset_version"]
        if self._keys_cache is None or self._keys_cache[0] != version:
            ks = self.keyset()
            if ks is None:
                raise UntrustedDocument("no key set held yet: run sync_keysets() before anything signed by the issuer")
            recs = [parse_key_json(k) for k in ks["keys"]]
            self._keys_cache = (version, [(r, keys.load(r["algorithm"], r["key_material"])) for r in recs])
        now = self._now()
        return {r["key_id"]: (pub, r["issuer_id"]) for r, pub in self._keys_cache[1]
                if not r["revoked"] and (r["valid_until"] is None or r["valid_until"] >= now - CLOCK_LEEWAY_S)}

    def _verify(self, doc, kind):
        trusted = {kid: pub for kid, (pub, _iss) in self._issuer_keys().items()}
        try:
            return signed.verify(doc, kind, trusted, need=1)
        except SignedDocError as exc:
            sigs = doc.get("signatures") if isinstance(doc, dict) else None
            kids = [s.get("kid") for s in sigs if isinstance(s, dict)] if isinstance(sigs, list) else []
            if kids and not any(k in trusted for k in kids):
                raise UnknownSigner("%s signed by %s, not a key of the key set held (version %d)" % (
                    kind, ", ".join(str(k)[:64] for k in kids[:4]), self.state["keyset_version"])) from None
            raise UntrustedDocument(str(exc)) from None

    # ---- HTTP ----------------------------------------------------------------------------
    async def _request(self, method, path, auth=True, body=None, timeout_s=None):
        headers = {}
        if auth:
            if not self.state["token"]:
                raise NotRegistered("this terminal is not registered: call register() first")
            headers["Authorization"] = "Bearer " + self.state["token"]
        extra = {} if timeout_s is None else {"timeout": timeout_s}
        try:
            try:
                r = await self.http.request(method, self.base_url + path, json=body, headers=headers, **extra)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                if method != "GET":
                    raise
                # A kept-alive connection the service closed as this request went out: a GET
                # is safe to send again, once, rather than wait for the next poll.
                r = await self.http.request(method, self.base_url + path, json=body, headers=headers, **extra)
        except httpx.TimeoutException as exc:
            self.failures += 1
            raise TrustTimeout("trust service did not answer %s %s in time (%s)" % (method, path, type(exc).__name__))
        except httpx.TransportError as exc:
            self.failures += 1
            raise TrustUnavailable("trust service unreachable (%s: %s)" % (type(exc).__name__, exc)) from None
        if r.status_code >= 500:
            self.failures += 1
            raise TrustUnavailable("trust service failed: HTTP %d on %s %s" % (r.status_code, method, path))
        self.failures = 0
        self.last_success = time.monotonic()
        try:
            obj = r.json()
        except ValueError:
            obj = None
        if r.status_code >= 400:
            code = obj.get("error", "?") if isinstance(obj, dict) else "?"
            msg = obj.get("message", "") if isinstance(obj, dict) else ""
            raise TrustRefused(r.status_code, code, msg)
        if not isinstance(obj, dict):
            raise UntrustedDocument("%s %s: the answer is not a JSON object" % (method, path))
        return obj

    # ---- registration (§4.4) -------------------------------------------------------------
    async def register(self, enrollment_secret, terminal_id=None):
        """Register once with the operator's enrollment secret, proving possession of the device
        key. Returns the terminal id (the RA's, or `terminal_id` confirmed). Raises
        TrustRefused (a used or unknown secret: 401/403/409), UntrustedDocument (an answer not
        signed by the anchor, or naming another terminal or key), TrustUnavailable."""
        dk = self.device_key()
        body = {"enrollment_secret": enrollment_secret, "device_key": keysets.device_key_json(dk),
                "proof": keysets.sign_proof(dk, enrollment_secret, terminal_id)}
        if terminal_id:
            body["terminal_id"] = terminal_id
        ans = await self._request("POST", "/v1/registrations", auth=False, body=body)
        try:
            p = keysets.verify_registration(self.state["anchor"], ans.get("registration"))
        except SignedDocError as exc:
            raise UntrustedDocument("registration: %s" % exc) from None
        tid = ans.get("terminal_id")
        if (p.get("terminal_id") != tid or (terminal_id and tid != terminal_id)
                or p.get("device_key") != keysets.device_key_json(dk)):
            raise UntrustedDocument("the registration names another terminal or device key")
        if type(ans.get("token")) is not str or not ans["token"]:
            raise UntrustedDocument("the registration answer holds no token")
        self.state.update(terminal_id=tid, token=ans["token"], registered_key_set=p.get("key_set_version", 0))
        self._save()
        return tid

    async def terminal_status(self):
        """GET /v1/terminals/{tid}: registration status, key set acknowledged, revocation
        version as the service sees them (unsigned: for display and status only)."""
        return await self._request("GET", "/v1/terminals/%s" % self._tid())

    def _tid(self):
        if not self.state["terminal_id"]:
            raise NotRegistered("this terminal is not registered: call register() first")
        return self.state["terminal_id"]

    # ---- key sets ------------------------------------------------------------------------
    async def sync_keysets(self):
        """Bring the key set up to the service's latest, one version at a time, each verified
        against the one before (or the enrollment anchor), stored (on_keyset) and acknowledged.
        Returns the version held. Raises UntrustedDocument / RollbackRefused (nothing of that
        version used; the walk stops there), TrustRefused, TrustUnavailable."""
        async with self._ks_lock:
            if self.state["keyset_acked"] < self.state["keyset_version"]:
                await self._ack(self.state["keyset"])
            latest = (await self._request("GET", "/v1/keysets/latest")).get("version")
            if type(latest) is not int or latest < 0:
                raise UntrustedDocument("keysets/latest: version must be a non-negative integer")
            held = self.state["keyset_version"]
            if latest < held:
                raise RollbackRefused("the service offers key set %d, this terminal holds %d" % (latest, held))
            if held == 0 and latest:
                # From the anchor: the set current at registration is the first one the anchor
                # signed; a service rotated since then is walked from there.
                held = max(0, min(latest, self.state["registered_key_set"] or latest) - 1)
            for version in range(held + 1, min(latest, held + MAX_WALK) + 1):
                await self._take_keyset(version)
            return self.state["keyset_version"]

    async def _take_keyset(self, version):
        doc = await self._request("GET", "/v1/keysets/%d" % version)
        current = self.keyset() or self.state["anchor"]
        try:
            p = keysets.verify_next(current, doc)
        except SignedDocError as exc:
            raise UntrustedDocument("key set %d: %s" % (version, exc)) from None
        if p["version"] != version:
            raise UntrustedDocument("asked for key set %d, got %d" % (version, p["version"]))
        await _call(self.on_keyset, p)
        self.state.update(keyset=doc, keyset_version=version)
        self._save()
        await self._ack(doc)

    async def _ack(self, doc):
        ack = keysets.build_ack(self.device_key(), self._tid(), doc)
        version = signed.payload_of(doc, signed.KEY_SET)["version"]
        await self._request("POST", "/v1/keysets/%d/ack" % version, body=ack)
        self.state["keyset_acked"] = version
        self._save()

    # ---- revocation lists ----------------------------------------------------------------
    async def sync_revocations(self):
        """Fetch the revocation list from the version held: a delta applied only on that exact
        base, a full list otherwise; never back to a lower version. A delta on another base (a
        gap, or a base the terminal does not hold) is refused and a full list asked for.
        Verified entries go to on_revocations before the new version is recorded. A list (or an
        entry) signed by a key the key set held does not know makes it sync the key sets and
        try once more (UnknownSigner if it still does not verify). Returns the version held.
        Raises UntrustedDocument, RollbackRefused, TrustRefused, TrustUnavailable."""
        try:
            return await self._sync_revocations()
        except UnknownSigner as exc:
            # An issuer key rotated in with no lead time signs lists before this terminal has
            # the key set that holds it: fetch the key sets (each verified as always), once.
            log.info("revocation list: %s; synchronising the key sets and trying again", exc)
            await self.sync_keysets()
            return await self._sync_revocations()

    async def _sync_revocations(self):
        async with self._rl_lock:
            held = self.state["revocations_version"]
            p = await self._fetch_list(held)
            if p["version"] > held and p["base"] not in (0, held):
                log.warning("revocation list %d is a delta on %d, this terminal holds %d: asking for a full list",
                            p["version"], p["base"], held)
                p = await self._fetch_list(0)
                if p["base"] != 0:
                    raise UntrustedDocument("asked for a full revocation list, got a delta on %d" % p["base"])
            if p["version"] < held:
                raise RollbackRefused("revocation list version %d is older than version %d held"
                                      % (p["version"], held))
            if p["version"] == held:
                return held
            issuer_keys = self._issuer_keys()
            statements = [self._check_statement(e, issuer_keys) for e in p["entries"]]
            await _call(self.on_revocations, statements, p["base"] == 0)
            self.state["revocations_version"] = p["version"]
            self._save()
            return p["version"]

    async def _fetch_list(self, since):
        doc = await self._request("GET", "/v1/terminals/%s/revocations?since=%d" % (self._tid(), since))
        p = self._verify(doc, signed.REVOCATION_LIST)
        if p.get("terminal_id") != self.terminal_id:
            raise UntrustedDocument("revocation list for %r, not this terminal" % (p.get("terminal_id"),))
        for f in ("version", "base", "issued_at"):
            if type(p.get(f)) is not int or p[f] < 0:
                raise UntrustedDocument("revocation list: %s must be a non-negative integer" % f)
        if type(p.get("entries")) is not list or p["base"] > p["version"]:
            raise UntrustedDocument("revocation list: entries must be a list, a delta's base not above its version")
        return p

    def _check_statement(self, entry, issuer_keys):
        """The CBOR bytes of a RevocationStatement entry once signed by an issuer key of the key
        set held for the issuer it names (the engine checks it again against its own keys)."""
        if type(entry) is not bytes:
            raise UntrustedDocument("a revocation list entry is not a CBOR RevocationStatement")
        try:
            obj = cbor.decode(entry, MAX_STATEMENT)
            rec = parse_revocation_obj(obj)
        except (cbor.CborError, CapError) as exc:
            raise UntrustedDocument("a revocation list entry is malformed: %s" % exc) from None
        pub, issuer = issuer_keys.get(rec["key_id"], (None, None))
        if pub is None:
            raise UnknownSigner("revocation %s is signed by key %s, not in the key set held"
                                % (rec["revocation_id"], rec["key_id"]))
        if issuer != rec["issuer_id"] or pub.algorithm != rec["algorithm"]:
            raise UntrustedDocument("revocation %s is signed by key %s, not a key of issuer %s in the key set"
                                    % (rec["revocation_id"], rec["key_id"], rec["issuer_id"]))
        if not pub.verify(statement_signed_bytes(obj), rec["signature"]):
            raise UntrustedDocument("revocation %s: signature does not verify" % rec["revocation_id"])
        return entry

    # ---- ticket status (§4.3.2 step 5) ---------------------------------------------------
    async def ticket_status(self, jti, timeout_s=None):
        """The signed status of ticket `jti`: TicketStatus(jti, revoked, revoked_at, checked_at).
        timeout_s: this query's own bound (the engine's 2 s), else the client's timeout.
        Raises UntrustedDocument (unknown signer, another jti, a status older than
        STATUS_MAX_AGE_S: a replay), TrustRefused, TrustUnavailable / TrustTimeout."""
        doc = await self._request("GET", "/v1/tickets/%s/status" % urllib.parse.quote(jti, safe=""),
                                  timeout_s=timeout_s)
        p = self._verify(doc, signed.TICKET_STATUS)
        if p.get("jti") != jti or p.get("revoked") not in (0, 1) or type(p.get("checked_at")) is not int:
            raise UntrustedDocument("ticket status is not {jti: %s, revoked: 0/1, checked_at}" % jti)
        now = self._now()
        if not now - STATUS_MAX_AGE_S <= p["checked_at"] <= now + CLOCK_LEEWAY_S:
            raise UntrustedDocument("ticket status checked at %d, now is %d: stale or replayed"
                                    % (p["checked_at"], now))
        revoked_at = p.get("revoked_at")
        if p["revoked"] and type(revoked_at) is not int:
            raise UntrustedDocument("a revoked ticket's status names no revoked_at")
        return TicketStatus(jti, p["revoked"] == 1, revoked_at if p["revoked"] else None, p["checked_at"])

    # ---- push and poll -------------------------------------------------------------------
    async def sync(self):
        """Revocations first, then key sets (blueprint §2.1: on every return to online the
        revocation list comes first); key sets first only while none is held, since the list
        is checked against the key set's issuer keys. Errors are logged, not raised; returns
        True when both synchronised."""
        ok = True
        steps = (self.sync_revocations, self.sync_keysets)
        for step in (steps if self.state["keyset"] is not None else steps[::-1]):
            try:
                await step()
            except TrustClientError as exc:
                ok = False
                log.warning("trust sync: %s: %s", step.__name__, exc)
        return ok

    def next_poll_s(self):
        """The next poll's delay: uniform in [poll_min_s, poll_max_s] (jitter spreads a fleet
        that came back at once)."""
        return self.poll_min_s + self._random() * (self.poll_max_s - self.poll_min_s)

    async def _on_push(self, kind, version):
        held = self.state["revocations_version" if kind == push.REVOCATIONS else "keyset_version"]
        if version > held:
            self._wanted.add(kind)
            self._kick.set()

    async def _on_connect(self):
        self._wanted.add(push.KEYSET)   # pushes sent while not subscribed were not kept for us
        self._kick.set()

    async def run(self):
        """Keep the terminal synchronised until cancelled: sync at once, on every push that
        names a newer version, and at each jittered poll."""
        listener = None
        if self.broker is not None:
            topics = [push.terminal_topic(self._tid()), push.KEYSET_TOPIC]
            listener = asyncio.get_running_loop().create_task(
                push.listen(self.broker, topics, self._on_push, self._on_connect))
        self._wanted = {push.KEYSET}
        try:
            while True:
                self._kick.clear()
                wanted, self._wanted = self._wanted, set()
                if wanted == {push.REVOCATIONS}:
                    try:     # a revocation push: only the list, at once
                        await self.sync_revocations()
                    except TrustClientError as exc:
                        log.warning("trust sync: sync_revocations: %s", exc)
                else:
                    await self.sync()
                kicked = asyncio.get_running_loop().create_task(self._kick.wait())
                timer = asyncio.get_running_loop().create_task(self._sleep(self.next_poll_s()))
                try:
                    await asyncio.wait((kicked, timer), return_when=asyncio.FIRST_COMPLETED)
                    if timer.done() and not kicked.done():
                        self._wanted.add(push.KEYSET)      # a poll: everything
                finally:
                    kicked.cancel()
                    timer.cancel()
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def aclose(self):
        if self._own_http:
            await self.http.aclose()

