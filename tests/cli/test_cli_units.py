"""The CLI's small parts (issue 11): the exit-code table and its docs, ids, human times, the
one-line log format, ports and --port auto, help that teaches with examples that work, and a
command module missing from the install."""

import json
import logging
import os
import re
import shlex
import time

import pytest

from capwarden.cli import COMMANDS, _common, build_parser, main
from capwarden.credentials.ids import FAY_RE, TERMINAL_RE
from capwarden.errors import LinkError
from clihelp import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_exit_code_table_in_the_docs_is_the_code():
    text = open(os.path.join(ROOT, "docs", "cli.md")).read()
    rows = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", text, re.M))
    assert set(map(int, rows)) == {_common.EXIT_OK, _common.EXIT_DENIED, _common.EXIT_USAGE,
                                   _common.EXIT_INTERRUPTED} == {0, 1, 2, 130}
    assert rows["0"].startswith("done, or granted") and rows["1"].startswith("denied, or invalid input")
    assert rows["2"].startswith("usage error") and rows["130"].startswith("interrupted")


@pytest.mark.parametrize("kind,pattern", [("fay", FAY_RE), ("terminal", TERMINAL_RE)])
def test_id_new_makes_ids_in_the_spec_format(kind, pattern):
    r = cli("id", "new", kind)
    value = r.out.strip()
    assert r.code == 0 and pattern.match(value), r
    ms = int(value.split(":")[1].replace("-", "")[:12], 16)           # UUIDv7: the time it was made
    assert abs(ms / 1000 - time.time()) < 600
    r = cli("id", "new", kind, "--json")
    assert r.code == 0 and pattern.match(r.json()["id"]) and r.json()["kind"] == kind
    assert cli("id", "new", kind).out != cli("id", "new", kind).out


@pytest.mark.parametrize("argv,needle", [
    (["issue", "descriptor", "--key", "k/acme.key", "--fay", "fay:alice", "--terminal", "{tid}", "--grant",
      "sim/camera=read", "--out", "x.cap"], "--fay must be a Fay_ID: 'fay:' and a lowercase UUIDv7, e.g. fay:0192"),
    (["issue", "ticket", "--key", "k/tix.key", "--fay", "{fay}", "--terminal", "terminal:bob", "--grant",
      "sim/camera=read", "--out", "x.jws"], "e.g. terminal:0192"),
    (["init", "--store", "new-st", "--terminal-id", "bob"], "make one with 'capwarden id new terminal'"),
    (["revoke", "--key", "k/acme.key", "--descriptor-id", "D-1", "--out", "x.cbor"], "a lowercase UUIDv7, e.g. "),
])
def test_every_format_error_names_the_format_with_an_example(here, argv, needle):
    r = cli(*here.fill(argv))
    assert r.code == 2 and needle in r.err, r


def test_human_times():
    now = 1_796_000_000
    assert _common.human_time(now + 3 * 86400, now) == "2026-12-03T00:53:20Z (in 3 days)"
    assert _common.human_time(now - 90, now).endswith("(2 minutes ago)")
    assert _common.human_time(now, now).endswith("(now)")
    assert _common.human_time(None) == "never"


def test_human_output_has_no_raw_unix_times(here):
    out = cli("issue", "descriptor", "--key", "k/acme.key", "--fay", here.fay, "--terminal", here.tid, "--grant",
              "sim/led=read", "--out", "h.cap").out
    assert re.search(r"until 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in 30 days\)", out), out
    out = cli("verify", "--store", "st", "--fay", here.fay, "--resource", "sim/led", "--mode", "read",
              "--descriptor", "h.cap").out
    assert out.startswith("granted: ") and "until 20" and not re.search(r"\b1[789]\d{8}\b", out), out
    out = cli("audit", "--file", "a.log").out
    assert out.splitlines()[0].split()[:4] == ["SEQ", "TIME", "(UTC)", "ACTION"] and "T" in out.splitlines()[1]
    assert max(len(x) for x in out.splitlines()) < 160
    os.remove("h.cap")


def test_inspect_is_pretty_and_json_is_one_line(here):
    r = cli("inspect", "d.cap")
    assert r.code == 0 and len(r.out.splitlines()) > 10 and json.loads(r.out)["not_after_utc"].startswith("20")
    r = cli("inspect", "d.cap", "--json")
    assert r.code == 0 and "not_after_utc" not in r.json() and r.json()["id"] == here.did


def test_every_reporting_command_has_json(here):
    r = cli("keys", "generate", "--algorithm", "ed25519", "--key-id", "j", "--issuer", "i:j", "--out", "k/json",
            "--json")
    assert r.code == 0 and r.json()["public_key"] == "k/json.pub.json"
    r = cli("issue", "descriptor", "--key", "k/acme.key", "--fay", here.fay, "--terminal", here.tid, "--grant",
            "sim/led=read", "--out", "j.cap", "--json")
    assert r.code == 0 and r.json()["written"] == "j.cap" and r.json()["kind"] == "descriptor"
    r = cli("revoke", "--key", "k/acme.key", "--descriptor-id", r.json()["id"], "--out", "j.cbor", "--json")
    assert r.code == 0 and r.json()["written"] == "j.cbor"
    r = cli("descriptors", "list", "--store", "st", "--json")
    assert r.code == 0 and here.did in [d["descriptor_id"] for d in r.json()["descriptors"]]
    r = cli("revocations", "list", "--store", "st", "--json")
    assert r.code == 0 and r.json()["revocations"] == []
    for f in ("k/json.key", "k/json.pub.json", "j.cap", "j.cbor"):
        os.remove(f)


def test_log_lines_are_one_line_and_structured():
    from capwarden.cli.logsetup import configure
    from capwarden.logfmt import kv, one_line

    assert one_line("a\nb\r\x00c\u2028d") == "a\\nb\\r\\x00c\\u2028d"
    assert kv(event="refused", peer="1.2.3.4:5", reason="two words") == 'event=refused peer=1.2.3.4:5 reason="two words"'
    import io

    stream = io.StringIO()
    handler = configure(0, stream)
    try:
        logging.getLogger("capwarden.engine").warning("board %s gone\nINFO forged line", "sim")
        logging.getLogger("capwarden.engine").debug("not at the default level")
    finally:
        logging.getLogger("capwarden").removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and " WARNING capwarden.engine board sim gone\\nINFO forged line" in lines[0]


class FakePort:
    def __init__(self, device, vid=None, pid=None, description=""):
        self.device, self.vid, self.pid, self.description, self.serial_number = device, vid, pid, description, None


def test_ports_lists_supported_boards_first():
    from capwarden.link.transport import list_ports, resolve_port

    ports = [FakePort("/dev/ttyS0"), FakePort("/dev/ttyUSB0", 0x0403, 0x6001, "FT232R"),
             FakePort("/dev/ttyACM0", 0x2E8A, 0x0005, "Board in FS mode"), FakePort("/dev/ttyUSB1", 0x1234, 0x5678)]
    listed = list_ports(lambda: ports)
    assert [p["device"] for p in listed] == ["/dev/ttyACM0", "/dev/ttyUSB0", "/dev/ttyS0", "/dev/ttyUSB1"]
    assert "pico_camera" in listed[0]["supported"] and listed[0]["usb"] == "2e8a:0005"
    assert listed[2]["supported"] is None
    with pytest.raises(LinkError, match="2 supported boards"):
        resolve_port("auto", lambda: ports)
    assert resolve_port("auto", lambda: ports[2:]) == "/dev/ttyACM0"
    with pytest.raises(LinkError, match="no serial port with the USB id"):
        resolve_port("auto", lambda: ports[:1])
    assert resolve_port("/dev/ttyX", lambda: []) == "/dev/ttyX"


def test_ports_command_and_port_auto(monkeypatch):
    import serial.tools.list_ports

    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: [FakePort("/dev/ttyS0")])
    r = cli("ports", "--json")
    assert r.code == 0 and r.json()["ports"][0]["device"] == "/dev/ttyS0"
    r = cli("ports")
    assert r.code == 0 and "/dev/ttyS0" in r.out
    r = cli("ping", "--port", "auto", "--json")
    assert r.code == 1 and "capwarden ports" in r.err and r.json()["ok"] is False


def test_a_silent_port_gets_a_hint_to_flash(tmp_path):
    import pty

    master, slave = pty.openpty()       # a line with nothing on the other end
    try:
        r = cli("ping", "--port", os.ttyname(slave), "--timeout", "0.2", "--count", "1")
    finally:
        os.close(master)
        os.close(slave)
    assert r.code == 1 and "capwarden flash --port" in r.err and "Traceback" not in r.err, r


def _help(argv):
    return cli(*argv, "--help")


def _subcommands():
    parser = build_parser()
    out = []
    for name, p in parser._subparsers._group_actions[0].choices.items():
        subs = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
        out.append([name])
        for s in subs:
            out += [[name, child] for child in s.choices]
    return out


@pytest.mark.parametrize("argv", _subcommands(), ids=lambda a: " ".join(a))
def test_every_subcommand_help_has_a_description_and_examples(argv):
    r = _help(argv)
    assert r.code == 0 and "usage: capwarden " + " ".join(argv) in r.out
    if argv[0] != "demo":            # demo: one story, no options worth an example (not ours: demo.py)
        assert "examples:" in r.out and "capwarden " + argv[0] in r.out.split("examples:")[1]


def test_help_examples_use_tokens_the_commands_accept():
    from capwarden.cli.serve import parse_tokens, token_ok

    text = _help(["serve"]).out.split("examples:")[1].split("\noptions:")[0]
    items = re.findall(r"--runtime-token (\S+)", text)
    assert items and parse_tokens(items[:1])
    for item in items:
        parse_tokens([item])                                  # raises UsageError if refused
    text = _help(["request"]).out.split("examples:")[1].split("\npositional arguments:")[0]
    tokens = re.findall(r"CAPWARDEN_TOKEN=(\S+)", text)
    assert tokens and all(token_ok(t) and len(t) >= 8 for t in tokens)
    assert set(tokens) <= {i.split("=", 1)[1] for i in items}   # the request example talks to the serve example


def test_the_id_example_in_init_help_runs(tmp_path):
    text = _help(["init"]).out
    line = [x for x in text.splitlines() if "capwarden id new terminal" in x][0]
    tid = cli("id", "new", "terminal").out.strip()
    argv = shlex.split(line.replace('"$(capwarden id new terminal)"', tid).replace("./store", str(tmp_path / "s")))
    assert argv[0] == "capwarden"
    r = cli(*argv[1:])
    assert r.code == 0 and r.json()["terminal_id"] == tid


def test_a_command_module_missing_from_the_install_is_an_error(monkeypatch):
    import capwarden.cli as cli_package

    monkeypatch.setattr(cli_package, "COMMANDS", COMMANDS + ("nonexistent_command",))
    r = cli("--version")
    assert r.code == 1 and "missing from this installation" in r.err and "nonexistent_command" in r.err, r


def test_top_level_help_states_the_exit_codes():
    r = _help([])
    assert r.code == 0 and "exit codes: 0 done or granted, 1 denied or invalid input, 2 usage error, 130" in r.out


def test_interrupt_is_130(monkeypatch):
    import capwarden.cli.id as idcmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(idcmd, "main", interrupted)
    r = cli("id", "new", "fay", "--json")
    assert r.code == 130 and r.json()["exit_code"] == 130 and "interrupted" in r.err


# Runs the installed `capwarden` script the way its shell does, with a Ctrl-C sent to the
# process the moment the command line's package starts importing (a user's early Ctrl-C).
_EARLY_CTRL_C = r"""
import os, runpy, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "capwarden.cli":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("json_flag", [False, True])
def test_a_ctrl_c_while_the_command_line_is_still_imported_is_130_without_a_traceback(json_flag):
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "capwarden")
    argv = ["id", "new", "fay"] + (["--json"] if json_flag else [])
    r = subprocess.run([sys.executable, "-c", _EARLY_CTRL_C, exe] + argv, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 130 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert r.stderr.strip() == "capwarden id: interrupted", r.stderr
    if json_flag:
        assert json.loads(r.stdout) == {"ok": False, "exit_code": 130, "error_code": None, "error": "interrupted"}
    else:
        assert r.stdout == ""               # the command itself never ran


def test_building_the_command_line_imports_no_service_or_link_stack():
    """Every command builds the whole parser first. Its help once imported trust.keydist and
    trust.prune for a constant each, and with them SQLAlchemy: a third of a second added to
    every command (0.8 s for `capwarden id new`, 0.2 s without)."""
    import subprocess
    import sys

    heavy = ["sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "httpx", "psycopg", "aiomqtt", "paho",
             "websockets", "serial", "bleak", "bumble", "mpremote", "jsonschema_rs"]
    code = ("import sys\nfrom capwarden.cli import build_parser\nbuild_parser()\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (heavy,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_an_os_error_with_only_a_message_keeps_it(monkeypatch):
    import capwarden.cli.id as idcmd

    def fails(args):
        raise OSError("the HTTP server did not start on ('127.0.0.1', 8080)")

    monkeypatch.setattr(idcmd, "main", fails)
    r = cli("id", "new", "fay", "--json")
    assert r.code == 1 and "the HTTP server did not start" in r.err and "Traceback" not in r.err
    assert r.json()["error"] == "the HTTP server did not start on ('127.0.0.1', 8080)"


def test_parse_listen_refuses_ports_out_of_range():
    from capwarden.engine.server import parse_listen
    from capwarden.errors import UsageError

    with pytest.raises(UsageError, match="0..65535"):
        parse_listen("localhost:99999")
    assert parse_listen("127.0.0.1:8765") == ("tcp", "127.0.0.1", 8765)


def test_main_reads_sys_argv_when_given_none(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["capwarden", "id", "new", "fay"])
    assert main() == 0 and FAY_RE.match(capsys.readouterr().out.strip())


def test_a_system_failure_under_a_command_is_a_message_not_a_traceback(monkeypatch):
    import errno

    import capwarden.cli.id as idcmd

    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "st/keys.json")

    monkeypatch.setattr(idcmd, "main", disk_full)
    r = cli("id", "new", "fay", "--json")
    assert r.code == 1 and "No space left on device (st/keys.json)" in r.err and r.json()["exit_code"] == 1


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999/cap/v1", "ws://[::1/cap/v1"])
def test_request_url_that_is_none_is_a_usage_error_before_connecting(url):
    # The previous command let the SDK's ValueError (port out of range) out as a traceback.
    r = cli("request", "--url", url, "--runtime", "rt1", "--token", "t0k3n", "sessions")
    assert r.code == 2 and "Traceback" not in r.err and "--url" in r.err
