"""A key rotation interrupted between its two steps (the ring's files, then the key set's
publication): no issuer key ever signs before a published key set carries it, the operator is
told the rotation is unfinished, and `capwarden trust keys publish` (keydist.finish_rotation)
completes it. The crash is the publication raising, or the CLI process SIGKILLed there."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from ra_setup import T0, clock, ra  # noqa: F401 (fixtures)

from capwarden.trust import keydist, keysets, signed
from capwarden.trust.servicekeys import ISSUER, RA, KeyRing, ring_folder


class Crash(Exception):
    pass


@contextlib.contextmanager
def publication_fails(monkeypatch):
    """keydist.publish_keyset raises, as a process dying inside the publishing transaction."""
    def crash(session, ring, now=None):
        raise Crash("the process died before the key set was committed")
    monkeypatch.setattr(keydist, "publish_keyset", crash)
    try:
        yield
    finally:
        monkeypatch.undo()


def _carried(ra, version):
    return [k["key_id"] for k in signed.payload_of(ra.keyset(version), signed.KEY_SET)["keys"]]


def test_an_issuer_key_never_signs_before_a_published_key_set_carries_it(ra, clock, monkeypatch):
    old = ra.ring.issuer_key(clock.t).key_id
    before = {k["key_id"] for k in ra.ring.describe()}
    with publication_fails(monkeypatch), pytest.raises(Crash):
        ra.rotate(ISSUER, effective_at=clock.t)          # "at once"
    ring = KeyRing.open(ra.ring.folder)                  # what a service process loads
    new, = {k["key_id"] for k in ring.describe()} - before
    assert ra.latest() == 1 and new not in _carried(ra, 1)
    for t in (clock.t, clock.t + 10 ** 6):
        assert ring.issuer_key(t).key_id == old          # the undistributed key does not sign
    state = ra.db.run(lambda s: keydist.rotation_state(s, ring), write=False)
    assert state["unfinished"] and state["pending"] == [new] and state["unpublished"] == [new]

    clock.advance(100)
    done = keydist.finish_rotation(ra.db, ring, clock.t)
    assert done == {"version": 2, "published": True, "confirmed": [new]}
    assert _carried(ra, 2) == [old, new]
    keysets.verify_next(keysets.verify_next(ra.enroll()["ra_keys"], ra.keyset(1)), ra.keyset(2))
    assert ring.issuer_key(clock.t).key_id == new        # asked for "at once": it signs now
    assert not ra.db.run(lambda s: keydist.rotation_state(s, ring), write=False)["unfinished"]
    # Finishing again, or in another process at the same time, publishes nothing more.
    assert keydist.finish_rotation(ra.db, KeyRing.open(ra.ring.folder), clock.t) == {
        "version": 2, "published": False, "confirmed": []}


def test_a_key_set_published_late_still_gives_terminals_the_whole_lead(ra, clock, monkeypatch):
    old = ra.ring.issuer_key(clock.t).key_id
    with publication_fails(monkeypatch), pytest.raises(Crash):
        ra.rotate(ISSUER)                                # the default lead
    ring = KeyRing.open(ra.ring.folder)
    new, = [k.key_id for k in ring.issuer_keys() if k.key_id != old]
    assert ring.issuer_key(T0 + keydist.ROTATION_LEAD_S).key_id == old
    clock.advance(5000)                                  # the operator notices later
    keydist.finish_rotation(ra.db, ring, clock.t)
    at = clock.t + keydist.ROTATION_LEAD_S
    assert ring.valid_from(new) == at
    p2 = signed.payload_of(ra.keyset(2), signed.KEY_SET)
    assert p2["effective_at"] == at and [k["valid_from"] for k in p2["keys"] if k["key_id"] == new] == [at]
    assert json.load(open(os.path.join(ring.folder, new + ".pub.json")))["valid_from"] == at
    assert ring.issuer_key(at - 1).key_id == old and ring.issuer_key(at).key_id == new


def test_a_crash_after_the_commit_is_finished_without_a_new_version(ra, clock):
    """The key set committed, the process gone before it told the ring: the key is pending
    (safe), and finishing confirms it from the set already published."""
    new = ra.ring.rotate(ISSUER, now=clock.t, effective_at=clock.t)
    assert ra.publish() == 2                             # published, never confirmed
    assert ra.ring.issuer_key(clock.t).key_id != new
    assert ra.db.run(lambda s: keydist.rotation_state(s, ra.ring), write=False)["pending"] == [new]
    assert keydist.finish_rotation(ra.db, ra.ring, clock.t) == {"version": 2, "published": False,
                                                               "confirmed": [new]}
    assert ra.ring.issuer_key(clock.t).key_id == new


def test_an_interrupted_retirement_and_ra_rotation_are_finished(ra, clock, monkeypatch):
    old = ra.ring.issuer_key(clock.t).key_id
    new = ra.rotate(ISSUER, effective_at=clock.t)["key_id"]
    with publication_fails(monkeypatch), pytest.raises(Crash):
        ra.retire(old, force=True)
    with publication_fails(monkeypatch), pytest.raises(Crash):
        ra.rotate(RA)
    state = ra.db.run(lambda s: keydist.rotation_state(s, ra.ring), write=False)
    assert state["unfinished"] and state["withdrawn"] == [old] and state["pending"] == []
    assert state["unpublished"] == [ra.ring.ra_keys()[0].key_id]
    assert keydist.finish_rotation(ra.db, ra.ring, clock.t)["version"] == 3
    assert _carried(ra, 3) == [new]
    keysets.verify_next(signed.payload_of(ra.keyset(2), signed.KEY_SET), ra.keyset(3))
    assert not ra.db.run(lambda s: keydist.rotation_state(s, ra.ring), write=False)["unfinished"]


# ---- the command line, SIGKILLed between the two steps ----------------------------------------

CRASHING_ROTATE = textwrap.dedent("""
    import os, signal, sys
    from capwarden.cli import main
    from capwarden.trust import keydist

    def die(*a, **kw):      # the ring's files are written; the key set is not published
        os.kill(os.getpid(), signal.SIGKILL)
    keydist.publish_keyset = die
    # --effective-in 0 (what --now does): the key would sign at once were it not pending.
    sys.exit(main(["trust", "keys", "rotate", "--data", sys.argv[1], "--role", "issuer", "--effective-in", "0"]))
""")


def cli(*argv):
    from capwarden.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _rotation_killed_before_publication(tmp_path):
    """A fresh deployment whose `trust keys rotate` was SIGKILLed between writing the ring and
    publishing the key set: (data folder, its KeyRing, the old issuer key id)."""
    data = str(tmp_path / "trust")
    code, out, err = cli("trust", "init", "--data", data, "--issuer", "issuer:acme", "--json")
    assert code == 0, err
    ring = KeyRing.open(ring_folder(data))
    old = ring.issuer_key().key_id
    p = subprocess.run([sys.executable, "-c", CRASHING_ROTATE, data], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    return data, ring, old


def test_cli_rotation_killed_before_publication_is_finished_by_keys_publish(tmp_path):
    data, ring, old = _rotation_killed_before_publication(tmp_path)
    ring.refresh()
    new, = [k.key_id for k in ring.issuer_keys() if k.key_id != old]
    assert ring.issuer_key().key_id == old               # a service reloading the ring signs with the old key

    code, out, err = cli("trust", "status", "--data", data, "--json")
    assert code == 0, err
    rotation = json.loads(out)["rotation"]
    assert rotation["unfinished"] is True and rotation["pending"] == [new] and rotation["key_set_version"] == 1
    code, out, err = cli("trust", "status", "--data", data)
    assert code == 0 and "key rotation unfinished" in out and new in out and "trust keys publish" in out
    code, out, err = cli("trust", "keys", "list", "--data", data)
    assert code == 0 and "pending" in out and "trust keys publish" in out
    listed = {k["key_id"]: k for k in json.loads(cli("trust", "keys", "list", "--data", data, "--json")[1])["keys"]}
    assert listed[new]["pending"] is True and listed[new]["current"] is False and listed[old]["current"] is True

    code, out, err = cli("trust", "keys", "publish", "--data", data, "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["published"] is True and done["version"] == 2 and done["confirmed"] == [new]
    assert done["rotation"]["unfinished"] is False
    ring.refresh()
    assert ring.issuer_key().key_id == new               # no lead: it signs once its key set is out
    code, out, err = cli("trust", "keys", "publish", "--data", data)
    assert code == 0 and "nothing to publish" in out
    code, out, err = cli("trust", "status", "--data", data)
    assert code == 0 and "unfinished" not in out


def test_trust_serve_finishes_an_interrupted_rotation_before_serving(tmp_path):
    import trustrig

    data, ring, old = _rotation_killed_before_publication(tmp_path)
    proc = subprocess.Popen([trustrig.EXE, "trust", "serve", "--data", data, "--listen", "127.0.0.1:0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.terminate()
        _rest, said = proc.communicate(timeout=30)
    assert json.loads(line)["serving"] is True, said
    assert "unfinished key rotation was finished at start" in said
    ring.refresh()
    assert ring.issuer_key().key_id != old and not ring.pending()
    code, out, err = cli("trust", "status", "--data", data, "--json")
    assert json.loads(out)["rotation"]["unfinished"] is False and json.loads(out)["rotation"]["key_set_version"] == 2
