"""The Ticket_Issuer and Descriptor_Issuer (§4.2, blueprint §2.1). Authorizers: trust.authorizers.

Every credential is signed and recorded in one transaction, and the caller answers only after
it committed (§4.2.2 step 8: the record is what revocation and status queries read). Before
anything is signed: the authorizer is authenticated and active (§4.2.1 item 1), the request is
within its policy (items 2 and 3, policy.Policy.check, which names the rule broken), the
credential is one a terminal accepts (tickets at most 7 days, §4.2.2 step 3; descriptors at most
90), and the terminal is not suspended or deregistered (the registry's terminal_state).

A renewal (blueprint §2.1 phase 5) issues the new descriptor and a `superseded` revocation of the
old one in the same transaction: the old one stops working everywhere the revocation reaches.
"""

import functools
import json
import time

import sqlalchemy as sa

from capwarden.credentials import issue, model
from capwarden.credentials.b64 import b64u_encode
from capwarden.credentials.ids import FAY_RE, TERMINAL_RE, uuid_text
from capwarden.credentials.validate import DESCRIPTOR_MAX_DAYS, PREDATE_LIMIT, TICKET_MAX_DAYS
from capwarden.errors import CapError
from capwarden.trust import revocations
from capwarden.trust.authorizers import (add_authorizer, authenticate, list_authorizers,  # noqa: F401
                                         now_s, set_authorizer_status, suspend_authorizer)
from capwarden.trust.db import insert_rows
from capwarden.trust.errors import Conflict, Forbidden, Gone, InvalidRequest, NotFound, TrustError
from capwarden.trust.models import IssuedDescriptor, IssuedTicket, Revocation
from capwarden.trust.policy import Policy

TICKET_MAX_S = TICKET_MAX_DAYS * model.DAY
DESCRIPTOR_MAX_S = DESCRIPTOR_MAX_DAYS * model.DAY
BLOCKED_TERMINAL = {"suspended": Forbidden, "deregistered": Gone}
MAX_BATCH = 1000     # ticket requests per batch: ~250 KB of requests, ~700 KB of answers (MAX_BODY 1 MB)


class Issuer:
    """Both issuers over one database. keys: an object with issuer_key(now) -> SigningKey
    (trust.servicekeys.KeyRing). terminal_states: fn(session, terminal_ids) -> {terminal_id:
    "registered", "suspended", "deregistered" or None (never registered)}; suspended is refused
    (403), deregistered too (410), and a terminal that never registered is allowed (bounded by
    the policy's terminal_ids: a single operator feeds terminals by hand) unless
    `require_registration` (then 403). terminal_states None skips the check. clock: seconds
    since the epoch."""

    def __init__(self, db, keys, terminal_states=None, clock=time.time, require_registration=False):
        self.db = db
        self.keys = keys
        self.terminal_states = terminal_states
        self.clock = clock
        self.require_registration = require_registration
        # What the last recording transactions found, for the next group's signing only
        # (_issue): token -> (Authorizer, when), terminal -> (state, when), positive answers
        # only, for HINT_S. The recording transaction always reads them again and decides.
        self._hints = ({}, {})

    def _key(self, now):
        return revocations.signing_key(self.keys, now)

    def _admit(self, s, token, req, valid_for_s):
        """The authorizer, once the request passes §4.2.1 items 1-3 and the terminal check."""
        a = authenticate(s, token)
        self._allow(s, a, req, valid_for_s, {})
        return a

    def _allow(self, s, a, req, valid_for_s, states):
        """Raises unless authorizer `a` may have credential `req` for `valid_for_s` seconds: its
        policy, then the terminal's registration (states: a cache terminal -> state for one
        transaction)."""
        fay, terminal, grants = req
        _policy(a.policy).check(fay, terminal, grants, valid_for_s)
        if self.terminal_states is None:
            return
        if terminal not in states:
            states.update(self.terminal_states(s, (terminal,)))
        refusal = self._terminal_refusal(terminal, states[terminal])
        if refusal is not None:
            raise refusal

    def _terminal_refusal(self, terminal, state):
        """The TrustError a terminal in registration `state` gets, or None: issued for."""
        if state in BLOCKED_TERMINAL:
            return BLOCKED_TERMINAL[state]("terminal %s is %s: no credential is issued for it" % (terminal, state))
        if state is None and self.require_registration:
            return Forbidden("terminal %s is not registered: this service issues only for registered terminals"
                             % terminal)
        return None

    def issue_ticket(self, token, body):
        """A ticket for request `body` (docs/trust-api.md POST /v1/tickets), signed and
        recorded. Returns {"ticket", "jti", "exp"}. Raises TrustError subclasses."""
        req, valid_for, conv = _ticket_request(body)

        def run(s):
            a = self._admit(s, token, req, valid_for)
            now = now_s(self.clock)
            out, row = self._sign_ticket(self._key(now), a, req, valid_for, conv, now)
            s.connection().execute(IssuedTicket.__table__.insert(), row)
            return out
        return self.db.run(run)

    def issue_tickets(self, token, bodies):
        """A batch of ticket requests (POST /v1/tickets/batch): signed, then checked again and
        recorded in one transaction (_issue), one authentication a step, and per request the
        same checks as issue_ticket. Returns one result per
        request, in order: {"ticket", "jti", "exp"} or {"error", "message", "status"} for a
        request refused on its own (malformed, beyond the policy, a blocked terminal). Every
        ticket returned is recorded: they are committed together before this returns, and
        when the commit fails none is returned. Raises InvalidRequest (not a list, empty, over
        MAX_BATCH), Unauthenticated / Forbidden (the authorizer itself)."""
        out = self.issue_batches([(token, bodies)])[0]
        if isinstance(out, TrustError):
            raise out
        return out

    def issue_batches(self, batches):
        """Batches [(token, bodies)] of several callers in one group (the service's group
        commit of POST /v1/tickets/batch, trust.groupcommit): per batch exactly issue_tickets'
        checks and answer. Returns, in order, the answer list of each batch or the TrustError
        that batch would have raised alone (malformed batch, its authorizer refused). Every
        ticket answered is committed; when the commit fails it raises and none is."""
        spans, entries = [], []
        for token, bodies in batches:
            try:
                p = _batch_requests(bodies)
            except TrustError as exc:
                spans.append(exc)
                continue
            spans.append((token, len(entries), len(entries) + len(p)))
            entries.extend((token, q) for q in p)
        results, refused = self._issue(entries)
        return [span if isinstance(span, TrustError) else
                refused[span[0]] if span[0] in refused else [_answer(r) for r in results[span[1]:span[2]]]
                for span in spans]

    def issue_group(self, requests):
        """Single ticket requests [(token, body)] of several callers in one group (the
        service's group commit, trust.groupcommit): per request exactly issue_ticket's checks
        and answer, the authorizer of each token authenticated once. Returns, in order, the
        answer {"ticket", "jti", "exp"} or the TrustError that request would have raised alone.
        Every ticket answered is committed; when the commit fails it raises and none is."""
        # A malformed request is refused as such before its token is looked at (issue_ticket's order).
        return self._issue([(token, _parsed_or_error(body)) for token, body in requests])[0]

    def _issue(self, entries):
        """Tickets for entries [(token, parsed request or its TrustError)]: ([per entry its
        answer or TrustError], {token: TrustError of an authorizer refused}).

        In two steps, so that the signing (most of the work) holds no write lock and a group's
        signing can run while the group before it commits (trust.groupcommit):
        1. signing: authenticate each token, check each request (policy, terminal), sign; on
           what the last recording transaction found when that is under HINT_S old and covers
           the group (allowing answers only: a refusal here is final, so it is always made on
           a fresh read), else in a reading transaction;
        2. writing: authenticate again, read the terminals again and check each signed
           ticket's request once more against the database as it is now (an authorizer or a
           terminal suspended in between gets nothing), then record what still passes, in one
           INSERT, and commit. A ticket that fails now is dropped: never recorded, never
           handed out. The decision is the one taken in the transaction that records it."""
        def sign(s):
            who, states = self._hinted(entries)
            tokens = {t for t, p in entries if not isinstance(p, TrustError)} - set(who)
            if tokens or states is None:
                if s is None:                   # a hint is missing: read them in a transaction
                    return None
                who.update(_authenticate_all(s, tokens))
                states = self._states(s, [p for t, p in entries if not isinstance(p, TrustError)
                                          and not isinstance(who[t], TrustError)])
            now = now_s(self.clock)
            key = self._key(now)
            signed = []
            for token, p in entries:
                try:
                    if isinstance(p, TrustError):
                        raise p
                    a = who[token]
                    if isinstance(a, TrustError):
                        raise a
                    req, valid_for, conv = p
                    self._allow(s, a, req, valid_for, states)
                except TrustError as exc:
                    signed.append(exc)
                    continue
                signed.append(self._sign_ticket(key, a, req, valid_for, conv, now))
            return who, states, signed
        done = sign(None)       # from the last group's findings alone, when they cover this one
        first, states_then, signed = done if done is not None else self.db.run(sign, write=False)

        def record(s):
            mine = [(t, p) for (t, p), r in zip(entries, signed) if type(r) is tuple]
            who = _authenticate_all(s, {t for t, _p in mine})
            states = self._states(s, [p for t, p in mine if not isinstance(who[t], TrustError)])
            # The checks are pure: an authorizer with the policy it had, for a terminal in the
            # state it had, gets the decision it got (no need to make it again).
            same = {t for t in who if not isinstance(who[t], TrustError) and not isinstance(first[t], TrustError)
                    and (who[t].authorizer_id, who[t].policy) == (first[t].authorizer_id, first[t].policy)}
            results, rows = [], []
            for (token, p), r in zip(entries, signed):
                if type(r) is tuple:
                    try:
                        a = who[token]
                        if isinstance(a, TrustError):
                            raise a
                        terminal = p[0][1]
                        if token not in same or states.get(terminal) != states_then.get(terminal):
                            self._allow(s, a, p[0], p[1], states)
                    except TrustError as exc:
                        r = (exc, None)
                    else:
                        rows.append(r[1])
                    r = r[0]
                results.append(r)
            insert_rows(s, IssuedTicket.__table__, rows)
            return who, states, results
        then, states_now, results = self.db.run(record)
        self._hint(then, states_now)
        refused = {t: a for who in (first, then) for t, a in who.items() if isinstance(a, TrustError)}
        return results, refused

    def _hinted(self, entries):
        """(who, states) for signing `entries` from the hints alone: {token: Authorizer} of the
        tokens hinted, and {terminal: state} of every terminal named, or None when one is not
        hinted. Only allowing answers are hinted: a refusal at signing is final, so it is
        always made on what the database says."""
        now = time.monotonic()
        auths, terminals = self._hints
        who = {}
        for token, p in entries:
            if not isinstance(p, TrustError) and token not in who:
                h = auths.get(token)
                if h is not None and now - h[1] < HINT_S:
                    who[token] = h[0]
        if self.terminal_states is None:
            return who, {}
        states = {}
        for _token, p in entries:
            if not isinstance(p, TrustError):
                h = terminals.get(p[0][1])
                if h is None or now - h[1] >= HINT_S:
                    return who, None
                states[p[0][1]] = h[0]
        return who, states

    def _hint(self, who, states):
        now = time.monotonic()
        auths, terminals = self._hints
        if len(auths) + len(terminals) > HINTS_MAX:
            auths.clear()
            terminals.clear()
        for token, a in who.items():
            if isinstance(a, TrustError):
                auths.pop(token, None)
            else:
                auths[token] = (a, now)
        for terminal, state in states.items():
            if self._terminal_refusal(terminal, state) is None:
                terminals[terminal] = (state, now)
            else:
                terminals.pop(terminal, None)

    def _states(self, s, requests):
        """{terminal: state} of every terminal the parsed `requests` name, in one query ({}
        without a registry)."""
        if self.terminal_states is None:
            return {}
        return self.terminal_states(s, {p[0][1] for p in requests})

    @staticmethod
    def _sign_ticket(key, a, req, valid_for, conv, now):
        """(answer, issued_tickets row) of one ticket signed by `key` now."""
        fay, terminal, grants = req
        objs, text = _grant_forms(grants)
        claims = issue.ticket_claims(fay, terminal, objs, key.issuer_id, now, now + valid_for, convertible=conv)
        jws = issue.sign_ticket(key, claims)
        row = {"jti": claims["jti"], "issuer_id": key.issuer_id, "authorizer_id": a.authorizer_id, "fay_id": fay,
               "terminal_id": terminal, "iat": claims["iat"], "nbf": claims["nbf"], "exp": claims["exp"],
               "grants": text, "ticket": jws}
        return {"ticket": jws, "jti": claims["jti"], "exp": claims["exp"]}, row

    def issue_descriptor(self, token, body):
        """A descriptor for `body` (POST /v1/descriptors), signed and recorded. Returns
        {"descriptor": b64u(CBOR), "descriptor_id"}. Raises TrustError subclasses."""
        req = _subject(body, {"fay_id", "terminal_id", "grants", "not_after"}, {"not_before"})

        def run(s):
            now = now_s(self.clock)
            nbf, naf = _window(body.get("not_before", now), body["not_after"], now)
            a = self._admit(s, token, req, naf - nbf)
            return self._sign_descriptor(s, a, req, nbf, naf, now)
        return self.db.run(run)

    def renew_descriptor(self, token, descriptor_id, body):
        """Renew descriptor `descriptor_id` (POST /v1/descriptors/{id}/renew): a new descriptor
        with the same Fay, terminal and grants until body["not_after"], and a `superseded`
        revocation of the old one, committed together. Only the authorizer that issued it may.
        Returns {"descriptor", "descriptor_id", "superseded", "versions"}. Raises NotFound,
        Forbidden, Conflict (already superseded or revoked), InvalidRequest."""
        _fields(body, {"not_after"}, set())

        def run(s):
            a = authenticate(s, token)
            old = s.scalar(sa.select(IssuedDescriptor).where(IssuedDescriptor.descriptor_id == descriptor_id)
                           .with_for_update())
            if old is None:
                raise NotFound("no descriptor %s" % descriptor_id)
            if old.authorizer_id != a.authorizer_id:
                raise Forbidden("only the authorizer that issued descriptor %s may renew it" % descriptor_id)
            if old.superseded_by is not None:
                raise Conflict("descriptor %s was already renewed as %s" % (descriptor_id, old.superseded_by))
            if revocations.revoked_target(s, old.issuer_id, descriptor_id) is not None:
                raise Conflict("descriptor %s is revoked" % descriptor_id)
            now = now_s(self.clock)
            nbf, naf = _window(now, body["not_after"], now)
            req = (old.fay_id, old.terminal_id, model.parse_grants(json.loads(old.grants), "E_MALFORMED_REQUEST", "grants"))
            self._admit(s, token, req, naf - nbf)
            out = self._sign_descriptor(s, a, req, nbf, naf, now)
            s.flush()
            old.superseded_by = out["descriptor_id"]
            rev = revocations.record(s, self._key(now), a.authorizer_id, "descriptor", old.descriptor_id,
                                     old.terminal_id, old.not_after, "superseded", now)
            out["superseded"] = old.descriptor_id
            out["versions"] = {old.terminal_id: rev.list_version}
            return out
        return self.db.run(run)

    def _sign_descriptor(self, s, a, req, nbf, naf, now):
        key = self._key(now)
        fay, terminal, grants = req
        p = issue.descriptor_payload(fay, terminal, [g.to_obj() for g in grants], key.issuer_id, nbf, naf,
                                     issued_at=min(now, nbf))
        raw = issue.sign_descriptor(key, p)
        did = uuid_text(p["descriptor_id"])
        s.add(IssuedDescriptor(descriptor_id=did, issuer_id=key.issuer_id, authorizer_id=a.authorizer_id,
                               fay_id=fay, terminal_id=terminal, issued_at=p["issued_at"], not_before=nbf,
                               not_after=naf, grants=json.dumps(p["grants"]), descriptor=raw))
        return {"descriptor": b64u_encode(raw), "descriptor_id": did}

    def list_tickets(self, token, fay_id=None, terminal_id=None):
        """The issuance record of the tickets this authorizer issued (GET /v1/tickets),
        newest first, each with revoked_at when revoked."""
        def run(s):
            a = authenticate(s, token)
            return tickets_issued(s, a.authorizer_id, fay_id, terminal_id)
        return self.db.run(run, write=False)


HINT_S = 1.0          # how long a recording transaction's findings guide the next signing
HINTS_MAX = 10_000


def _authenticate_all(s, tokens):
    """{token: its Authorizer, or the TrustError authenticate raised}."""
    who = {}
    for token in tokens:
        try:
            who[token] = authenticate(s, token)
        except TrustError as exc:
            who[token] = exc
    return who


@functools.lru_cache(maxsize=1024)
def _policy(text):
    """The Policy of an authorizer's stored policy JSON (parsed once per distinct text)."""
    return Policy.from_json(json.loads(text))


def tickets_issued(session, authorizer_id=None, fay_id=None, terminal_id=None, limit=10_000):
    """Issued tickets as {"jti", "fay_id", "terminal_id", "iat", "exp", "revoked_at"?}, newest first."""
    q = (sa.select(IssuedTicket, Revocation.revoked_at)
         .outerjoin(Revocation, sa.and_(Revocation.target_id == IssuedTicket.jti,
                                        Revocation.issuer_id == IssuedTicket.issuer_id)))
    if authorizer_id is not None:
        q = q.where(IssuedTicket.authorizer_id == authorizer_id)
    if fay_id:
        q = q.where(IssuedTicket.fay_id == fay_id)
    if terminal_id:
        q = q.where(IssuedTicket.terminal_id == terminal_id)
    out = []
    for t, revoked_at in session.execute(q.order_by(IssuedTicket.iat.desc(), IssuedTicket.jti.desc()).limit(limit)):
        row = {"jti": t.jti, "fay_id": t.fay_id, "terminal_id": t.terminal_id, "iat": t.iat, "exp": t.exp}
        if revoked_at is not None:
            row["revoked_at"] = revoked_at
        out.append(row)
    return out


# ---- request checks ----------------------------------------------------------------------------

def _batch_requests(bodies):
    """The parsed (or refused) requests of a batch. Raises InvalidRequest for the batch itself."""
    if type(bodies) is not list or not bodies:
        raise InvalidRequest("requests is a non-empty list of ticket requests")
    if len(bodies) > MAX_BATCH:
        raise InvalidRequest("a batch holds at most %d ticket requests (got %d)" % (MAX_BATCH, len(bodies)))
    return [_parsed_or_error(body) for body in bodies]


def _parsed_or_error(body):
    try:
        return _ticket_request(body)
    except TrustError as exc:
        return exc


def _answer(result):
    """A batch item's answer: the ticket, or the refusal as {"error", "message", "status"}."""
    if isinstance(result, TrustError):
        return {"error": result.code, "message": str(result), "status": result.status}
    return result


def _ticket_request(body):
    """(subject, valid_for_s, convertible or None) of a ticket request. Raises InvalidRequest."""
    req = _subject(body, {"fay_id", "terminal_id", "grants", "valid_for_s"}, {"convertible"})
    valid_for = body["valid_for_s"]
    if type(valid_for) is not int or valid_for < 1:
        raise InvalidRequest("valid_for_s must be a positive integer")
    if valid_for > TICKET_MAX_S:
        raise InvalidRequest("a ticket is valid for at most %d s (§4.2.2 step 3: exp - nbf <= 7 days)"
                             % TICKET_MAX_S)
    conv = body.get("convertible")
    if "convertible" in body and type(conv) is not bool:
        raise InvalidRequest("convertible must be true or false")
    return req, valid_for, conv


def _fields(body, required, optional):
    if type(body) is not dict:
        raise InvalidRequest("the request body is a JSON object")
    missing = sorted(required - set(body))
    if missing:
        raise InvalidRequest("missing field(s): %s" % ", ".join(missing))
    extra = sorted(set(body) - required - optional)
    if extra:
        raise InvalidRequest("unknown field(s): %s" % ", ".join(extra))


def _subject(body, required, optional):
    """(fay_id, terminal_id, Grants) of a request, checked as a credential would be."""
    _fields(body, required, optional)
    fay, terminal = body["fay_id"], body["terminal_id"]
    if type(fay) is not str or not FAY_RE.match(fay):
        raise InvalidRequest("fay_id is not a Fay_ID (fay:UUIDv7)")
    if type(terminal) is not str or not TERMINAL_RE.match(terminal):
        raise InvalidRequest("terminal_id is not a Terminal_ID (terminal:UUIDv7)")
    grants = _grants(body["grants"])
    for g in grants:
        if g.parsed[0] != terminal:
            raise InvalidRequest("grant %s names another terminal than %s" % (g.resource_pattern, terminal))
    return fay, terminal, grants


# Parsed grant lists, by their plain JSON form: a fleet asks for the same few grant lists over
# and over (a batch of 250 tickets for eight terminals holds eight), and parsing one (patterns,
# modes, field checks) cost a sixth of a ticket's issuance beyond its signature (timed once
# per step, issue 13). Only a list of {"resource_pattern": str, "modes": [str]} is kept,
# and only once it parsed: the key is everything parse_grants reads of it, so a hit is what
# parsing it again would give. Bounded; cleared when full. Grant objects are never changed
# after parsing, so one may serve several requests.
_MEMO_MAX = 4096
_PARSED = {}    # ((pattern, modes), ...) -> Grant tuple
_FORMS = {}     # a kept Grant tuple -> (its JSON objects, their JSON text): credential and record


def _grants(value):
    """model.parse_grants(value) of a request's "grants". Raises InvalidRequest."""
    key = _plain_grants_key(value)
    grants = _PARSED.get(key) if key is not None else None
    if grants is None:
        try:
            grants = model.parse_grants(value, "E_MALFORMED_REQUEST", "grants")
        except CapError as exc:
            raise InvalidRequest(exc.message) from None
        if key is not None:
            if len(_PARSED) >= _MEMO_MAX:
                _PARSED.clear()
                _FORMS.clear()
            _PARSED[key] = grants
            _FORMS[grants] = _forms(grants)
    return grants


def _plain_grants_key(value):
    if type(value) is not list:
        return None
    key = []
    for g in value:
        if type(g) is not dict or len(g) != 2:
            return None
        pattern, modes = g.get("resource_pattern"), g.get("modes")
        if type(pattern) is not str or type(modes) is not list:
            return None
        for m in modes:
            if type(m) is not str:
                return None
        key.append((pattern, tuple(modes)))
    return tuple(key)


def _grant_forms(grants):
    """([grant objects], their JSON text) of a Grant tuple; the objects are copied by whoever
    puts them in a credential (issue.ticket_claims does)."""
    forms = _FORMS.get(grants)
    return forms if forms is not None else _forms(grants)


def _forms(grants):
    objs = [g.to_obj() for g in grants]
    return objs, json.dumps(objs)


def _window(not_before, not_after, now):
    for name, v in (("not_before", not_before), ("not_after", not_after)):
        if type(v) is not int or not 0 <= v <= model.MAX_TS:
            raise InvalidRequest("%s must be an integer Unix time" % name)
    if not_before > now + PREDATE_LIMIT:
        raise InvalidRequest("not_before is more than %d s ahead: terminals would refuse it" % PREDATE_LIMIT)
    if not_after <= not_before:
        raise InvalidRequest("not_after must be after not_before")
    if not_after <= now:
        raise InvalidRequest("not_after is in the past")
    if not_after - not_before > DESCRIPTOR_MAX_S:
        raise InvalidRequest("a descriptor is valid for at most %d s (%d days)" % (DESCRIPTOR_MAX_S, DESCRIPTOR_MAX_DAYS))
    return not_before, not_after
