"""Helpers of the CLI tests: run `capwarden` in-process or as a process, and a folder of inputs
(good, garbage, missing, unreadable, folders) to feed every command."""

import builtins
import contextlib
import io
import json
import os
import subprocess
import sys

from capwarden.cli import main

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")
LOCKED = "locked"      # files whose name starts with this cannot be read (see unreadable())


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def json(self):
        """The one JSON object on stdout (asserts there is exactly one line, and it is an object)."""
        lines = [x for x in self.out.splitlines() if x.strip()]
        assert len(lines) == 1, "expected one JSON line on stdout, got %r" % self.out
        obj = json.loads(lines[0])
        assert isinstance(obj, dict), obj
        return obj

    def __repr__(self):
        return "Result(code=%r, out=%r, err=%r)" % (self.code, self.out[-400:], self.err[-400:])


@contextlib.contextmanager
def unreadable():
    """Files named locked* raise PermissionError when opened, as for a user without the right
    (the tests may run as root, which chmod 000 does not stop)."""
    real_open, real_os_open = builtins.open, os.open

    def is_locked(path):
        try:
            return os.path.basename(os.fspath(path)).startswith(LOCKED)
        except TypeError:
            return False

    def fake_open(file, *a, **kw):
        if is_locked(file):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *a, **kw)

    def fake_os_open(path, *a, **kw):
        if is_locked(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_os_open(path, *a, **kw)

    builtins.open, os.open = fake_open, fake_os_open
    try:
        yield
    finally:
        builtins.open, os.open = real_open, real_os_open


def cli(*argv):
    """Run `capwarden ARGV` in this process: Result(code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), unreadable():
        code = main([str(a) for a in argv])
    return Result(code, out.getvalue(), err.getvalue())


def cap(*argv, timeout=60, env=None, input=None):
    """Run the installed `capwarden` as a process."""
    p = subprocess.run([EXE, *map(str, argv)], capture_output=True, text=True, timeout=timeout, env=env, input=input)
    return Result(p.returncode, p.stdout, p.stderr)


def ok(r):
    assert r.code == 0, r
    return r


class Inputs:
    """A folder with a store, issuer keys, a descriptor, a ticket, a revocation statement and an
    audit log, plus the bad inputs of the matrix. Paths are relative to the folder (the cwd)."""

    def __init__(self, folder):
        os.chdir(folder)
        self.folder = folder
        self.tid = ok(cli("init", "--store", "st", "--json")).json()["terminal_id"]
        os.mkdir("k")
        ok(cli("keys", "generate", "--algorithm", "ed25519", "--key-id", "acme-1", "--issuer", "issuer:acme",
               "--valid-from", "0", "--out", "k/acme"))
        ok(cli("keys", "generate", "--algorithm", "ecdsa-p256-sha256", "--key-id", "tix-1", "--issuer",
               "tickets:acme", "--valid-from", "0", "--out", "k/tix"))
        for f in ("k/acme.pub.json", "k/tix.pub.json"):
            ok(cli("keys", "import", "--store", "st", f))
        self.fay = ok(cli("id", "new", "fay")).out.strip()
        ok(cli("issue", "descriptor", "--key", "k/acme.key", "--fay", self.fay, "--terminal", self.tid,
               "--grant", "sim/*=read,write,execute", "--out", "d.cap"))
        self.did = ok(cli("descriptors", "import", "--store", "st", "d.cap", "--json")).json()["descriptor_id"]
        ok(cli("issue", "ticket", "--key", "k/tix.key", "--fay", self.fay, "--terminal", self.tid,
               "--grant", "sim/gps=read", "--out", "t.jws"))
        ok(cli("issue", "descriptor", "--key", "k/acme.key", "--fay", self.fay, "--terminal", self.tid,
               "--grant", "sim/led=write", "--out", "other.cap"))
        other = ok(cli("inspect", "other.cap", "--json")).json()["id"]
        ok(cli("revoke", "--key", "k/acme.key", "--descriptor-id", other, "--out", "r.cbor"))
        from capwarden.engine.audit import AuditLog

        log = AuditLog("a.log")
        log.record("acquire", "authorized", "", runtime="rt1", resource=self.tid + "/sim/gps", session="s1")
        log.close()
        with open("garbage.bin", "wb") as f:
            f.write(b"\x9f\xff not a credential \x00" * 8)
        with open("garbage.key", "wb") as f:
            f.write(b"{not json")
        os.chmod("garbage.key", 0o600)
        with open(LOCKED + ".file", "wb") as f:
            f.write(b"whatever")
        os.chmod(LOCKED + ".file", 0o600)
        os.mkdir("adir")
        os.mkdir("adir.key")          # keys generate --out adir: its PREFIX.key is a folder
        with open("plainfile", "w") as f:
            f.write("x")
        with open("engine-garbage.json", "w") as f:
            f.write("{not json")
        os.chmod("engine-garbage.json", 0o600)

    def fill(self, argv):
        """The argv with {name} placeholders filled in."""
        names = {"tid": self.tid, "fay": self.fay, "did": self.did, "missing": "missing.file",
                 "locked": LOCKED + ".file", "garbage": "garbage.bin", "folder": "adir",
                 "unwritable": "/proc/capwarden-test-out", "nofolder": "no/such/folder/out"}
        return [a.format(**names) for a in argv]
