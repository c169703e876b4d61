"""The audit log's tamper evidence, TLS and Unix sockets, and the engine's command line."""

import asyncio
import datetime
import json
import os
import ssl
import subprocess

import pytest

from capwarden.engine.audit import AuditLog, read
from capwarden.errors import StoreError
from enginerig import EXE, TOKENS


def test_audit_chain_detects_edit_removal_reorder_and_torn_line(tmp_path):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    for i in range(5):
        log.record("acquire", "granted", "", runtime="rtA", session="s%d" % i)
    entries, problem = read(path)
    assert len(entries) == 5 and problem is None
    lines = open(path).read().splitlines(True)
    cases = {
        "edited": lines[:2] + [lines[2].replace("granted", "denied")] + lines[3:],
        "removed": lines[:2] + lines[3:],
        "reordered": [lines[1], lines[0]] + lines[2:],
        "torn": lines[:4] + [lines[4].rstrip("\n")[:20]],
    }
    for name, content in cases.items():
        bad = str(tmp_path / (name + ".log"))
        open(bad, "w").write("".join(content))
        entries, problem = read(bad)
        assert problem is not None, name
        assert len(entries) < 5, name


def test_audit_log_refuses_to_extend_a_broken_chain(tmp_path):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.record("acquire", "granted")
    with open(path, "a") as f:
        f.write('{"half": ')
    with pytest.raises(StoreError, match="torn"):
        AuditLog(path)


def test_audit_command(tmp_path):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.record("acquire", "granted", "", runtime="rtA", resource="r", session="s1")
    log.record("terminate", "done", "released", runtime="rtA", session="s1")
    out = subprocess.run([EXE, "audit", "--file", path, "--json"], capture_output=True, text=True, timeout=30)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert out.returncode == 0 and lines[-1] == {"entries": 2, "intact": True, "problem": None}
    text = open(path).read().replace("released", "revoked")
    open(path, "w").write(text)
    out = subprocess.run([EXE, "audit", "--file", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "BROKEN" in out.stdout and "line 2" in out.stdout


def test_engine_decisions_are_audited(world, client, run):
    a = client()
    s = run(a.acquire(world.A, world.res("gps"), "read", world.cred(world.dA)))
    run(s.release())
    run(a.request("AuthRequest", {"fay_id": world.B, "resource_id": world.res("camera"), "access_mode": "read",
                                  "credential": world.cred(world.dB)}))
    entries, problem = read(os.path.join(world.store, "audit.log"))
    assert problem is None
    kinds = [(e["action"], e["outcome"], e.get("reason")) for e in entries]
    assert ("acquire", "authorized", "") in kinds and ("lock", "granted", "") in kinds
    assert ("terminate", "done", "released") in kinds
    assert ("acquire", "denied", "E_DESCRIPTOR_MODE_NOT_GRANTED") in kinds
    granted = [e for e in entries if e["action"] == "acquire" and e["outcome"] == "authorized"][0]
    # The board's epoch is in the session's lock entry, recorded when the board granted (the
    # authorized entry is written before the ACQUIRE goes out: docs/DECISIONS.md).
    lock = [e for e in entries if e["action"] == "lock" and e.get("session") == granted["session"]]
    assert granted["credential"] == world.dA and granted["fay"] == world.A and lock and "epoch" in lock[0]
    assert granted["key_id"] == "acme-1" and granted["issuer"] == "issuer:acme"   # attacks.md J77
    text = open(os.path.join(world.store, "audit.log")).read()
    assert not any(tok in text for tok in TOKENS.values())                     # no bearer token, ever


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    open(cert_path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(key_path, "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    return cert_path, key_path


def test_plain_ws_refused_off_loopback(world):
    out = subprocess.run([EXE, "serve", "--store", world.store, "--listen", "0.0.0.0:0", "--board", "sim",
                          "--runtime-token", "rtA=" + TOKENS["rtA"]], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--tls-cert" in out.stderr and "Traceback" not in out.stderr


def test_tls_and_unix_socket(world, tmp_path, run):
    from capwarden.engine.app import EngineApp
    from capwarden.sdk import connect

    cert, key = _self_signed(tmp_path)

    async def scenario():
        app = EngineApp(world.store, "localhost:0", TOKENS, sim=True, tls_cert=cert, tls_key=key)
        await app.start()
        try:
            assert app.server.url.startswith("wss://")
            ctx = ssl.create_default_context(cafile=cert)
            c = await connect(app.server.url, "rtA", TOKENS["rtA"], ssl=ctx)
            s = await c.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
            assert s.state == "active"
            await c.close()
            with pytest.raises(Exception):   # a client that does not trust the certificate
                await connect(app.server.url, "rtA", TOKENS["rtA"], ssl=ssl.create_default_context())
        finally:
            await app.stop()
        sock = str(tmp_path / "cap.sock")
        app = EngineApp(world.store, "unix:" + sock, TOKENS, sim=True)
        await app.start()
        try:
            c = await connect(None, "rtA", TOKENS["rtA"], unix_path=sock)
            assert (await c.request("SessionQuery", {}))["sessions"] == []
            await c.close()
        finally:
            await app.stop()

    run(scenario())


def test_request_command(world, served):
    env = dict(os.environ, CAPWARDEN_TOKEN=TOKENS["rtA"])
    base = [EXE, "request", "--url", served.url, "--runtime", "rtA"]
    out = subprocess.run(base + ["acquire", "--fay", world.A, "--resource", world.res("gps"), "--mode", "read",
                                 "--descriptor-id", world.dA, "--hold", "0.5"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0 and "granted: session" in out.stdout and "released" in out.stdout
    out = subprocess.run(base + ["acquire", "--fay", world.B, "--resource", world.res("camera"), "--mode", "read",
                                 "--descriptor-id", world.dB], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "E_DESCRIPTOR_MODE_NOT_GRANTED" in out.stdout
    out = subprocess.run(base + ["sessions"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("0 session(s)")      # human unless --json (issue 11.8)
    out = subprocess.run(base + ["sessions", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout) == {"sessions": [], "error_code": None}
    out = subprocess.run(base + ["--json", "acquire", "--fay", world.A, "--resource", world.res("gps"), "--mode",
                                 "read", "--descriptor-id", world.dA, "--hold", "0"], capture_output=True, text=True,
                         env=env, timeout=60)
    answer = json.loads(out.stdout)
    assert out.returncode == 0 and answer["granted"] is True and answer["error_code"] is None
    out = subprocess.run(base + ["--json", "release", answer["session_id"]], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 1 and json.loads(out.stdout)["error_code"] == "E_SESSION_NOT_FOUND"   # already released
    assert TOKENS["rtA"] not in out.stdout + out.stderr
    out = subprocess.run(base + ["sessions"], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "CAPWARDEN_TOKEN"})
    assert out.returncode == 2 and "CAPWARDEN_TOKEN" in out.stderr


@pytest.mark.parametrize("cmd", ["serve", "request", "audit", "demo"])
def test_engine_commands_help(cmd):
    out = subprocess.run([EXE, cmd, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "usage: capwarden " + cmd in out.stdout


def test_runtime_fays_option_is_checked(world):
    out = subprocess.run([EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:0", "--board", "sim",
                          "--runtime-token", "rtA=" + TOKENS["rtA"], "--runtime-fays", "rtZ=" + world.A],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--runtime-fays" in out.stderr and "Traceback" not in out.stderr


def test_config_file_keeps_tokens_off_the_command_line(world, tmp_path, run):
    from capwarden.sdk import connect

    conf = tmp_path / "engine.json"
    conf.write_text(json.dumps({"runtimes": {"rtA": {"token": TOKENS["rtA"], "fays": [world.A]}},
                                "liveness": {"default": "200/1000"}, "leeway": 0}))
    os.chmod(conf, 0o644)
    out = subprocess.run([EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:0", "--board", "sim",
                          "--config", str(conf)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "chmod 600" in out.stderr and TOKENS["rtA"] not in out.stderr
    os.chmod(conf, 0o600)
    os.rename(conf, os.path.join(world.store, "engine.json"))     # found in the store by default
    proc = subprocess.Popen([EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:0", "--board", "sim"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), proc.stderr.read() if proc.poll() is not None else line
        url = line.split()[1]

        async def scenario():
            c = await connect(url, "rtA", TOKENS["rtA"])
            s = await c.acquire(world.A, world.res("gps"), "read", world.cred(world.dA))
            assert s.timeout_ms == 1000                           # liveness from the file
            r = await c.request("AuthRequest", {"fay_id": world.B, "resource_id": world.res("gps"),
                                                "access_mode": "read", "credential": world.cred(world.dB)},
                                raw=True)
            assert r["body"]["error_code"] == "E_PERMISSION_DENIED"   # bound to its Fays by the file
            await c.close()

        run(scenario())
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_on_an_address_in_use_says_so_without_a_traceback(world):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run([EXE, "serve", "--store", world.store, "--listen", "127.0.0.1:%d" % port, "--board", "sim",
                            "--runtime-token", "rtA=%s" % TOKENS["rtA"]], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "the address is in use" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "deploying" not in p.stderr        # said before the slow work (issue 11.2)
