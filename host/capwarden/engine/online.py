"""The terminal's link to its trust service (issue 14; chapter 4 sections 4.4-4.5, blueprint 2.1-2.2).

`capwarden serve --trust URL` (or the config file's "trust" section) starts one TrustLink beside
the engine. It uses the terminal's registration (capwarden.trust.client.TrustClient, state in
STORE/trust/ by default), and:

- keys (section 4.4): key sets are fetched, verified one version at a time from what the
  terminal trusts, stored in the store's key store (source "ra-distributed", with their validity)
  and acknowledged. An ra-distributed key of one of the key set's issuers that a new set no
  longer lists is retired: revoked locally, so its sessions end (key_invalid). Pre-installed keys
  are never touched and work without any service.
- revocations (blueprint 2.1): pushed by the broker (a push only says "fetch now") and polled
  with jitter as the backstop; each verified statement is imported into the store at once, whose
  listener ends the sessions it concerns at the engine's next sweep (Engine._on_revocation).
- online state (section 4.5.1): the terminal is `degraded` when the service was unreachable for
  more than `unreachable_s` (30 s), after `query_timeouts` (3) consecutive revocation-query
  timeouts, or while the network is reported down: the file `network_down_file` exists
  (default STATE_DIR/network-down; a network manager's hook creates and removes it). Degraded,
  new tickets get E_TICKET_OFFLINE_REJECTED unless `offline_tickets` is "accept"; descriptors,
  plain or converted, work as before (section 4.5.2).
- recovery (section 4.5.3), on every transition to online, in this order: the revocation list
  (a delta from the version held), every live session checked again (one whose credential was
  revoked meanwhile ends, reason `revoked`), then tickets accepted again, then key sets.
  The terminal starts degraded and goes online through the same steps at its first sync.

Every mode change is audited (action `mode`, outcome the mode, reason the trigger), pushed to
runtimes (modepush.notify_mode: SessionStateChanged with terminal_mode), written to
STATE_DIR/mode.json (`status()`) and logged.
"""

import asyncio
import json
import logging
import os
import random as _random
import time
from typing import NamedTuple

from capwarden.credentials.store import write_json
from capwarden.engine import revquery
from capwarden.engine.authorizer import RA_DISTRIBUTED
from capwarden.errors import CapError, CapwardenError, StoreError, UsageError
from capwarden.trust import push
from capwarden.trust.client import TrustClient, TrustClientError, TrustUnavailable

log = logging.getLogger("capwarden.engine.online")

ONLINE, DEGRADED = "online", "degraded"
# Triggers (the audit entry's reason)
STARTING, UNREACHABLE, QUERY_TIMEOUTS, NETWORK_DOWN, RECOVERED = (
    "starting", "unreachable", "query_timeouts", "network_down", "recovered")
TRUST_DIR = "trust"                 # STORE/trust: the trust client's state folder by default
ENROLLMENT = "enrollment.json"      # what `capwarden trust terminal enroll` hands out
NETWORK_DOWN_FILE = "network-down"
MODE_FILE = "mode.json"
ACCEPT, REJECT = "accept", "reject"


class Settings(NamedTuple):
    """The config file's "trust" section (docs/engine.md "Online and offline")."""
    url: str = None
    state_dir: str = None            # default STORE/trust
    enrollment: str = None           # default STATE_DIR/enrollment.json (used once, to register)
    ca_file: str = None
    mqtt_url: str = None
    unreachable_s: float = 30.0
    query_timeouts: int = 3
    network_down_file: str = None    # default STATE_DIR/network-down
    poll_min_s: float = 5.0
    poll_max_s: float = 30.0
    retry_s: float = 2.0             # the next attempt after a failure, and while degraded
    tick_s: float = 0.5              # how often the network file and the unreachable timer are looked at
    offline_tickets: str = REJECT
    revocation_query: revquery.Policy = revquery.Policy()


def parse_settings(obj, where="trust"):
    """Settings from a config object. Raises UsageError."""
    if obj is None:
        return None
    fields = set(Settings._fields)
    if not isinstance(obj, dict) or set(obj) - fields:
        raise UsageError("%s: an object with only %s" % (where, ", ".join(Settings._fields)))
    obj = dict(obj)
    obj["revocation_query"] = revquery.parse_policy(obj.get("revocation_query"), where + ".revocation_query")
    s = Settings(**obj)
    for name in ("url", "state_dir", "enrollment", "ca_file", "mqtt_url", "network_down_file"):
        v = getattr(s, name)
        if v is not None and (type(v) is not str or not v):
            raise UsageError("%s: \"%s\" is a string" % (where, name))
    num = (int, float)
    for name in ("unreachable_s", "poll_min_s", "poll_max_s", "retry_s", "tick_s"):
        if type(getattr(s, name)) not in num or getattr(s, name) <= 0:
            raise UsageError("%s: \"%s\" is a number of seconds above 0" % (where, name))
    if s.poll_min_s > s.poll_max_s:
        raise UsageError("%s: poll_min_s must not be above poll_max_s" % where)
    if type(s.query_timeouts) is not int or s.query_timeouts < 1:
        raise UsageError("%s: \"query_timeouts\" is a count, 1 or more" % where)
    if s.offline_tickets not in (ACCEPT, REJECT):
        raise UsageError("%s: \"offline_tickets\" is \"reject\" (E_TICKET_OFFLINE_REJECTED while degraded) or "
                         "\"accept\"" % where)
    return s


def with_url(settings, url):
    """`capwarden serve --trust URL`: the URL over the config file's (or the defaults)."""
    return (settings or Settings())._replace(url=url)


TERMINATING_WAIT_S = 5.0   # recovery waits this long at most for sessions already ending


class TrustLink:
    """One engine's link to its trust service. `client`: a TrustClient (tests give one over an
    in-process service); else made from the settings. `clock` (monotonic) and `wall` are the
    state machine's and the cache's clocks, injectable; `random` the poll's jitter."""

    def __init__(self, engine, settings, store, client=None, clock=time.monotonic, wall=time.time,
                 random=_random.random, http=None):
        if not settings.url and client is None:
            raise UsageError("the trust section needs a \"url\" (or give --trust URL)")
        self.engine = engine
        engine.online = self        # the control room (console) shows the mode: controlroom.snapshot
        self.auth = engine.authorizer
        self.settings = settings
        self.clock, self.wall = clock, wall
        self.state_dir = settings.state_dir or os.path.join(store, TRUST_DIR)
        self.network_file = settings.network_down_file or os.path.join(self.state_dir, NETWORK_DOWN_FILE)
        self.offline_accept = settings.offline_tickets == ACCEPT
        self._enrollment = None
        if client is None:
            anchor = None
            if not os.path.exists(os.path.join(self.state_dir, "state.json")):
                anchor = self.enrollment()["ra_keys"]
            client = TrustClient(settings.url, self.state_dir, anchor=anchor, mqtt_url=settings.mqtt_url,
                                 ca_file=settings.ca_file, poll_min_s=settings.poll_min_s,
                                 poll_max_s=settings.poll_max_s, random=random, http=http, now=wall)
        self.client = client
        client.on_keyset, client.on_revocations = self._on_keyset, self._on_revocations
        tid = client.state["terminal_id"]
        if tid is not None and tid != engine.terminal_id:
            raise UsageError("the trust state in %s belongs to %s, not to this store's terminal %s"
                             % (self.state_dir, tid, engine.terminal_id))
        self.mode = None
        self.trigger = None
        self.changed_at = None
        self.fail_since = None      # clock() of the first failure since the last answer
        self.last_answer = None     # clock() of the last answer from the service
        self.timeouts = 0           # consecutive revocation-query timeouts
        self.transitions = []       # (mode, trigger) in order (tests, status)
        self._wanted = set()
        self._kick = None
        self._task = None
        self._listener = None
        self.revquery = revquery.RevocationQuery(
            client.ticket_status, settings.revocation_query, audit=engine.audit, clock=clock,
            on_answer=self.answered, on_timeout=self.query_timed_out, on_unreachable=self.failed,
            degraded=lambda: self.mode == DEGRADED, on_revoked=lambda: self.kick(push.REVOCATIONS))
        self.auth.revquery = self.revquery if settings.revocation_query.enabled else None
        self._set_mode(DEGRADED, STARTING)

    # ---- registration -----------------------------------------------------------------------
    def enrollment(self):
        """The enrollment JSON (`capwarden trust terminal enroll`): {"enrollment_secret",
        "terminal_id" or null, "ra_keys", ...}. Raises UsageError."""
        if self._enrollment is None:
            path = self.settings.enrollment or os.path.join(self.state_dir, ENROLLMENT)
            try:
                with open(path) as f:
                    en = json.load(f)
            except OSError as exc:
                raise UsageError("this terminal is not registered with %s yet: put the enrollment of 'capwarden "
                                 "trust terminal enroll' at %s (%s)" % (self.settings.url, path,
                                                                        exc.strerror or exc)) from None
            except ValueError as exc:
                raise UsageError("the enrollment %s is not JSON: %s" % (path, exc)) from None
            if not isinstance(en, dict) or type(en.get("enrollment_secret")) is not str \
                    or not isinstance(en.get("ra_keys"), list):
                raise UsageError("the enrollment %s has no enrollment_secret and ra_keys" % path)
            if en.get("terminal_id") not in (None, self.engine.terminal_id):
                raise UsageError("the enrollment %s is for %s, not for this store's terminal %s"
                                 % (path, en["terminal_id"], self.engine.terminal_id))
            self._enrollment = en
        return self._enrollment

    async def _register(self):
        if self.client.state["terminal_id"] is None:
            tid = await self.client.register(self.enrollment()["enrollment_secret"], self.engine.terminal_id)
            self._audit("register", "done", "registered", terminal=tid)
            log.info("registered with the trust service %s as %s", self.settings.url, tid)

    # ---- what the service hands over --------------------------------------------------------
    async def _on_keyset(self, payload):
        """Store a verified key set before it is acknowledged (TrustClient's on_keyset)."""
        t = self.auth.terminal
        listed, issuers = set(), set()
        for k in payload["keys"]:
            listed.add(k["key_id"])
            issuers.add(k["issuer_id"])
            old = t.keys.records.get(k["key_id"])
            if old is not None and old["source"] != RA_DISTRIBUTED:
                continue            # a pre-installed key stays as it was installed
            t.import_key(dict(k, source=RA_DISTRIBUTED))
        retired = [kid for kid, rec in t.keys.records.items()
                   if rec["source"] == RA_DISTRIBUTED and rec["issuer_id"] in issuers and kid not in listed
                   and not rec["revoked"]]
        for kid in retired:
            t.keys.revoke(kid)
        wall = int(self.wall())
        self.auth.refresh(wall)      # the key file changed: a fresh view, every session checked again
        self._audit("keyset", "done", "stored", version=payload["version"], keys=sorted(listed),
                    retired=retired or None)
        await self.engine.sweep()

    def _on_revocations(self, statements, full):
        """Import verified RevocationStatements (TrustClient's on_revocations). Each new one ends
        its sessions through the store's listener (Engine._on_revocation)."""
        t = self.auth.terminal
        wall = int(self.wall())
        if statements:
            try:
                t.import_revocations(statements, wall)
            except CapError as exc:
                # The client checked it against the key set; the store refuses it (a key retired
                # since): the version is not recorded, so the list is fetched again.
                raise StoreError("a revocation from the trust service cannot be imported: %s" % exc.message) from None

    # ---- the state machine ------------------------------------------------------------------
    def answered(self):
        """The service answered (any request)."""
        self.fail_since = None
        self.last_answer = self.clock()
        self.timeouts = 0

    def failed(self):
        """A request found the service unreachable or failing."""
        if self.fail_since is None:
            self.fail_since = self.clock()
        self.evaluate()

    def query_timed_out(self):
        self.timeouts += 1
        if self.fail_since is None:
            self.fail_since = self.clock()
        self.evaluate()

    def network_down(self):
        return os.path.exists(self.network_file)

    def evaluate(self):
        """Degrade on any trigger of section 4.5.1. Returns the trigger, or None."""
        if self.mode == DEGRADED:
            return None
        why = None
        if self.network_down():
            why = NETWORK_DOWN
        elif self.timeouts >= self.settings.query_timeouts:
            why = QUERY_TIMEOUTS
        elif self.fail_since is not None and self.clock() - self.fail_since > self.settings.unreachable_s:
            why = UNREACHABLE
        if why is not None:
            self._set_mode(DEGRADED, why)
        return why

    def _set_mode(self, mode, trigger):
        if mode == self.mode:
            return
        self.mode, self.trigger, self.changed_at = mode, trigger, int(self.wall())
        # Fail closed first: tickets refused before anything is said about it.
        self.auth.set_degraded(mode == DEGRADED and not self.offline_accept)
        self.transitions.append((mode, trigger))
        (log.warning if mode == DEGRADED else log.info)("terminal %s (%s)", mode, trigger)
        self._audit("mode", mode, trigger, offline_tickets=self.settings.offline_tickets)
        try:
            write_json(os.path.join(self.state_dir, MODE_FILE), self.status(), mode=0o644)
        except (OSError, StoreError) as exc:
            log.error("cannot write %s: %s", MODE_FILE, exc)
        from capwarden.engine import modepush

        modepush.notify_mode(self.engine, mode == ONLINE, trigger)

    def _audit(self, action, outcome, reason, **fields):
        try:
            self.engine.audit.record(action, outcome, reason, **fields)
        except StoreError as exc:
            log.error("%s", exc)

    def status(self):
        """What `capwarden status` (or the console) shows of the online side."""
        st = self.client.state
        return {"mode": self.mode, "trigger": self.trigger, "since": self.changed_at, "trust_url": self.settings.url,
                "terminal_id": st["terminal_id"], "registered": st["terminal_id"] is not None,
                "revocations_version": st["revocations_version"], "keyset_version": st["keyset_version"],
                "keyset_acked": st["keyset_acked"], "query_timeouts": self.timeouts,
                "offline_tickets": self.settings.offline_tickets,
                "revocation_query": self.settings.revocation_query.enabled}

    # ---- one round --------------------------------------------------------------------------
    async def step(self):
        """One round: register if needed; degraded, try to recover; online, synchronise what a
        push asked for (everything on a poll). Never raises for the service's failures."""
        if self.network_down():
            self.evaluate()
            return
        wanted, self._wanted = self._wanted, set()
        try:
            await self._register()
            if self.mode == DEGRADED:
                await self.recover()
            elif wanted == {push.REVOCATIONS}:
                await self._revocations()
            elif wanted == {push.KEYSET}:
                await self.client.sync_keysets()
            else:
                await self._revocations()
                await self.client.sync_keysets()
        except TrustUnavailable as exc:
            # Said once per outage (then at debug level): a retry every retry_s is not news.
            (log.warning if self.fail_since is None else log.debug)("trust service: %s", exc)
            self.failed()
            return
        except UsageError as exc:        # not registered and no enrollment: said, tried again later
            log.error("trust link: %s", exc)
            return
        except (TrustClientError, CapwardenError) as exc:
            # An answer that was refused (a suspended terminal) or could not be trusted (a
            # tampered or rolled-back list): nothing of it was used, and a service that cannot
            # be synchronised from counts as unreachable (fail closed: degraded after
            # unreachable_s, and no recovery until a list verifies).
            (log.warning if self.fail_since is None else log.debug)("trust service: %s", exc)
            self.failed()
            return
        if self.fail_since is not None:
            log.info("trust service answers again")
        self.answered()

    async def recover(self):
        """Section 4.5.3, in order. Raises what the client raises (the terminal stays degraded)."""
        if self.client.state["keyset"] is None:
            await self.client.sync_keysets()      # once: the list is checked against the key set's keys
        # 1. The revocation list first: statements missed while offline reach the store.
        await self._revocations()
        self.answered()
        # 2. Every live session checked again; one whose credential (or the ticket it was
        # converted from) was revoked meanwhile ends, reason `revoked`.
        await self.recheck_sessions()
        # 3. Tickets accepted again.
        self._set_mode(ONLINE, RECOVERED)
        # Then everything else.
        await self.client.sync_keysets()

    async def _revocations(self):
        """The revocation list. One signed by an issuer key the terminal does not hold yet (a
        rotation in force before this terminal fetched its key set) is handled by the client:
        it fetches the key set (through on_keyset) and the list again (TrustClient.sync_revocations)."""
        return await self.client.sync_revocations()

    async def recheck_sessions(self):
        wall = int(self.wall())
        self.auth.refresh(wall)
        ended = []
        for s in list(self.engine.registry.live()):
            why = self.auth.still_valid(s.credential_ref, wall)
            if why is not None:
                await self.engine.terminate(s, why)
                ended.append(s.session_id)
            else:
                s.checked_generation = self.auth.generation
        # A session the revocation listener began to end first is still `terminating`: wait
        # (bounded) until it is over, so that no runtime hears "online" before its session's
        # end (section 4.5.3: revocations and their ends, then tickets).
        # (Counted in rounds of the event loop's own sleep: the state machine's clock may be a
        # test's, which does not move while we wait.)
        for _ in range(int(TERMINATING_WAIT_S / 0.01)):
            if not any(s.state == "terminating" for s in self.engine.registry.sessions.values()):
                break
            await asyncio.sleep(0.01)
        return ended

    # ---- the task ---------------------------------------------------------------------------
    def kick(self, kind=None):
        """Synchronise now (`kind`: push.REVOCATIONS or push.KEYSET; None: everything)."""
        self._wanted.add(kind or "all")
        if self._kick is not None:
            self._kick.set()

    async def _on_push(self, kind, version):
        held = self.client.state["revocations_version" if kind == push.REVOCATIONS else "keyset_version"]
        if version > held:
            self.kick(kind)

    async def _on_connect(self):
        self.kick()                  # pushes sent while not subscribed were not kept for us

    def start(self):
        self._kick = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="capwarden-trust-link")
        return self

    async def run(self):
        while True:
            try:
                await self.step()
            except Exception:    # a bug must not stop the link for good
                log.exception("trust link round failed")
            if self._listener is None and self.client.broker is not None and self.client.state["terminal_id"]:
                # Subscribed once registered (the topic names the terminal); every (re)connection
                # asks for a sync, since pushes sent while away are not kept.
                topics = [push.terminal_topic(self.client.terminal_id), push.KEYSET_TOPIC]
                self._listener = asyncio.get_running_loop().create_task(
                    push.listen(self.client.broker, topics, self._on_push, self._on_connect))
            await self._wait()

    async def _wait(self):
        """Until a push, the network reported back, or the next poll (jittered; retry_s after a
        failure and while degraded), looking at the triggers every tick_s."""
        failing = self.mode == DEGRADED or self.fail_since is not None
        delay = self.settings.retry_s if failing else self.client.next_poll_s()
        end = self.clock() + delay
        down = self.network_down()
        while not self._kick.is_set():
            left = end - self.clock()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._kick.wait(), min(self.settings.tick_s, left))
            except asyncio.TimeoutError:
                pass
            self.evaluate()
            if down and not self.network_down():
                break                # the network is back: try at once
            down = self.network_down()
        self._kick.clear()

    async def stop(self):
        for t in (self._task, self._listener):
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in (self._task, self._listener) if t is not None), return_exceptions=True)
        self._task = self._listener = None
        await self.client.aclose()
