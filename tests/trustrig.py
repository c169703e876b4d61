"""A trust deployment for tests (issue 13): `capwarden trust init` on a folder and a database,
`capwarden trust serve` as a real process (killed or stopped by the test), a self-signed TLS
certificate, and request bodies the first authorizer may send. Shared by tests/trust,
tests/cli/test_trust_cli.py and bench/trust_issuance.py."""

import contextlib
import datetime
import io
import json
import os
import signal
import subprocess
import sys
import time

import procs

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")
START_TIMEOUT = 60


def run_cli(*argv):
    """`capwarden ARGV` in this process: (exit code, stdout, stderr)."""
    from capwarden.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def init(data, db=None, issuer="issuer:test", *extra):
    """`capwarden trust init --json` on DATA (and --db URL): its JSON object."""
    code, out, err = run_cli("trust", "init", "--data", data, "--issuer", issuer, "--json",
                             *(["--db", db] if db else []), *extra)
    assert code == 0, (code, out, err)
    return json.loads(out)


def self_signed(folder, name="localhost"):
    """(cert.pem, key.pem) in FOLDER: a self-signed certificate for `name` and 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class Serve:
    """`capwarden trust serve --json` as a process; .url once it said it is serving."""

    def __init__(self, data, db=None, listen="127.0.0.1:0", tls=None, extra=(), env=None):
        argv = [EXE, "trust", "serve", "--data", data, "--listen", listen, "--json", "-q"]
        if db:
            argv += ["--db", db]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.proc = subprocess.Popen(argv + list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        line = _readline(self.proc, START_TIMEOUT)
        try:
            self.info = json.loads(line)
            self.url = self.info["url"]
        except (ValueError, KeyError):
            self.stop()
            raise AssertionError("trust serve did not start: %r %s" % (line, self.proc.stderr.read()[-3000:]))

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def send(self, sig):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stop(self):
        procs.stop(self.proc)


def _readline(proc, timeout):
    """The first line of proc's stdout, or '' if it exits or says nothing within `timeout`."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                return proc.stdout.readline()
            if proc.poll() is not None:
                return ""
        return ""
    finally:
        sel.close()


# ---- temporary folders ---------------------------------------------------------------------

SHM = "/dev/shm"


def shm_tmp_path(request, tmp_path_factory):
    """The body of a `tmp_path` fixture for the trust tests: a fresh folder on tmpfs when the
    machine has one (SQLite with synchronous=FULL, the key ring's atomic writes and the state
    files fsync on every commit: about half of these tests' time on a disk, none on tmpfs;
    durability against a killed process, which the crash tests check, does not need the disk),
    else pytest's own. Removed after the test."""
    import pathlib
    import shutil
    import tempfile

    if not (os.path.isdir(SHM) and os.access(SHM, os.W_OK | os.X_OK)):
        yield tmp_path_factory.mktemp("t")
        return
    folder = tempfile.mkdtemp(prefix="cwtrust-", dir=SHM)
    try:
        yield pathlib.Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- requests ------------------------------------------------------------------------------

FAY = "fay:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
TERMINAL = "terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"


def ticket_body(terminal=TERMINAL, fay=FAY, valid_for_s=3600):
    return {"fay_id": fay, "terminal_id": terminal, "valid_for_s": valid_for_s,
            "grants": [{"resource_pattern": terminal + "/sim/camera", "modes": ["read"]}]}


def auth(token):
    return {"Authorization": "Bearer " + token}
