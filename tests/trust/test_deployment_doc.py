"""docs/deployment.md runs as written (issue 13, docs): its `run` blocks in bash, in order, in a
fresh folder, with the venv's bin first on PATH. What the test changes, and only that: each
`settings` block is replaced by the test's values (free ports, the test's PostgreSQL socket, a
temporary folder for mosquitto's configuration, no lead time), and `systemctl restart|reload
mosquitto` is done by the test on a broker of its own (started from the page's configuration,
stopped afterwards). Beyond the script's exit status: the terminal's state, and the broker's
ACL letting a terminal read its own topic only.
"""

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time

import pytest

import services

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
BLOCK = re.compile(r"<!-- (run|settings): ([^>]*?) -->\n```sh\n(.*?)```", re.S)


def blocks():
    with open(os.path.join(ROOT, "docs", "deployment.md")) as f:
        return [(kind, names.split(), body) for kind, names, body in BLOCK.findall(f.read())]


def script(scenario, settings, hook, skip=()):
    parts = ["set -euo pipefail"]
    for kind, names, body in blocks():
        if kind == "settings" and scenario in names:
            parts.append(settings)
        elif kind == "run" and (scenario in names or scenario + "-root" in names) and not set(names) & set(skip):
            parts.append(re.sub(r"^systemctl (restart|reload) mosquitto$", hook + r" \1", body, flags=re.M))
    return "\n".join(parts) + "\n"


def run_script(tmp_path, text, timeout=240):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPWARDEN_", "VIRTUAL_ENV"))}
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), VIRTUAL_ENV=os.path.dirname(BIN))
    path = tmp_path / "deployment.sh"
    path.write_text(text)
    proc = subprocess.Popen(["bash", str(path)], cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)          # serve processes left by a script that died midway
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.communicate()
    assert proc.returncode == 0, "docs/deployment.md failed (exit %d)\n%s\n%s" % (proc.returncode, out[-4000:],
                                                                                    err[-4000:])
    assert "Traceback" not in out + err, err[-4000:]
    return out


def test_the_page_has_both_deployments_and_the_rotation():
    text = "\n".join(body for _k, _n, body in blocks())
    for command in ("trust init", "trust serve", "trust authorizer add", "trust terminal enroll", "trust revoke",
                    "trust status", "trust keys rotate", "trust keys retire", "--db", "--mqtt", "--tls-cert",
                    "mosquitto_passwd", "pattern read capwarden/v1/terminals/terminal:%u"):
        assert command in text, command
    assert {n for k, names, _b in blocks() if k == "settings" for n in names} == {"single", "fleet"}


def test_single_operator_and_key_rotation_as_written(tmp_path):
    # LEAD_TIME 1 s: the retire after `sleep LEAD_TIME` needs the new key in force. Should the
    # terminal's fetch come after that second, the list signed by the new key makes it fetch
    # the key sets first (TrustClient: an unknown signer syncs the key sets and tries again).
    settings = "TRUST_LISTEN=127.0.0.1:%d\nLEAD_TIME=1\n" % services.free_port()
    run_script(tmp_path, script("single", settings, "false"))
    state = json.load(open(tmp_path / "terminal-state" / "state.json"))
    assert state["revocations_version"] == 1 and state["keyset_version"] == 4


def _broker_hook(folder):
    """The test's stand-in for `systemctl restart|reload mosquitto`: a broker from the page's
    configuration (Debian's mosquitto.conf includes conf.d the same way), its pid in a file."""
    pidfile = os.path.join(folder, "broker.pid")
    top = os.path.join(folder, "mosquitto.conf")
    with open(top, "w") as f:
        f.write("pid_file %s\ninclude_dir %s\n" % (pidfile, os.path.join(folder, "etc", "conf.d"))
                + ("user root\n" if os.geteuid() == 0 else ""))
    hook = os.path.join(folder, "systemctl-mosquitto")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\nset -e\ncase \"$1\" in\n"
                "restart) %s -c %s -d; for i in $(seq 100); do [ -s %s ] && exit 0; sleep 0.1; done; exit 1;;\n"
                "reload) kill -HUP \"$(cat %s)\";;\nesac\n" % (services.MOSQUITTO, top, pidfile, pidfile))
    os.chmod(hook, 0o755)
    return hook, pidfile


def _stop_broker(pidfile):
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reads(port, ca, user, password, topic, marker):
    """Whether `user` receives a message the service publishes on `topic` (`marker`, a topic
    the user may read, is published last: once it arrived, `topic`'s message would have)."""
    import paho.mqtt.client as mqtt

    got = []

    def client(u, p):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.tls_set_context(ssl.create_default_context(cafile=ca))
        c.username_pw_set(u, p)
        return c

    sub = client(user, password)
    sub.on_message = lambda c, u, m: got.append(m.topic)
    subscribed = []
    sub.on_subscribe = lambda *a: subscribed.append(1)
    sub.connect("localhost", port)
    sub.loop_start()
    pub = client("trust-service", open("mqtt-service.pw").read().strip())
    pub.connect("localhost", port)
    pub.loop_start()
    try:
        sub.subscribe([(topic, 1), (marker, 1)])
        deadline = time.monotonic() + 20
        while not subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        for t in (topic, marker):
            pub.publish(t, b'{"kind":"revocations","version":9}', qos=1).wait_for_publish(20)
        deadline = time.monotonic() + 20
        while marker not in got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker in got, "the user's own topic never arrived"
        return topic in got
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def test_fleet_as_written(tmp_path, pg_server, monkeypatch):
    services.require_mosquitto(passwords=True)
    for tool in ("openssl", "jq", "curl"):
        services.require("/usr/bin/" + tool, tool, tool)
    if os.geteuid() != 0:
        pytest.skip("the fleet's set-up runs as root (su postgres, install -o mosquitto)")
    monkeypatch.chdir(tmp_path)
    hook, pidfile = _broker_hook(str(tmp_path))
    mqtt_port = services.free_port()
    settings = ("export PGHOST=%s\nDB='postgresql+psycopg://capwarden@/capwarden?host=%s'\nTRUST_HOST=localhost\n"
                "TRUST_PORT_A=%d\nTRUST_PORT_B=%d\nMQTT_DIR=%s\nMQTT_PORT=%d\n"
                % (pg_server.socket_dir, pg_server.socket_dir, services.free_port(), services.free_port(),
                   tmp_path / "etc", mqtt_port))
    try:
        run_script(tmp_path, script("fleet", settings, hook))
        state = json.load(open(tmp_path / "terminal-state" / "state.json"))
        assert state["revocations_version"] == 1 and state["keyset_version"] == 1
        tid = state["terminal_id"]
        user, password = tid[len("terminal:"):], open("terminal-mqtt.pw").read().strip()
        own = "capwarden/v1/terminals/" + tid
        other = "capwarden/v1/terminals/terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
        assert _reads(mqtt_port, "pki/ca.crt", user, password, own, "capwarden/v1/keysets")
        assert not _reads(mqtt_port, "pki/ca.crt", user, password, other, own)
    finally:
        _stop_broker(pidfile)
        for line in (open("serve.pids").read().split() if os.path.exists("serve.pids") else []):
            try:
                os.kill(int(line), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
