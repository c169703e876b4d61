"""`capwarden trust ...` (issue 13 item 5): every subcommand, its --json object, the exit codes of
S4 (docs/cli.md), no traceback on bad input, and the examples of --help run as written."""

import json
import os
import re
import shlex
import signal
import socket
import ssl
import stat
import subprocess
import time

import httpx
import pytest

import trustrig
from capwarden.credentials.issue import SigningKey
from capwarden.trust import authorizers, keysets, registry
from capwarden.trust.db import open_db
from capwarden.trust.errors import Forbidden
from capwarden.trust.issuance import Issuer
from capwarden.trust.servicekeys import KeyRing, ring_folder
from clihelp import Result, cap, cli


def ok(r):
    assert r.code == 0 and "Traceback" not in r.err, r
    return r


def refused(r, code):
    """A refusal: the exit code, a last line on stderr naming the command, no traceback."""
    assert r.code == code, r
    assert "Traceback" not in r.err and "Traceback" not in r.out, r
    assert r.err.strip().splitlines()[-1].startswith("capwarden trust"), r      # after argparse's usage
    return r


def refused_json(r, code):
    refused(r, code)
    obj = r.json()
    assert obj["ok"] is False and obj["exit_code"] == code and obj["error"], obj
    return obj


class Dep:
    """A deployment made by `trust init` in a temporary folder."""

    def __init__(self, folder, db=None):
        self.data = os.path.join(folder, "trust")
        self.init = ok(cli("trust", "init", "--data", self.data, "--issuer", "issuer:acme", "--json",
                           *(["--db", db] if db else []))).json()
        self.token = self.init["authorizer"]["token"]
        self.db = open_db(self.init["db"] if db is None else db)
        self.ring = KeyRing.open(ring_folder(self.data))

    def run(self, *argv):
        return cli("trust", argv[0], *argv[1:], "--data", self.data)

    def register(self, terminal_id=None, now=None):
        """A terminal registered with the RA in-process (enroll through the CLI, then the RA's
        register() as the service would call it). Returns (terminal_id, token, device key)."""
        secret = ok(self.run("terminal", "enroll", "--json", *(["--terminal-id", terminal_id] if terminal_id
                                                                 else []))).json()["enrollment_secret"]
        device = SigningKey.generate("ed25519", "device", "device")
        out = self.db.run(lambda s: registry.register(s, self.ring, secret, keysets.device_key_json(device),
                                                      keysets.sign_proof(device, secret, terminal_id), terminal_id,
                                                      now=now))
        return out["terminal_id"], out["token"], device

    def ticket(self, terminal_id, token=None):
        issuer = Issuer(self.db, self.ring, terminal_states=registry.terminal_states)   # as the service wires it
        return issuer.issue_ticket(token or self.token, trustrig.ticket_body(terminal_id))

    def close(self):
        self.db.dispose()


def ack_latest(d, tid, token, device):
    """The terminal acknowledges the newest key set, as the client does after verifying it."""
    def ack(s):
        v = registry.latest_keyset_version(s)
        return registry.store_ack(s, registry.authenticate(s, token), v,
                                  keysets.build_ack(device, tid, registry.keyset_document(s, v)))
    return d.db.run(ack)


@pytest.fixture
def tmp_path(request, tmp_path_factory):
    """On tmpfs when there is one (trustrig.shm_tmp_path: no fsync cost)."""
    yield from trustrig.shm_tmp_path(request, tmp_path_factory)


@pytest.fixture
def mosquitto_broker():
    import services

    services.require_mosquitto()
    broker = services.MosquittoBroker().start()
    yield broker
    broker.stop()


@pytest.fixture
def dep(tmp_path):
    d = Dep(str(tmp_path))
    yield d
    d.close()


# ---- init --------------------------------------------------------------------------------------

def test_init_makes_the_database_keys_key_set_and_first_authorizer(dep):
    out = dep.init
    assert out["issuer_id"] == "issuer:acme" and out["key_set_version"] == 1
    assert out["db"] == "sqlite:///" + os.path.join(dep.data, "trust.db")
    assert {k["role"] for k in out["keys"]} == {"issuer", "ra"} and len(out["ra_keys"]) == 1
    assert out["authorizer"]["name"] == "admin" and len(out["authorizer"]["token"]) >= 40
    assert not any("secret" in json.dumps(k) or "private" in json.dumps(k) for k in out["keys"])
    assert stat.S_IMODE(os.stat(dep.data).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(dep.data, "trust.json")).st_mode) == 0o600
    with dep.db.transaction() as s:                                # the token printed is the one stored
        assert authorizers.authenticate(s, dep.token).name == "admin"
        assert registry.latest_keyset_version(s) == 1
    # The first authorizer may grant anything: a ticket on any terminal.
    assert dep.ticket(trustrig.TERMINAL)["jti"]


def test_init_text_prints_the_token_once(tmp_path):
    r = ok(cli("trust", "init", "--data", str(tmp_path / "t"), "--issuer", "issuer:acme"))
    tokens = re.findall(r"token \(shown once, keep it\): (\S+)", r.out)
    assert len(tokens) == 1 and r.out.count(tokens[0]) == 1


def test_init_never_overwrites_a_deployment(dep):
    before = sorted(os.listdir(os.path.join(dep.data, "keys")))
    obj = refused_json(cli("trust", "init", "--data", dep.data, "--issuer", "issuer:other", "--json"), 2)
    assert "refusing to overwrite" in obj["error"]
    assert sorted(os.listdir(os.path.join(dep.data, "keys"))) == before
    with dep.db.transaction() as s:
        assert authorizers.authenticate(s, dep.token)


def test_init_refusals_leave_nothing_behind(tmp_path):
    base = str(tmp_path)
    refused(cli("trust", "init", "--data", os.path.join(base, "no", "such"), "--issuer", "issuer:a"), 2)
    refused(cli("trust", "init", "--data", os.path.join(base, "x"), "--issuer", "issuer:a", "--db", "banana"), 2)
    refused(cli("trust", "init", "--data", os.path.join(base, "x"), "--issuer", "issuer:a", "--db",
                "mysql://u@h/d"), 2)
    refused(cli("trust", "init", "--data", os.path.join(base, "x"), "--issuer", "issuer:a", "--grant", "**=fly"), 2)
    refused(cli("trust", "init", "--data", os.path.join(base, "x"), "--issuer", "issuer:a", "--policy",
                os.path.join(base, "missing.json")), 2)
    # A database that cannot be reached: a step failed after the command line was accepted.
    obj = refused_json(cli("trust", "init", "--data", os.path.join(base, "x"), "--issuer", "issuer:a", "--json",
                           "--db", "postgresql+psycopg://u:hunter2@/d?host=%s" % os.path.join(base, "nosock")), 1)
    assert "hunter2" not in obj["error"]
    assert os.listdir(base) == []
    open(os.path.join(base, "file"), "w").close()
    refused(cli("trust", "init", "--data", os.path.join(base, "file"), "--issuer", "issuer:a"), 2)


def test_init_on_postgresql(tmp_path):
    import services

    services.require_postgres()
    pg = services.PostgresServer().start()
    try:
        url = pg.create_database()
        d = Dep(str(tmp_path), db=url)
        try:
            assert d.init["db"].startswith("postgresql+psycopg://")
            assert json.load(open(os.path.join(d.data, "trust.json")))["db"] == url
            # Later commands find the database from trust.json, without --db.
            assert ok(d.run("authorizer", "list", "--json")).json()["authorizers"][0]["name"] == "admin"
            # A second deployment on the same database is refused.
            refused(cli("trust", "init", "--data", str(tmp_path / "other"), "--issuer", "issuer:b", "--db", url), 2)
        finally:
            d.close()
    finally:
        pg.stop()


def test_commands_on_a_folder_that_was_never_initialised(tmp_path):
    for argv in (["authorizer", "list"], ["terminal", "list"], ["status"], ["keys", "list"],
                 ["revoke", "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]):
        obj = refused_json(cli("trust", *argv, "--data", str(tmp_path), "--json"), 2)
        assert "capwarden trust init" in obj["error"]


# ---- authorizers -------------------------------------------------------------------------------

def test_authorizer_add_list_suspend_resume(dep):
    tid = "terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5d"
    out = ok(dep.run("authorizer", "add", "ops", "--fay", trustrig.FAY, "--terminal", tid,
                     "--grant", "sim/camera=read", "--max-validity", "600", "--json")).json()
    assert set(out) == {"authorizer_id", "name", "token", "policy"} and out["name"] == "ops"
    assert out["policy"] == {"fay_ids": [trustrig.FAY], "terminal_ids": [tid], "max_validity_s": 600,
                             "grants": [{"resource_pattern": "sim/camera", "modes": ["read"]}]}
    token = out["token"]
    assert Issuer(dep.db, dep.ring).issue_ticket(token, trustrig.ticket_body(tid, valid_for_s=600))
    with pytest.raises(Forbidden):                 # the policy holds: a longer validity is refused
        Issuer(dep.db, dep.ring).issue_ticket(token, trustrig.ticket_body(tid, valid_for_s=601))
    rows = ok(dep.run("authorizer", "list", "--json")).json()["authorizers"]
    assert [a["name"] for a in rows] == ["admin", "ops"] and not any("token" in a for a in rows)
    assert ok(dep.run("authorizer", "suspend", "ops", "--json")).json()["status"] == "suspended"
    with pytest.raises(Forbidden):
        Issuer(dep.db, dep.ring).issue_ticket(token, trustrig.ticket_body(tid, valid_for_s=60))
    assert ok(dep.run("authorizer", "resume", "ops", "--json")).json()["status"] == "active"
    assert Issuer(dep.db, dep.ring).issue_ticket(token, trustrig.ticket_body(tid, valid_for_s=60))
    assert "ops" in ok(dep.run("authorizer", "list")).out


def test_authorizer_refusals(dep, tmp_path):
    refused_json(dep.run("authorizer", "add", "admin", "--fay", "*", "--terminal", "*", "--grant", "**=read",
                         "--json"), 1)                                            # the name is taken
    refused(dep.run("authorizer", "add", "x", "--fay", "*", "--terminal", "*"), 2)        # no --grant
    refused(dep.run("authorizer", "add", "x", "--fay", "alice", "--terminal", "*", "--grant", "a=read"), 2)
    refused(dep.run("authorizer", "add", "x", "--fay", "*", "--terminal", "*", "--grant", "a"), 2)
    refused(dep.run("authorizer", "add", "x", "--fay", "*", "--terminal", "*", "--grant", "a=read",
                    "--max-validity", "0"), 2)
    bad = tmp_path / "policy.json"
    bad.write_text("{not json")
    refused(dep.run("authorizer", "add", "x", "--policy", str(bad)), 2)
    bad.write_text(json.dumps({"fay_ids": ["*"]}))
    refused(dep.run("authorizer", "add", "x", "--policy", str(bad)), 2)
    refused(dep.run("authorizer", "add", "x", "--policy", str(bad), "--fay", "*"), 2)
    refused_json(dep.run("authorizer", "suspend", "nobody", "--json"), 1)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"fay_ids": ["*"], "terminal_ids": ["*"], "max_validity_s": 60,
                                "grants": [{"resource_pattern": "sim/*", "modes": ["read"]}]}))
    assert ok(dep.run("authorizer", "add", "fromfile", "--policy", str(good), "--json")).json()["policy"][
        "max_validity_s"] == 60


# ---- terminals ---------------------------------------------------------------------------------

def test_terminal_enroll_writes_the_anchor_and_the_secret_registers_once(dep, tmp_path):
    anchor = str(tmp_path / "anchor.json")
    out = ok(dep.run("terminal", "enroll", "--anchor-out", anchor, "--group", "hangar-2", "--json")).json()
    assert out["terminal_id"] is None and out["key_set_version"] == 1 and out["anchor_file"] == anchor
    assert json.load(open(anchor)) == {"ra_keys": dep.ring.ra_public(), "key_set_version": 1}
    assert out["expires_at"] > time.time() + 6 * 86400
    device = SigningKey.generate("ed25519", "device", "device")
    reg = dep.db.run(lambda s: registry.register(s, dep.ring, out["enrollment_secret"],
                                                 keysets.device_key_json(device),
                                                 keysets.sign_proof(device, out["enrollment_secret"])))
    assert keysets.verify_registration(json.load(open(anchor))["ra_keys"], reg["registration"])
    rows = ok(dep.run("terminal", "list", "--json")).json()["terminals"]
    assert [(t["terminal_id"], t["status"], t["group"]) for t in rows] == [(reg["terminal_id"], "registered",
                                                                             "hangar-2")]
    r = ok(dep.run("terminal", "enroll"))
    assert "enrollment secret (shown once" in r.out and "a Terminal_ID the RA assigns" in r.out


def test_terminal_suspend_resume_deregister(dep):
    tid, _token, _dev = dep.register("terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5e")
    assert dep.ticket(tid)
    assert ok(dep.run("terminal", "suspend", tid, "--json")).json() == {"terminal_id": tid, "status": "suspended",
                                                                        "previous": "registered"}
    with pytest.raises(Forbidden):                    # a suspended terminal's credentials are not issued
        dep.ticket(tid)
    assert ok(dep.run("terminal", "resume", tid, "--json")).json()["previous"] == "suspended"
    assert dep.ticket(tid)
    assert "already" in ok(dep.run("terminal", "resume", tid)).out
    assert ok(dep.run("terminal", "deregister", tid, "--json")).json()["status"] == "deregistered"
    refused_json(dep.run("terminal", "resume", tid, "--json"), 1)               # deregistration is final
    refused_json(dep.run("terminal", "suspend", "terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5f", "--json"), 1)
    refused(dep.run("terminal", "suspend", "t1"), 2)
    refused(dep.run("terminal", "enroll", "--terminal-id", "t1"), 2)
    refused(dep.run("terminal", "enroll", "--terminal-id", tid), 1)              # already registered
    refused(dep.run("terminal", "enroll", "--expires-in", "0"), 2)
    refused(dep.run("terminal", "enroll", "--anchor-out", "/nonexistent/dir/a.json"), 2)


# ---- revoke and status -------------------------------------------------------------------------

def test_revoke_a_ticket_and_a_descriptor(dep, tmp_path):
    tid, _token, _dev = dep.register()
    jti = dep.ticket(tid)["jti"]
    out = ok(dep.run("revoke", jti, "--reason", "compromised", "--json")).json()
    assert out["target_id"] == jti and out["kind"] == "ticket" and out["reason"] == "compromised"
    assert out["terminal_id"] == tid and out["version"] == 1 and out["pushed"] is None and out["statement"]
    d = Issuer(dep.db, dep.ring).issue_descriptor(dep.token, {
        "fay_id": trustrig.FAY, "terminal_id": tid, "not_after": int(time.time()) + 3600,
        "grants": [{"resource_pattern": tid + "/sim/gps", "modes": ["read"]}]})
    r = ok(dep.run("revoke", d["descriptor_id"]))
    assert "version 2 of %s's revocation list" % tid in r.out
    refused_json(dep.run("revoke", jti, "--json"), 1)                            # already revoked
    refused_json(dep.run("revoke", "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "--json"), 1)   # not issued here
    refused(dep.run("revoke", "not-an-id"), 2)
    refused(dep.run("revoke", jti, "--reason", "bored"), 2)


def test_revoke_pushes_with_mqtt(dep, mosquitto_broker):
    import paho.mqtt.client as mqtt

    tid, _token, _dev = dep.register()
    jti = dep.ticket(tid)["jti"]
    got = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
    subscribed = []
    c.on_subscribe = lambda *a: subscribed.append(1)
    c.connect(mosquitto_broker.host, mosquitto_broker.port)
    c.loop_start()
    try:
        c.subscribe("capwarden/v1/terminals/" + tid, qos=1)
        deadline = time.monotonic() + 20
        while not subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        out = ok(dep.run("revoke", jti, "--mqtt", mosquitto_broker.url, "--json")).json()
        assert out["pushed"] is True
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [{"kind": "revocations", "version": 1}]
    finally:
        c.disconnect()
        c.loop_stop()


def test_status_shows_terminals_acks_and_stale_revocations(dep):
    long_ago = int(time.time()) - 1000
    tid, token, device = dep.register(now=long_ago)          # last in touch 1000 s ago
    quiet, _t, _d = dep.register(now=long_ago)
    jti = dep.ticket(tid)["jti"]
    ok(dep.run("revoke", jti))
    out = ok(dep.run("status", "--stale", "0", "--json")).json()
    assert set(out) >= {"terminals", "key_sets", "stale_revocations", "stale_revocations_count", "issuer_id"}
    assert {t["terminal_id"] for t in out["terminals"]} == {tid, quiet}
    assert out["key_sets"] == [{"version": 1, "effective_at": out["key_sets"][0]["effective_at"],
                                "created_at": out["key_sets"][0]["created_at"], "acknowledged": 0,
                                "registered_behind": 2}]
    assert out["stale_revocations_count"] == 1
    assert out["stale_revocations"][0]["target_id"] == jti and out["stale_revocations"][0]["terminal_id"] == tid
    # Not stale yet under the default threshold (300 s): it was just made.
    assert ok(dep.run("status", "--json")).json()["stale_revocations_count"] == 0
    # The terminal acknowledges key set 1: counted. It is in touch, but it has not fetched its
    # revocation list: the revocation is still not fetched.
    assert ack_latest(dep, tid, token, device) == 1
    out = ok(dep.run("status", "--stale", "0", "--json")).json()
    assert out["key_sets"][0]["acknowledged"] == 1 and out["key_sets"][0]["registered_behind"] == 1
    assert out["stale_revocations_count"] == 1
    assert out["stale_revocations"][0]["terminal_served_version"] == 0
    # It fetches the list from the service (the version served is recorded): nothing stale.
    from fastapi.testclient import TestClient

    from capwarden.trust.config import ServiceConfig
    from capwarden.trust.service import create_app

    with TestClient(create_app(ServiceConfig.from_data_dir(dep.data))) as client:
        r = client.get("/v1/terminals/%s/revocations" % tid, headers=trustrig.auth(token))
        assert r.status_code == 200, r.text
    out = ok(dep.run("status", "--stale", "0", "--json")).json()
    assert out["stale_revocations_count"] == 0
    assert {t["terminal_id"]: t["revocations_served"] for t in out["terminals"]} == {tid: 1, quiet: 0}
    text = ok(dep.run("status")).out
    assert tid in text and "key set 1" in text and "1 acknowledged" in text


# ---- keys --------------------------------------------------------------------------------------

def test_keys_rotate_and_retire_waits_for_the_acknowledgements(dep):
    tid, token, device = dep.register()
    keys = ok(dep.run("keys", "list", "--json")).json()["keys"]
    old = [k["key_id"] for k in keys if k["role"] == "issuer"][0]
    out = ok(dep.run("keys", "rotate", "--role", "issuer", "--now", "--json")).json()
    assert out["version"] == 2 and out["role"] == "issuer" and out["key_id"] != old
    # The terminal has not acknowledged key set 2: the old key is still needed.
    obj = refused_json(dep.run("keys", "retire", old, "--json"), 1)
    assert tid in obj["error"] and "force" in obj["error"]
    forced = ok(dep.run("keys", "retire", old, "--force", "--json")).json()
    assert forced["forced"] is True and forced["needing"] == [tid] and forced["version"] == 3
    listed = {k["key_id"]: k for k in ok(dep.run("keys", "list", "--json")).json()["keys"]}
    assert listed[old]["retired_at"] is not None and listed[out["key_id"]]["current"] is True
    refused(dep.run("keys", "retire", out["key_id"]), 2)                   # the key in force
    refused(dep.run("keys", "retire", old), 2)                             # already retired
    refused(dep.run("keys", "retire", "issuer-nope"), 2)
    refused(dep.run("keys", "rotate", "--role", "ra", "--effective-in", "60"), 2)
    refused(dep.run("keys", "rotate", "--role", "ra", "--now"), 2)
    refused(dep.run("keys", "rotate", "--role", "issuer", "--now", "--effective-in", "60"), 2)
    refused(dep.run("keys", "rotate", "--role", "nobody"), 2)
    ra = ok(dep.run("keys", "rotate", "--role", "ra", "--json")).json()
    assert ra["version"] == 4
    assert "retired" in ok(dep.run("keys", "list")).out


def _collide_once(monkeypatch):
    """The first key-set publication meets a busy database (retryable): the transaction runs again."""
    import sqlalchemy as sa

    from capwarden.trust import keydist

    real, calls = keydist.publish_keyset, []

    def publish(session, ring, now=None):
        calls.append(now)
        if len(calls) == 1:
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        return real(session, ring, now)
    monkeypatch.setattr(keydist, "publish_keyset", publish)
    return calls


def test_a_retried_rotation_rotates_once(dep, monkeypatch):
    """The ring (files) changes outside the transaction that is retried: one new key, one version."""
    calls = _collide_once(monkeypatch)
    before = {k["key_id"] for k in dep.ring.describe()}
    out = ok(dep.run("keys", "rotate", "--role", "issuer", "--json")).json()
    dep.ring.refresh()
    added = {k["key_id"] for k in dep.ring.describe()} - before
    assert len(calls) == 2 and added == {out["key_id"]} and out["version"] == 2
    assert dep.db.run(registry.latest_keyset_version, write=False) == 2


def test_a_retried_retirement_retires_once(dep, monkeypatch):
    old = [k["key_id"] for k in dep.ring.describe() if k["role"] == "issuer"][0]
    new = ok(dep.run("keys", "rotate", "--role", "issuer", "--now", "--json")).json()["key_id"]
    calls = _collide_once(monkeypatch)
    out = ok(dep.run("keys", "retire", old, "--json")).json()
    assert len(calls) == 2 and out["key_id"] == old and out["version"] == 3
    dep.ring.refresh()
    listed = {k["key_id"]: k for k in dep.ring.describe()}
    assert listed[old]["retired_at"] is not None and listed[new]["retired_at"] is None
    doc = dep.db.run(lambda s: registry.keyset_payload_of(s, 3), write=False)
    assert [k["key_id"] for k in doc["keys"]] == [new]


def test_a_later_issuer_key_waits_for_its_time(dep):
    out = ok(dep.run("keys", "rotate", "--role", "issuer", "--effective-in", "3600", "--json")).json()
    assert out["effective_at"] >= int(time.time()) + 3590
    listed = {k["key_id"]: k for k in ok(dep.run("keys", "list", "--json")).json()["keys"]}
    assert listed[out["key_id"]]["current"] is False                      # the old key signs until then


def test_an_issuer_rotation_defaults_to_the_librarys_lead(dep):
    """No --effective-in: the new key waits keydist.ROTATION_LEAD_S (it once signed at once)."""
    from capwarden.trust.keydist import ROTATION_LEAD_S

    old = dep.ring.issuer_key().key_id
    before = int(time.time())
    out = ok(dep.run("keys", "rotate", "--role", "issuer", "--json")).json()
    assert before + ROTATION_LEAD_S <= out["effective_at"] <= int(time.time()) + ROTATION_LEAD_S
    dep.ring.refresh()
    assert dep.ring.issuer_key().key_id == old and dep.ring.valid_from(out["key_id"]) == out["effective_at"]
    listed = {k["key_id"]: k for k in ok(dep.run("keys", "list", "--json")).json()["keys"]}
    assert listed[old]["current"] is True and listed[out["key_id"]]["current"] is False
    text = cli("trust", "keys", "rotate", "--help").out
    assert "--now" in text and "default %d" % ROTATION_LEAD_S in text and "refuse" in text


# ---- serve -------------------------------------------------------------------------------------

def test_serve_says_it_is_up_and_stops_with_the_exit_codes(dep):
    s = trustrig.Serve(dep.data)
    try:
        assert s.info["serving"] is True and s.url.startswith("http://127.0.0.1:")
        r = httpx.get(s.url + "/openapi.json", timeout=30)
        assert r.status_code == 200 and "/v1/tickets" in r.json()["paths"]
        r = httpx.post(s.url + "/v1/tickets", json=trustrig.ticket_body(), headers=trustrig.auth(dep.token), timeout=30)
        assert r.status_code == 200 and r.json()["jti"]
        assert s.send(signal.SIGTERM) == 0
    finally:
        s.stop()
    s = trustrig.Serve(dep.data)
    try:
        assert s.send(signal.SIGINT) == 130
        assert "Traceback" not in s.proc.stderr.read()
    finally:
        s.stop()


def test_serve_over_tls(dep, tmp_path):
    tls = trustrig.self_signed(str(tmp_path))
    s = trustrig.Serve(dep.data, listen="0.0.0.0:0", tls=tls)
    try:
        assert s.url.startswith("https://")
        port = s.url.rsplit(":", 1)[1]
        r = httpx.post("https://127.0.0.1:%s/v1/tickets" % port, json=trustrig.ticket_body(),
                       headers=trustrig.auth(dep.token), verify=ssl.create_default_context(cafile=tls[0]), timeout=30)
        assert r.status_code == 200
    finally:
        s.stop()


def test_serve_refusals_are_usage_errors_before_anything_starts(dep, tmp_path, monkeypatch):
    from capwarden.cli import trust_serve

    tls = trustrig.self_signed(str(tmp_path))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        cases = [
            (["--listen", "0.0.0.0:0"], 2, "--tls-cert"),                 # plain HTTP off loopback
            (["--listen", "127.0.0.1:99999"], 2, "99999"),
            (["--listen", "unix:/tmp/x.sock"], 2, "HOST:PORT"),
            (["--listen", "127.0.0.1:0", "--tls-cert", tls[0]], 2, "--tls-key"),
            (["--listen", "127.0.0.1:0", "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", tls[1]], 2, "none.pem"),
            (["--listen", "127.0.0.1:0", "--tls-cert", str(garbage), "--tls-key", tls[1]], 1, ""),
            (["--listen", "127.0.0.1:%d" % busy.getsockname()[1]], 2, "cannot listen"),
            (["--listen", "127.0.0.1:0", "--mqtt", "mqtt://broker.example:1883"], 2, "loopback"),
            (["--listen", "127.0.0.1:0", "--mqtt", "http://x"], 2, "--mqtt"),
            (["--listen", "127.0.0.1:0", "--mqtt-username", "u"], 2, "--mqtt"),
        ]
        # As processes, all at once: the address in use (refused once the service binds, before
        # it serves) and, with --json, the three kinds of refusal (usage, bad file, address).
        runs = [(cases[6][0], cases[6][1], cases[6][2], False)]
        runs += [(cases[i][0], cases[i][1], cases[i][2], True) for i in (0, 5, 6)]
        started = [subprocess.Popen([trustrig.EXE, "trust", "serve", "--data", dep.data, *extra,
                                     *(["--json"] if js else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for extra, _c, _t, js in runs]
        # The argument checks in this process, with the service's start replaced by a failure:
        # each must be refused before anything would start.
        def must_not_start(*_a):
            raise AssertionError("trust serve got as far as starting the service")
        monkeypatch.setattr(trust_serve, "_run_service", must_not_start)
        for i, (extra, code, text) in enumerate(cases):
            if i != 6:
                r = cli("trust", "serve", "--data", dep.data, *extra)
                refused(r, code)
                assert text in r.err, (extra, r)
        for (extra, code, text, js), p in zip(runs, started):
            out, err = p.communicate(timeout=120)
            r = Result(p.returncode, out, err)
            if js:
                assert refused_json(r, code)["exit_code"] == code
            else:
                refused(r, code)
                assert text in r.err, (extra, r)
        refused(cli("trust", "serve", "--data", str(tmp_path / "none"), "--listen", "127.0.0.1:0"), 2)
    finally:
        busy.close()


# ---- every subcommand: no traceback, --help with examples that run -----------------------------

BAD = [
    (["trust"], 2), (["trust", "bogus"], 2), (["trust", "authorizer"], 2), (["trust", "terminal"], 2),
    (["trust", "keys"], 2), (["trust", "init"], 2), (["trust", "init", "--issuer"], 2),
    (["trust", "serve"], 2), (["trust", "revoke"], 2), (["trust", "status", "--stale", "-1"], 2),
    (["trust", "authorizer", "add"], 2), (["trust", "terminal", "enroll", "--expires-in", "x"], 2),
    (["trust", "keys", "rotate"], 2), (["trust", "keys", "retire"], 2),
]


@pytest.mark.parametrize("argv,code", BAD, ids=[" ".join(a) for a, _c in BAD])
def test_bad_command_lines_are_usage_errors(argv, code, tmp_path):
    assert refused_json(cli(*argv, "--json"), code)
    r = cli(*argv)
    assert r.code == code and "Traceback" not in r.err


PLACEHOLDER = "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"


def _examples(argv):
    text = cli(*argv, "--help").out
    assert "examples:" in text, argv
    block = text.split("examples:")[1].split("\noptions:")[0].split("\npositional arguments:")[0]
    lines, cur = [], ""
    for line in block.splitlines():
        line = line.strip()
        if not line:
            continue
        cur += " " + line.rstrip("\\").strip() if cur else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(cur)
            cur = ""
    return [x for x in lines if x.startswith("capwarden trust")]


def test_the_help_examples_run_as_written(tmp_path, monkeypatch):
    """Each example in `capwarden trust ... --help`, in the order a reader meets them, in a
    fresh folder: the placeholder ids replaced by the real ones of the deployment they made."""
    monkeypatch.chdir(tmp_path)
    sections = [["trust"], ["trust", "init"], ["trust", "authorizer"], ["trust", "terminal"], ["trust", "revoke"],
                ["trust", "status"], ["trust", "keys"], ["trust", "prune"]]
    seen = set()
    state = {}
    ran = 0
    for sec in sections:
        for line in _examples(sec):
            if line in seen:
                continue
            seen.add(line)
            if "$(" not in line and " serve " not in line and "postgresql" not in line and "/var/lib" not in line:
                # the placeholder ids: the real ones of this deployment
                for placeholder, key in (("terminal:" + PLACEHOLDER, "terminal"), ("issuer-" + PLACEHOLDER, "old_issuer"),
                                         (PLACEHOLDER, "jti")):
                    if placeholder in line:
                        line = line.replace(placeholder, state[key])
                        break
            argv = shlex.split(line.replace('"$(capwarden id new terminal)"',
                                            cli("id", "new", "terminal").out.strip()))[1:]
            if argv[:2] == ["trust", "serve"] or "postgresql+psycopg" in line or "/var/lib" in line:
                continue     # serve: test_serve_*; the fleet init: docs/deployment.md's test
            r = cli(*argv)
            assert r.code == 0 and "Traceback" not in r.err, (line, r)
            ran += 1
            if argv[:2] == ["trust", "init"]:
                d = Dep.__new__(Dep)
                d.data = os.path.abspath("trust")
                d.db = open_db("sqlite:///" + os.path.join(d.data, "trust.db"))
                d.ring = KeyRing.open(ring_folder(d.data))
                d.token = re.findall(r"keep it\): (\S+)", r.out)[0]
                state["dep"] = d
                state["terminal"], _tok, _dev = d.register()          # the one the suspend example suspends
                state["acker"], state["token"], state["device"] = d.register()
                state["jti"] = d.ticket(state["acker"])["jti"]
                state["old_issuer"] = d.ring.issuer_key().key_id
            if argv[:3] == ["trust", "keys", "rotate"]:
                # What the operator does before the retire example: a key in force now, and the
                # terminals' acknowledgement of the key set that carries it.
                d = state["dep"]
                ok(cli("trust", "keys", "rotate", "--data", d.data, "--role", "issuer", "--now"))
                assert ack_latest(d, state["acker"], state["token"], state["device"]) >= 3
    state["dep"].close()
    assert ran >= 12


def test_keys_retire_example_after_the_rotate_example(tmp_path, monkeypatch):
    """The keys example as a sequence: rotate with --effective-in makes the old key still the
    one in force, so retire refuses it (exit 2) until the new key's time comes."""
    monkeypatch.chdir(tmp_path)
    d = Dep(str(tmp_path))
    try:
        old = d.ring.issuer_key().key_id
        rotate, retire = [x for x in _examples(["trust", "keys"]) if "rotate" in x or "retire" in x]
        ok(cli(*shlex.split(rotate)[1:]))
        r = cli(*shlex.split(retire.replace("issuer-0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", old))[1:])
        refused(r, 2)
        assert "is in use" in r.err
    finally:
        d.close()


def test_serve_connections_have_nodelay():
    """serve binds its socket itself: connections accepted from it must get TCP_NODELAY from
    it (asyncio sets none on a socket it is handed), or each answer on a kept-alive connection
    waits for the client's delayed ACK (40 ms per request: the issuance benchmark found it)."""
    from capwarden.cli.trust_serve import _listen_socket

    sock = _listen_socket("127.0.0.1", 0)
    try:
        client = socket.create_connection(sock.getsockname()[:2], timeout=10)
        accepted, _addr = sock.accept()
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            accepted.close()
            client.close()
    finally:
        sock.close()


def test_prune_deletes_expired_records_and_a_dry_run_only_counts(tmp_path):
    d = Dep(str(tmp_path))
    try:
        past = int(time.time()) - 40 * 86400          # expired a month and more ago: past the 30 days kept
        old = Issuer(d.db, d.ring, clock=lambda: past).issue_ticket(d.token, trustrig.ticket_body(
            "terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"))
        new = d.ticket("terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
        counted = ok(d.run("prune", "--dry-run", "--json")).json()
        assert counted["dry_run"] is True and counted["pruned"]["tickets"] == 1
        assert ok(d.run("prune", "--keep-days", "60", "--json")).json()["pruned"]["tickets"] == 0
        r = ok(d.run("prune"))
        assert "deleted 1 tickets" in r.out
        with d.db.transaction(write=False) as s:
            import sqlalchemy as sa

            from capwarden.trust.models import IssuedTicket
            assert set(s.scalars(sa.select(IssuedTicket.jti))) == {new["jti"]} and old["jti"] != new["jti"]
        r = cli("trust", "prune", "--data", d.data, "--keep-days", "-1")
        assert r.code == 2 and "--keep-days" in r.err
    finally:
        d.close()
