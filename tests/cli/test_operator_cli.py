"""`capwarden operator add|list|remove` (issue 15): passwords from stdin or a prompt, never argv;
scrypt hashes in an owner-only file; authenticate() for the console's login."""

import json
import os
import stat

import pytest

from capwarden.engine import operators
from clihelp import cap, cli, ok

PASSWORD = "correct horse battery"


@pytest.fixture
def store(here):
    return os.path.join(here.folder, "st")


def test_add_list_authenticate_remove(store, here):
    r = ok(cap("operator", "add", "--store", store, "alice", "--password-stdin", "--json", input=PASSWORD + "\n"))
    assert json.loads(r.out)["name"] == "alice" and json.loads(r.out)["added"] is True
    path = os.path.join(store, operators.FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read()
    assert PASSWORD not in text and "scrypt" in text
    listed = ok(cli("operator", "list", "--store", store, "--json")).json()["operators"]
    assert [o["name"] for o in listed] == ["alice"]
    op = operators.authenticate(store, "alice", PASSWORD)
    assert op is not None and op.name == "alice"
    assert operators.authenticate(store, "alice", PASSWORD + "x") is None
    assert operators.authenticate(store, "bob", PASSWORD) is None
    # Adding again is refused unless --replace; the old password then stops working.
    assert cap("operator", "add", "--store", store, "alice", "--password-stdin", input="another password\n").code == 2
    before = operators.OperatorStore(store).stamp("alice")
    ok(cap("operator", "add", "--store", store, "alice", "--password-stdin", "--replace", input="another password\n"))
    after = operators.OperatorStore(store).stamp("alice")
    assert before and after and before != after and operators.OperatorStore(store).stamp("nobody") is None
    assert operators.authenticate(store, "alice", PASSWORD) is None
    assert operators.authenticate(store, "alice", "another password").name == "alice"
    r = ok(cli("operator", "remove", "--store", store, "alice", "--json")).json()
    assert r == {"removed": True, "name": "alice"}
    assert operators.authenticate(store, "alice", "another password") is None
    assert cli("operator", "remove", "--store", store, "alice").code == 1


def test_a_short_password_is_refused_and_nothing_is_written(store, here):
    r = cap("operator", "add", "--store", store, "carol", "--password-stdin", "--json", input="short\n")
    assert r.code == 1 and json.loads(r.out)["ok"] is False
    assert "carol" not in [o.name for o in operators.OperatorStore(store).list()]


def test_no_password_option_exists_on_the_command_line(store, here):
    r = cli("operator", "add", "--store", store, "dave", "--password", PASSWORD)
    assert r.code == 2


def test_an_unknown_name_costs_a_full_derivation(store, here, monkeypatch):
    ok(cap("operator", "add", "--store", store, "erin", "--password-stdin", input=PASSWORD + "\n"))
    calls = []
    real = operators._derive
    monkeypatch.setattr(operators, "_derive", lambda pw, e: calls.append(e["n"]) or real(pw, e))
    assert operators.authenticate(store, "nobody", PASSWORD) is None
    assert operators.authenticate(store, "erin", "wrong password") is None
    assert calls == [operators.COST["n"], operators.COST["n"]]       # the same work either way


def test_a_corrupt_operators_file_is_a_store_error(store, here):
    from capwarden.errors import StoreError

    path = os.path.join(store, operators.FILE)
    with open(path, "w") as f:
        f.write('{"version": 1, "operators": {"x": {"kdf": "md5"}}}')
    os.chmod(path, 0o600)
    with pytest.raises(StoreError):
        operators.authenticate(store, "x", PASSWORD)
    r = cli("operator", "list", "--store", store, "--json")
    assert r.code == 1 and r.json()["ok"] is False
    os.unlink(path)
