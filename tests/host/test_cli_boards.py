"""The board commands from the outside: help that teaches, clean errors, exit codes (S4)."""

import json
import os
import subprocess
import sys

import pytest

from capwarden.cli import COMMANDS, build_parser

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")


def cap(*args, timeout=90):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


def test_top_level_help_lists_every_built_command():
    out = cap("--help")
    assert out.returncode == 0
    parser = build_parser()
    built = [c for c in COMMANDS if c in parser._subparsers._group_actions[0].choices]
    assert {"sim", "ping", "flash", "demo"} <= set(built)
    for c in built:
        assert c in out.stdout


@pytest.mark.parametrize("command", ["sim", "ping", "flash", "demo"])
def test_subcommand_help_teaches_with_examples(command):
    out = cap(command, "--help")
    assert out.returncode == 0
    assert "usage: capwarden " + command in out.stdout
    if command != "demo":
        assert "examples:" in out.stdout


def test_no_command_is_a_usage_error():
    out = cap()
    assert out.returncode == 2


def test_ping_missing_port_is_a_clean_error():
    out = cap("ping", "--port", "/dev/does-not-exist-capwarden")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "cannot open /dev/does-not-exist-capwarden" in out.stderr


def test_ping_without_port_is_a_usage_error():
    out = cap("ping")
    assert out.returncode == 2 and "--port" in out.stderr


def test_flash_unknown_board_names_the_known_ones():
    out = cap("flash", "--port", "/dev/null", "--board", "no-such-board")
    assert out.returncode == 2
    assert "unknown board 'no-such-board'" in out.stderr and "sim" in out.stderr
    assert "Traceback" not in out.stderr


def test_ping_sim_json_lists_resources():
    out = cap("ping", "--port", "sim", "--count", "3", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["board"] == "sim" and data["count"] == 3
    assert {r["name"] for r in data["resources"]} >= {"camera", "motor_left", "motor_right", "gps", "sdcard"}
    # the board shorthand that --resource and --grant take (issue 11 item 5)
    assert {r["shorthand"] for r in data["resources"]} >= {"sim/camera", "sim/gps"}
    assert data["mem_free"] > 0 and data["rtt_ms"]["min"] <= data["rtt_ms"]["max"]


def test_unknown_board_leaves_no_temporary_files(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    out = subprocess.run([EXE, "flash", "--port", "/dev/null", "--board", "nope"], capture_output=True,
                         text=True, env=env, timeout=30)
    assert out.returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_sim_command_prints_a_port_that_answers_and_stops_cleanly(tmp_path):
    import signal
    import time

    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([EXE, "sim"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/"), proc.stderr.read()
        out = cap("ping", "--port", port, "--count", "2", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["board"] == "sim"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=20)
    assert rc == 0
    time.sleep(0.1)
    assert list(tmp_path.iterdir()) == []  # staged firmware and the board's flash folder removed


def test_ping_ring_shows_what_the_board_did_and_the_link_counts():
    """`ping --ring` reads the board's audit ring (faults.md 70): a grant and its failsafe made
    by an earlier host are there, with the link counters of both sides (issue 9, defect 11)."""
    import asyncio

    from capshared.limits import mode_bits
    from capwarden.link import open_board
    from capwarden.sim import VirtualBoard

    with VirtualBoard() as vb:
        async def grant_then_go_silent():
            b = await open_board(vb.port)
            g = await b.acquire(b.resource_index("motor_left"), mode_bits(["write"]), 4242, 200)
            await asyncio.sleep(0.6)                     # the lease runs out: the board's failsafe
            await b.close()
            return g

        g = asyncio.run(grant_then_go_silent())
        out = cap("ping", "--port", vb.port, "--count", "1", "--ring", "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert set(report["link"]) == {"board", "host"} and "stale" in report["link"]["board"]
        kinds = [(e["kind"], e["name"], e["session"], e["epoch"]) for e in report["ring"]]
        assert ("grant", "motor_left", 4242, g.epoch) in kinds
        assert [k for k in kinds if k[0].startswith("failsafe")][-1][1:] == ("motor_left", 4242, g.epoch)
        human = cap("ping", "--port", vb.port, "--count", "1", "--ring")
        assert "audit ring" in human.stdout and "motor_left" in human.stdout and "link, board side" in human.stdout
