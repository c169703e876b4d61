"""The S4 command line end to end, and the store's promises (atomic, owner-only, sealed)."""

import json
import os
import stat
import subprocess
import sys

import pytest

from capwarden.cli import main
from capwarden.credentials.ids import new_fay_id

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def flow(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "init", "--store", "st", "--json")
    assert code == 0
    tid = json.loads(out)["terminal_id"]
    os.mkdir("k")      # --out never creates a folder (issue 11 item 9)
    assert run(capsys, "keys", "generate", "--algorithm", "ed25519", "--key-id", "acme-1", "--issuer", "issuer:acme",
               "--valid-from", "0", "--out", "k/acme")[0] == 0
    assert run(capsys, "keys", "generate", "--algorithm", "ecdsa-p256-sha256", "--key-id", "tix-1", "--issuer",
               "tickets:acme", "--valid-from", "0", "--out", "k/tix")[0] == 0
    for f in ("k/acme.pub.json", "k/tix.pub.json"):
        assert run(capsys, "keys", "import", "--store", "st", f)[0] == 0
    fay = new_fay_id()
    return {"tid": tid, "fay": fay, "res": tid + "/sim/camera"}


def test_s4_flow_descriptor_verify_revoke(flow, capsys):
    f = flow
    assert run(capsys, "issue", "descriptor", "--key", "k/acme.key", "--fay", f["fay"], "--terminal", f["tid"],
               "--grant", "sim/camera=read,execute", "--days", "10", "--out", "cam.cap")[0] == 0
    code, out, _ = run(capsys, "descriptors", "import", "--store", "st", "cam.cap", "--json")
    did = json.loads(out)["descriptor_id"]
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read",
                       "--descriptor-id", did, "--json")
    assert code == 0 and json.loads(out)["granted"] is True and json.loads(out)["error_code"] is None
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "write",
                       "--descriptor", "cam.cap", "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_MODE_NOT_GRANTED"
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read",
                       "--descriptor", "cam.cap", "--at", "1", "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_NOT_YET_VALID"
    assert run(capsys, "revoke", "--key", "k/acme.key", "--descriptor-id", did, "--reason", "compromised",
               "--out", "r.cbor")[0] == 0
    code, out, _ = run(capsys, "revocations", "import", "--store", "st", "r.cbor", "--json")
    assert code == 0 and json.loads(out)["target"] == did
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read",
                       "--descriptor-id", did, "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_REVOKED"
    code, out, _ = run(capsys, "inspect", "cam.cap")
    assert code == 0 and json.loads(out)["id"] == did and json.loads(out)["signature_checked"] is False


def test_s4_flow_ticket(flow, capsys):
    f = flow
    assert run(capsys, "issue", "ticket", "--key", "k/tix.key", "--fay", f["fay"], "--terminal", f["tid"],
               "--grant", "sim/**=read", "--hours", "2", "--out", "t.jws")[0] == 0
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read",
                       "--ticket", "t.jws", "--json")
    assert code == 0 and json.loads(out)["credential_type"] == "ticket"
    code, out, _ = run(capsys, "inspect", "t.jws")
    assert json.loads(out)["type"] == "ticket" and json.loads(out)["alg"] == "ES256"


def test_bad_input_is_a_clean_error(flow, capsys, tmp_path):
    code, _, err = run(capsys, "descriptors", "import", "--store", "st", "missing.cap")
    assert code == 2 and "cannot read descriptor missing.cap" in err
    code, _, err = run(capsys, "issue", "descriptor", "--key", "k/acme.key", "--fay", "bob", "--terminal", flow["tid"],
                       "--grant", "sim/camera=read", "--out", "x.cap")
    # A malformed argument is a usage error that names the format with an example (issue 11.3, 11.4).
    assert code == 2 and "--fay must be a Fay_ID" in err and "e.g. fay:" in err and not os.path.exists("x.cap")
    code, _, err = run(capsys, "issue", "descriptor", "--key", "k/acme.key", "--fay", flow["fay"], "--terminal",
                       flow["tid"], "--grant", "no-equals-sign", "--out", "x.cap")
    assert code == 2 and "PATTERN=MODE" in err
    with open("junk.cap", "wb") as fh:
        fh.write(os.urandom(300))
    code, out, _ = run(capsys, "descriptors", "import", "--store", "st", "junk.cap", "--json")
    assert code == 1 and json.loads(out)["error_code"] == "E_DESCRIPTOR_MALFORMED"
    code, _, err = run(capsys, "verify", "--store", "nowhere", "--fay", flow["fay"], "--resource", flow["res"],
                       "--mode", "read", "--descriptor-id", "x")
    assert code == 2 and "capwarden init" in err        # a store folder that is not there: usage (docs/cli.md)
    assert run(capsys, "init", "--store", "st")[0] == 2   # never overwrites an identity


def test_secrets_are_owner_only_and_refused_otherwise(flow, capsys):
    for path in ("st/storage.key", "st/conversion-key.json", "k/acme.key"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    os.chmod("st/storage.key", 0o644)
    code, _, err = run(capsys, "descriptors", "list", "--store", "st")
    assert code == 1 and "readable by others" in err and "chmod 600" in err


def test_stored_descriptors_are_sealed(flow, capsys):
    f = flow
    run(capsys, "issue", "descriptor", "--key", "k/acme.key", "--fay", f["fay"], "--terminal", f["tid"],
        "--grant", "sim/camera=read", "--out", "cam.cap")
    _, out, _ = run(capsys, "descriptors", "import", "--store", "st", "cam.cap", "--json")
    did = json.loads(out)["descriptor_id"]
    path = "st/descriptors/%s.cap" % did
    blob = open(path, "rb").read()
    assert f["fay"].encode() not in blob and b"issuer:acme" not in blob
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    open(path, "wb").write(bytes(tampered))
    # A decision, not a store failure: the engine answers (and audits) a deny for it.
    code, out, _ = run(capsys, "verify", "--store", "st", "--fay", f["fay"], "--resource", f["res"], "--mode", "read",
                       "--descriptor-id", did, "--json")
    d = json.loads(out)
    assert code == 1 and d["error_code"] == "E_DESCRIPTOR_MALFORMED" and "failed authentication" in d["message"]


def test_a_crash_mid_write_leaves_the_old_state(tmp_path, monkeypatch):
    from capwarden.credentials import store

    path = str(tmp_path / "keys.json")
    store.write_json(path, [{"old": True}])

    def crash(*a):
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write_json(path, [{"new": True}])
    monkeypatch.undo()
    assert store.read_json(path) == [{"old": True}]
    assert os.listdir(tmp_path) == ["keys.json"]     # no temporary file left behind


def test_corrupt_store_file_is_reported_not_a_traceback(flow, capsys):
    open("st/keys.json", "w").write("{not json")
    code, _, err = run(capsys, "descriptors", "list", "--store", "st")
    assert code == 1 and "corrupt" in err


@pytest.mark.parametrize("cmd", ["init", "keys", "issue", "revoke", "descriptors", "revocations", "verify", "inspect"])
def test_help_teaches_with_examples(cmd):
    out = subprocess.run([EXE, cmd, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "examples:" in out.stdout and "capwarden " + cmd in out.stdout


def test_store_defaults_to_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CAPWARDEN_STORE", str(tmp_path / "envstore"))
    code, out, _ = run(capsys, "init", "--json")
    assert code == 0 and json.loads(out)["store"] == str(tmp_path / "envstore")
