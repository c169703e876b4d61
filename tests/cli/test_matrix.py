"""The CLI matrix (issue 11): every command x {missing file, unreadable file, garbage file, folder
instead of file, unwritable output, bad argument} -> no traceback, the exit code of the one
table (docs/cli.md), a message on stderr, and with --json exactly one JSON object on stdout.

In-process (cli.main) for speed; test_matrix_subprocess.py runs a sample as real processes."""

import pytest

from clihelp import cli

# (case id, argv with placeholders, exit code). {missing} {locked} {garbage} {folder} name the bad
# inputs; {unwritable} is a path in a folder nobody can create files in; {nofolder} is in a folder
# that does not exist.
KEY = ["--fay", "{fay}", "--terminal", "{tid}", "--grant", "sim/camera=read"]
VERIFY = ["verify", "--store", "st", "--fay", "{fay}", "--resource", "sim/camera", "--mode", "read"]
SERVE = ["serve", "--store", "st", "--listen", "127.0.0.1:0", "--board", "sim", "--runtime-token", "rt1=token-123456"]
REQUEST = ["request", "--url", "ws://127.0.0.1:9/cap/v1", "--runtime", "rt1", "--token", "token-123456"]
ACQUIRE = REQUEST + ["acquire", "--fay", "{fay}", "--resource", "sim/gps", "--mode", "read"]

CASES = [
    # init
    ("init/folder-is-a-file", ["init", "--store", "plainfile"], 2),
    ("init/unwritable", ["init", "--store", "{unwritable}"], 2),
    ("init/existing-store", ["init", "--store", "st"], 2),
    ("init/bad-terminal-id", ["init", "--store", "new-st", "--terminal-id", "terminal:alice"], 2),
    # keys generate
    ("keys-generate/unwritable", ["keys", "generate", "--algorithm", "ed25519", "--key-id", "x", "--issuer", "i:x",
                                  "--out", "{unwritable}"], 2),
    ("keys-generate/missing-folder", ["keys", "generate", "--algorithm", "ed25519", "--key-id", "x", "--issuer",
                                      "i:x", "--out", "{nofolder}"], 2),
    ("keys-generate/out-is-folder", ["keys", "generate", "--algorithm", "ed25519", "--key-id", "x", "--issuer",
                                     "i:x", "--out", "adir"], 2),
    ("keys-generate/existing-secret", ["keys", "generate", "--algorithm", "ed25519", "--key-id", "x", "--issuer",
                                       "i:x", "--out", "k/acme"], 2),
    ("keys-generate/bad-algorithm", ["keys", "generate", "--algorithm", "rsa", "--key-id", "x", "--issuer", "i:x",
                                     "--out", "k/new"], 2),
    ("keys-generate/bad-valid-from", ["keys", "generate", "--algorithm", "ed25519", "--key-id", "x", "--issuer",
                                      "i:x", "--out", "k/new", "--valid-from", "-5"], 2),
    # keys import
    ("keys-import/missing", ["keys", "import", "--store", "st", "{missing}"], 2),
    ("keys-import/unreadable", ["keys", "import", "--store", "st", "{locked}"], 2),
    ("keys-import/garbage", ["keys", "import", "--store", "st", "{garbage}"], 1),
    ("keys-import/folder", ["keys", "import", "--store", "st", "{folder}"], 2),
    ("keys-import/no-store", ["keys", "import", "--store", "{missing}", "k/acme.pub.json"], 2),
    ("keys-import/bad-source", ["keys", "import", "--store", "st", "k/acme.pub.json", "--source", "x"], 2),
    # issue descriptor / ticket
    ("issue-descriptor/key-missing", ["issue", "descriptor", "--key", "{missing}", *KEY, "--out", "x.cap"], 2),
    ("issue-descriptor/key-unreadable", ["issue", "descriptor", "--key", "{locked}", *KEY, "--out", "x.cap"], 2),
    ("issue-descriptor/key-garbage", ["issue", "descriptor", "--key", "garbage.key", *KEY, "--out", "x.cap"], 1),
    ("issue-descriptor/key-folder", ["issue", "descriptor", "--key", "{folder}", *KEY, "--out", "x.cap"], 2),
    ("issue-descriptor/out-folder", ["issue", "descriptor", "--key", "k/acme.key", *KEY, "--out", "{folder}"], 2),
    ("issue-descriptor/unwritable", ["issue", "descriptor", "--key", "k/acme.key", *KEY, "--out", "{unwritable}"], 2),
    ("issue-descriptor/missing-folder", ["issue", "descriptor", "--key", "k/acme.key", *KEY, "--out", "{nofolder}"],
     2),
    ("issue-descriptor/bad-fay", ["issue", "descriptor", "--key", "k/acme.key", "--fay", "fay:alice", "--terminal",
                                  "{tid}", "--grant", "sim/camera=read", "--out", "x.cap"], 2),
    ("issue-descriptor/bad-terminal", ["issue", "descriptor", "--key", "k/acme.key", "--fay", "{fay}", "--terminal",
                                       "bob", "--grant", "sim/camera=read", "--out", "x.cap"], 2),
    ("issue-descriptor/bad-grant", ["issue", "descriptor", "--key", "k/acme.key", "--fay", "{fay}", "--terminal",
                                    "{tid}", "--grant", "sim/cam[era=read", "--out", "x.cap"], 2),
    ("issue-descriptor/bad-days", ["issue", "descriptor", "--key", "k/acme.key", *KEY, "--days", "-1",
                                   "--out", "x.cap"], 2),
    ("issue-ticket/key-garbage", ["issue", "ticket", "--key", "garbage.key", *KEY, "--out", "x.jws"], 1),
    ("issue-ticket/unwritable", ["issue", "ticket", "--key", "k/tix.key", *KEY, "--out", "{unwritable}"], 2),
    ("issue-ticket/bad-hours", ["issue", "ticket", "--key", "k/tix.key", *KEY, "--hours", "banana",
                                "--out", "x.jws"], 2),
    # revoke
    ("revoke/key-missing", ["revoke", "--key", "{missing}", "--descriptor-id", "{did}", "--out", "x.cbor"], 2),
    ("revoke/key-unreadable", ["revoke", "--key", "{locked}", "--descriptor-id", "{did}", "--out", "x.cbor"], 2),
    ("revoke/key-garbage", ["revoke", "--key", "garbage.key", "--descriptor-id", "{did}", "--out", "x.cbor"], 1),
    ("revoke/key-folder", ["revoke", "--key", "{folder}", "--descriptor-id", "{did}", "--out", "x.cbor"], 2),
    ("revoke/unwritable", ["revoke", "--key", "k/acme.key", "--descriptor-id", "{did}", "--out", "{unwritable}"], 2),
    ("revoke/out-folder", ["revoke", "--key", "k/acme.key", "--descriptor-id", "{did}", "--out", "{folder}"], 2),
    ("revoke/missing-folder", ["revoke", "--key", "k/acme.key", "--descriptor-id", "{did}", "--out", "{nofolder}"],
     2),
    ("revoke/bad-id", ["revoke", "--key", "k/acme.key", "--descriptor-id", "0192", "--out", "x.cbor"], 2),
    # descriptors
    ("descriptors-import/missing", ["descriptors", "import", "--store", "st", "{missing}"], 2),
    ("descriptors-import/unreadable", ["descriptors", "import", "--store", "st", "{locked}"], 2),
    ("descriptors-import/garbage", ["descriptors", "import", "--store", "st", "{garbage}"], 1),
    ("descriptors-import/folder", ["descriptors", "import", "--store", "st", "{folder}"], 2),
    ("descriptors-list/no-store", ["descriptors", "list", "--store", "{missing}"], 2),
    ("descriptors-list/folder-not-a-store", ["descriptors", "list", "--store", "{folder}"], 2),
    ("descriptors-list/bad-argument", ["descriptors", "list", "--store", "st", "--bogus"], 2),
    # revocations
    ("revocations-import/missing", ["revocations", "import", "--store", "st", "{missing}"], 2),
    ("revocations-import/unreadable", ["revocations", "import", "--store", "st", "{locked}"], 2),
    ("revocations-import/garbage", ["revocations", "import", "--store", "st", "{garbage}"], 1),
    ("revocations-import/folder", ["revocations", "import", "--store", "st", "{folder}"], 2),
    ("revocations-list/no-store", ["revocations", "list", "--store", "{missing}"], 2),
    # verify
    ("verify/descriptor-missing", [*VERIFY, "--descriptor", "{missing}"], 2),
    ("verify/descriptor-unreadable", [*VERIFY, "--descriptor", "{locked}"], 2),
    ("verify/descriptor-garbage", [*VERIFY, "--descriptor", "{garbage}"], 1),
    ("verify/descriptor-folder", [*VERIFY, "--descriptor", "{folder}"], 2),
    ("verify/ticket-missing", [*VERIFY, "--ticket", "{missing}"], 2),
    ("verify/ticket-garbage", [*VERIFY, "--ticket", "{garbage}"], 1),
    ("verify/ticket-folder", [*VERIFY, "--ticket", "{folder}"], 2),
    ("verify/bad-mode", ["verify", "--store", "st", "--fay", "{fay}", "--resource", "sim/camera", "--mode", "fly",
                         "--descriptor", "d.cap"], 2),
    ("verify/bad-at", [*VERIFY, "--descriptor", "d.cap", "--at", "-1"], 2),
    ("verify/bad-leeway", [*VERIFY, "--descriptor", "d.cap", "--leeway", "999"], 2),
    ("verify/no-store", ["verify", "--store", "{missing}", "--fay", "{fay}", "--resource", "sim/camera", "--mode",
                         "read", "--descriptor", "d.cap"], 2),
    # inspect
    ("inspect/missing", ["inspect", "{missing}"], 2),
    ("inspect/unreadable", ["inspect", "{locked}"], 2),
    ("inspect/garbage", ["inspect", "{garbage}"], 1),
    ("inspect/folder", ["inspect", "{folder}"], 2),
    ("inspect/bad-argument", ["inspect"], 2),
    # audit
    ("audit/missing", ["audit", "--file", "{missing}"], 2),
    ("audit/unreadable", ["audit", "--file", "{locked}"], 2),
    ("audit/garbage", ["audit", "--file", "{garbage}"], 1),
    ("audit/folder", ["audit", "--file", "{folder}"], 2),
    ("audit/bad-argument", ["audit", "--file", "a.log", "--bogus"], 2),
    # serve: every one refused before the board is started
    ("serve/config-missing", [*SERVE, "--config", "{missing}"], 2),
    ("serve/config-unreadable", [*SERVE, "--config", "{locked}"], 2),
    ("serve/config-garbage", [*SERVE, "--config", "engine-garbage.json"], 2),
    ("serve/config-folder", [*SERVE, "--config", "{folder}"], 2),
    ("serve/tls-missing", [*SERVE, "--tls-cert", "{missing}", "--tls-key", "{missing}"], 2),
    ("serve/tls-unreadable", [*SERVE, "--tls-cert", "{locked}", "--tls-key", "{locked}"], 2),
    ("serve/tls-garbage", [*SERVE, "--tls-cert", "{garbage}", "--tls-key", "{garbage}"], 1),
    ("serve/tls-folder", [*SERVE, "--tls-cert", "{folder}", "--tls-key", "{folder}"], 2),
    ("serve/audit-unwritable", [*SERVE, "--audit", "{unwritable}"], 2),
    ("serve/audit-missing-folder", [*SERVE, "--audit", "{nofolder}"], 2),
    ("serve/no-store", ["serve", "--store", "{missing}", "--listen", "127.0.0.1:0", "--board", "sim",
                        "--runtime-token", "rt1=token-123456"], 2),
    ("serve/listen-port-out-of-range", ["serve", "--store", "st", "--listen", "localhost:99999", "--board", "sim",
                                        "--runtime-token", "rt1=token-123456"], 2),
    ("serve/listen-no-port", ["serve", "--store", "st", "--listen", "localhost", "--board", "sim",
                              "--runtime-token", "rt1=token-123456"], 2),
    ("serve/duplicate-runtime-token", [*SERVE, "--runtime-token", "rt1=another-token-1"], 2),
    ("serve/shared-token", [*SERVE, "--runtime-token", "rt2=token-123456"], 2),
    ("serve/short-token", ["serve", "--store", "st", "--listen", "127.0.0.1:0", "--board", "sim",
                           "--runtime-token", "rt1=short"], 2),
    ("serve/bad-heapsize", [*SERVE, "--heapsize", "banana"], 2),
    ("serve/bad-leeway", [*SERVE, "--leeway", "-3"], 2),
    ("serve/no-token", ["serve", "--store", "st", "--listen", "127.0.0.1:0", "--board", "sim"], 2),
    # request: file arguments are refused before connecting (the URL has nothing behind it)
    ("request/ticket-missing", [*ACQUIRE, "--ticket", "{missing}"], 2),
    ("request/ticket-unreadable", [*ACQUIRE, "--ticket", "{locked}"], 2),
    ("request/ticket-folder", [*ACQUIRE, "--ticket", "{folder}"], 2),
    ("request/cafile-missing", ["request", "--url", "wss://127.0.0.1:9/cap/v1", "--runtime", "rt1", "--token",
                                "token-123456", "--cafile", "{missing}", "sessions"], 2),
    ("request/no-engine", [*REQUEST, "sessions"], 1),
    ("request/no-engine-unix", ["request", "--url", "unix:{missing}", "--runtime", "rt1", "--token", "token-123456",
                                "sessions"], 1),
    ("request/bad-hold", [*ACQUIRE, "--descriptor-id", "{did}", "--hold", "-1"], 2),
    ("request/bad-wait", [*ACQUIRE, "--descriptor-id", "{did}", "--wait-ms", "-5"], 2),
    ("request/bad-fay", [*REQUEST, "acquire", "--fay", "alice", "--resource", "sim/gps", "--mode", "read",
                         "--descriptor-id", "{did}"], 2),
    ("request/bad-url", ["request", "--url", "http://127.0.0.1:9/", "--runtime", "rt1", "--token", "token-123456",
                         "sessions"], 2),
    ("request/no-action", [*REQUEST], 2),
    # ping, ports, id
    ("ping/bad-count", ["ping", "--port", "/dev/null", "--count", "0"], 2),
    ("ping/bad-timeout", ["ping", "--port", "/dev/null", "--timeout", "-1"], 2),
    ("ping/missing-port", ["ping", "--port", "/dev/capwarden-no-such-port"], 1),
    ("ports/bad-argument", ["ports", "--bogus"], 2),
    ("trust/no-subcommand", ["trust"], 2),
    ("trust/unknown-subcommand", ["trust", "bogus"], 2),
    ("link/no-subcommand", ["link"], 2),
    ("link/missing-port", ["link", "rekey", "--port", "/dev/capwarden-no-such-port"], 1),
    ("link/sim", ["link", "rekey", "--port", "sim"], 2),
    ("operator/no-subcommand", ["operator"], 2),
    ("operator/no-store", ["operator", "list", "--store", "{missing}"], 2),
    ("operator/bad-name", ["operator", "add", "--store", "st", "Alice!"], 2),
    ("operator/no-terminal-for-the-password", ["operator", "add", "--store", "st", "alice"], 2),
    ("operator/no-password-on-stdin", ["operator", "add", "--store", "st", "alice", "--password-stdin"], 1),
    ("operator/remove-unknown", ["operator", "remove", "--store", "st", "nobody"], 1),
    ("id/bad-kind", ["id", "new", "robot"], 2),
    ("id/no-action", ["id"], 2),
    # the top level
    ("capwarden/unknown-command", ["frobnicate"], 2),
    ("capwarden/nothing", [], 2),
]

# Commands whose failures also go through --json (every one that reports something).
NO_JSON = {"capwarden"}


def check(r, code):
    assert "Traceback" not in r.err, r
    assert r.code == code, r
    if code:
        assert (r.err + r.out).strip(), "a failure says what was wrong: %r" % (r,)


@pytest.mark.parametrize("case,argv,code", CASES, ids=[c[0] for c in CASES])
def test_matrix(here, case, argv, code):
    check(cli(*here.fill(argv)), code)


@pytest.mark.parametrize("case,argv,code", [c for c in CASES if c[0].split("/")[0] not in NO_JSON],
                         ids=[c[0] for c in CASES if c[0].split("/")[0] not in NO_JSON])
def test_matrix_json(here, case, argv, code):
    r = cli(*here.fill(argv), "--json")
    check(r, code)
    obj = r.json()
    if "ok" in obj:                                     # the failure object
        assert obj["ok"] is False and obj["exit_code"] == code and obj["error"]
    elif "intact" in obj:                               # audit's summary of a chain that does not verify
        assert obj["intact"] is False and obj["problem"], obj
    else:                                               # a decision: said as a decision
        assert obj.get("granted") is False or obj.get("imported") is False, obj
        assert obj["error_code"], obj


def test_every_command_is_in_the_matrix():
    from capwarden.cli import COMMANDS

    covered = {c[0].split("/")[0].split("-")[0] for c in CASES}
    owned_elsewhere = {"demo", "sim", "flash"}           # test_matrix_subprocess.py: argument errors
    assert set(COMMANDS) - owned_elsewhere <= covered


def test_nothing_was_written_by_refused_commands(here):
    import os

    for name in ("x.cap", "x.jws", "x.cbor", "new-st", "k/new.key", "no"):
        assert not os.path.exists(name), name
