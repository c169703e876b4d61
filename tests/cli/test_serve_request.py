"""`serve` and `request` as processes against the virtual board (issue 11, items 2, 3, 5, 7, 8,
10): the resources listed at start, one log line per event and never a token, Ctrl-C 130 and
SIGTERM 0, and `request acquire --hold` interrupted releases its session."""

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from clihelp import EXE, Inputs, cap, cli

TOKEN = "token-cli-123456"


class Serve:
    def __init__(self, inputs, *extra):
        self.inputs = inputs
        self.errlog = open(os.path.join(inputs.folder, "serve-%d.err" % time.monotonic_ns()), "w+")
        self.proc = subprocess.Popen([EXE, "serve", "--store", os.path.join(inputs.folder, "st"), "--listen",
                                      "127.0.0.1:0", "--board", "sim", "--runtime-token", "rt1=" + TOKEN, "--json",
                                      *extra], stdout=subprocess.PIPE, stderr=self.errlog, text=True)
        line = self.proc.stdout.readline()
        if not line.strip():
            self.proc.kill()
            raise RuntimeError("serve did not start: %s" % self.stderr())
        self.started = json.loads(line)
        if not self.started.get("serving"):
            self.proc.kill()
            raise RuntimeError("serve did not start: %s %s" % (line, self.stderr()))
        self.url = self.started["url"]

    def stderr(self):
        self.errlog.flush()
        self.errlog.seek(0)
        return self.errlog.read()

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def served(inputs):
    s = Serve(inputs)
    yield s
    s.stop()


def request(served, *argv, token=TOKEN, timeout=60):
    return cap("request", "--url", served.url, "--runtime", "rt1", "--token", token, *argv, timeout=timeout)


def test_serve_lists_its_resources_at_start(served, inputs):
    ids = [r["resource_id"] for r in served.started["resources"]]
    assert inputs.tid + "/sim/camera" in ids and inputs.tid + "/sim/gps" in ids
    assert served.started["terminal_id"] == inputs.tid and served.started["serving"] is True


def test_request_takes_the_board_shorthand_and_sessions_read_as_text(served, inputs, here):
    r = request(served, "acquire", "--fay", inputs.fay, "--resource", "sim/gps", "--mode", "read",
                "--descriptor-id", inputs.did, "--json")
    answer = r.json()
    assert r.code == 0 and answer["granted"] is True and answer["resource_id"] == inputs.tid + "/sim/gps", r
    r = request(served, "sessions")
    assert r.code == 0 and r.out.startswith("0 session(s)") and "{" not in r.out, r   # human unless --json
    # verify takes the same shorthand, under the store's terminal
    r = cli("verify", "--store", "st", "--fay", inputs.fay, "--resource", "sim/gps", "--mode", "read",
            "--descriptor", "d.cap", "--json")
    assert r.code == 0 and r.json()["granted"] is True


def test_a_refused_token_is_exit_1_and_never_echoed(served):
    bad = "wrong-token-" + "x" * 12
    r = request(served, "sessions", "--json", token=bad)
    assert r.code == 1 and "refused the token" in r.err and r.json()["ok"] is False, r
    assert bad not in r.out + r.err
    newline = "evil\ntoken-with-a-line-break"
    r = request(served, "sessions", token=newline)
    assert r.code == 2 and "evil" not in r.out + r.err and "token-with" not in r.out + r.err, r
    time.sleep(0.3)
    log = served.stderr()
    assert "event=refused" in log and "reason=unknown_token" in log and bad not in log


def test_serve_logs_one_line_per_connection(served):
    request(served, "sessions")
    time.sleep(0.3)
    lines = served.stderr().splitlines()
    connected = [x for x in lines if "event=connected" in x and "runtime=rt1" in x]
    disconnected = [x for x in lines if "event=disconnected" in x and "runtime=rt1" in x]
    assert connected and disconnected
    assert all(x[:4].isdigit() and x[19:24].startswith(".") and " INFO capwarden.engine " in x for x in connected)
    assert TOKEN not in served.stderr()


def test_request_hold_interrupted_releases_its_session(served, inputs, here):
    proc = subprocess.Popen([EXE, "request", "--url", served.url, "--runtime", "rt1", "--token", TOKEN, "acquire",
                             "--fay", inputs.fay, "--resource", "sim/camera", "--mode", "read", "--descriptor-id",
                             inputs.did, "--hold", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("granted: session"), line + proc.stderr.read()
        sid = line.split()[2]
        held = request(served, "sessions", "--json").json()["sessions"]
        assert [s["session_id"] for s in held] == [sid]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err and "released session " + sid in err, err
    # released by the command, not left to time out: gone at once
    assert request(served, "sessions", "--json").json()["sessions"] == []
    entries = [json.loads(x) for x in cli("audit", "--file", "st/audit.log", "--json").out.splitlines()]
    assert any(e.get("session") == sid and e["action"] == "terminate" and e.get("reason") == "released"
               for e in entries), entries[-5:]


@pytest.fixture
def own(tmp_path):
    """Inputs with a store of their own (the module's engine holds the shared store's lock)."""
    cwd = os.getcwd()
    made = Inputs(str(tmp_path))
    yield made
    os.chdir(cwd)


def test_request_hold_ended_by_the_engine_is_exit_1(own):
    inputs = own
    s = Serve(inputs)
    try:
        proc = subprocess.Popen([EXE, "request", "--url", s.url, "--runtime", "rt1", "--token", TOKEN, "acquire",
                                 "--fay", inputs.fay, "--resource", "sim/led", "--mode", "write", "--descriptor-id",
                                 inputs.did, "--hold", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line.startswith("granted: session"), line + proc.stderr.read()
        assert s.stop(signal.SIGTERM) == 0            # SIGTERM: a normal stop (issue 11.3)
        out, err = proc.communicate(timeout=60)
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err, (proc.returncode, err)


def test_serve_ctrl_c_is_130(own):
    s = Serve(own)
    assert s.stop(signal.SIGINT) == 130
    assert "Traceback" not in s.stderr()


def test_serve_refuses_an_address_in_use_before_the_board(own):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = cap("serve", "--store", "st", "--listen", "127.0.0.1:%d" % busy.getsockname()[1], "--board", "sim",
                "--runtime-token", "rt1=" + TOKEN, "--json", timeout=60)
    assert r.code == 2 and "in use" in r.err and "deploying" not in r.err and "Traceback" not in r.err, r
    assert r.json()["exit_code"] == 2


def test_serve_refuses_a_missing_tls_certificate_before_the_board(own):
    r = cap("serve", "--store", "st", "--listen", "0.0.0.0:0", "--board", "sim", "--runtime-token", "rt1=" + TOKEN,
            "--tls-cert", "nope.pem", "--tls-key", "nope.pem", timeout=60)
    assert r.code == 2 and "--tls-cert nope.pem" in r.err and "deploying" not in r.err and "Traceback" not in r.err, r


def test_request_hold_revoked_partway_is_exit_1(own):
    inputs = own
    s = Serve(inputs)
    try:
        proc = subprocess.Popen([EXE, "request", "--url", s.url, "--runtime", "rt1", "--token", TOKEN, "--json",
                                 "acquire", "--fay", inputs.fay, "--resource", "sim/gps", "--mode", "read",
                                 "--descriptor-id", inputs.did, "--hold", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        granted = json.loads(proc.stdout.readline())
        assert granted["granted"] is True
        assert cli("revoke", "--key", "k/acme.key", "--descriptor-id", inputs.did, "--reason", "compromised",
                   "--out", "rev.cbor").code == 0
        assert cli("revocations", "import", "--store", "st", "rev.cbor").code == 0
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        s.stop()
    assert proc.returncode == 1 and "ended while held" in err and "Traceback" not in err, (proc.returncode, err)
    assert out == ""            # --json: the one object was the grant


@pytest.mark.parametrize("delay", [0.3, 1.2])
def test_serve_ctrl_c_while_the_board_is_deployed_is_130_without_a_traceback(own, delay):
    # A terminal's Ctrl-C reaches the whole process group: mpy-cross and mpremote die of it too.
    proc = subprocess.Popen([EXE, "serve", "--store", "st", "--listen", "127.0.0.1:0", "--board", "sim",
                             "--runtime-token", "rt1=" + TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, (proc.returncode, err)
    assert "failed" not in err, err


def test_serve_logs_the_loss_of_its_board(own):
    s = Serve(own)
    try:
        kids = subprocess.run(["pgrep", "-P", str(s.proc.pid)], capture_output=True, text=True).stdout.split()
        board = [k for k in kids if open("/proc/%s/comm" % k).read().startswith("micropython")]
        assert board, kids
        os.kill(int(board[0]), signal.SIGKILL)          # the board's process dies: the link goes silent
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "unreachable" not in s.stderr():
            time.sleep(0.2)
    finally:
        s.stop()
    lines = [x for x in s.stderr().splitlines() if "board sim unreachable" in x]
    assert len(lines) == 1 and " WARNING capwarden.engine " in lines[0], s.stderr()
