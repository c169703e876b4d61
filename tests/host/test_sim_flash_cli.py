"""`capwarden sim`, `flash` and `demo` from the outside (issue 11): exit codes by the one rule
(0 done, 1 failed, 2 usage, 130 interrupted), `--json` one object also on failure, no traceback,
and nothing left in the temporary folder, Ctrl-C during the deploy included."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import serial

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")


def start(args, tmp_path):
    """The command in its own process group, as a shell runs a foreground job (Ctrl-C reaches
    the group: the command and every tool it runs)."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    return subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def ctrl_c(proc):
    os.killpg(proc.pid, signal.SIGINT)


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def no_leftovers(tmp_path):
    time.sleep(0.1)
    assert sorted(os.listdir(tmp_path)) == []


def test_sim_heapsize_banana_is_a_usage_error_at_once(tmp_path):
    # (It waited 60 s for the board, then failed with exit 1.)
    out = subprocess.run([EXE, "sim", "--heapsize", "banana", "--json"], capture_output=True, text=True,
                         timeout=50, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert out.returncode == 2, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is False and report["exit_code"] == 2 and "heap" in report["error"]
    assert "Traceback" not in out.stderr
    no_leftovers(tmp_path)


def test_sim_json_then_a_crashed_board_is_exit_1(tmp_path):
    proc = start(["sim", "--json"], tmp_path)
    try:
        report = json.loads(proc.stdout.readline())
        assert report["ok"] is True and report["port"].startswith("/dev/") and report["heapsize"] == "64K"
        # The board's process ends by itself: stop the agent (Ctrl-C on the line), then end
        # the unix port's REPL (Ctrl-D).
        with serial.serial_for_url(report["port"], timeout=0.2) as s:
            s.write(b"\x00\x03")
            s.flush()
            time.sleep(0.5)
            s.write(b"\x04")
            s.flush()
        rc, out, err = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 1, err                          # was 0
    assert out == "" and "process ended" in err and "Traceback" not in err   # one object in all
    no_leftovers(tmp_path)


def test_sim_ctrl_c_is_130_and_leaves_nothing(tmp_path):
    proc = start(["sim"], tmp_path)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        ctrl_c(proc)
        rc, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, err                        # was 0
    assert "Traceback" not in err and "process ended" not in err
    no_leftovers(tmp_path)


def interrupt_while_staging(args, tmp_path, after=0.05, sig=signal.SIGINT):
    """Ctrl-C `after` seconds from the moment the firmware's staging folder appears: while it is
    compiled (mpy-cross), or later while mpremote copies it."""
    proc = start(args, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(n.startswith("capwarden-fw-") for n in os.listdir(tmp_path)):
            time.sleep(0.005)
        time.sleep(after)
        if sig == signal.SIGINT:
            ctrl_c(proc)
        else:
            proc.send_signal(sig)       # a service manager signals the process alone
        return finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_during_the_deploy_of_sim(tmp_path):
    rc, out, err = interrupt_while_staging(["sim"], tmp_path)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "failed" not in err, err
    no_leftovers(tmp_path)                       # the half-staged capwarden-fw-* folder stayed


def test_sigterm_during_the_deploy_of_sim_stops_cleanly(tmp_path):
    rc, out, err = interrupt_while_staging(["sim"], tmp_path, after=0.3, sig=signal.SIGTERM)
    assert rc == 0, err                          # was killed by the signal, its folders left behind
    assert "Traceback" not in err
    no_leftovers(tmp_path)


def test_ctrl_c_during_the_deploy_of_the_demo(tmp_path):
    """The demo runs under asyncio, whose Ctrl-C handler only cancels: the tools die of the
    signal first ('mpy-cross failed' with their KeyboardInterrupt traceback, exit 1, before)."""
    rc, out, err = interrupt_while_staging(["demo"], tmp_path)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "failed" not in err, err
    no_leftovers(tmp_path)


def test_flash_json_failure_is_one_object(tmp_path):
    out = subprocess.run([EXE, "flash", "--port", str(tmp_path / "no-such-port"), "--board", "sim", "--json"],
                         capture_output=True, text=True, timeout=60, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is False and report["exit_code"] == 1 and "cannot open" in report["error"]
    assert "Traceback" not in out.stderr
    no_leftovers(tmp_path)


def test_flash_unknown_board_json_is_a_usage_error(tmp_path):
    out = subprocess.run([EXE, "flash", "--port", "/dev/null", "--board", "nope", "--json"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert out.returncode == 2
    report = json.loads(out.stdout)
    assert report["exit_code"] == 2 and "unknown board 'nope'" in report["error"]
    no_leftovers(tmp_path)


@pytest.mark.timeout(600)
def test_ctrl_c_at_any_moment_of_the_deploy_under_the_engine(tmp_path):
    """serve and demo start the virtual board inside the event loop: a tool killed by the Ctrl-C
    raised a KeyboardInterrupt there, which escaped its task ('Task exception was never
    retrieved' and a traceback); now it is an error the command turns into exit 130."""
    store = tmp_path / "store"
    assert subprocess.run([EXE, "init", "--store", str(store)], capture_output=True, timeout=60).returncode == 0
    serve = ["serve", "--store", str(store), "--listen", "127.0.0.1:0", "--board", "sim",
             "--runtime-token", "rt1=s3cret-token"]
    for n, after in enumerate((0.3, 0.7, 1.1)):
        for args in (serve, ["demo"]):
            tmp = tmp_path / ("t%d-%s" % (n, args[0]))
            tmp.mkdir()
            rc, out, err = interrupt_while_staging(args, tmp, after)
            assert rc == 130, (args[0], after, err)
            assert "Traceback" not in err and "never retrieved" not in err, (args[0], after, err)
            no_leftovers(tmp)


def test_flash_to_a_port_where_nothing_answers_says_so_before_compiling(tmp_path):
    """A port with no MicroPython behind it: one line saying what to check (exit 1, one JSON
    object), and nothing compiled or left behind."""
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        out = subprocess.run([EXE, "flash", "--port", os.ttyname(slave), "--board", "sim", "--json"],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ, TMPDIR=str(tmp_path)))
    finally:
        os.close(master)
        os.close(slave)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["exit_code"] == 1 and "no MicroPython REPL" in report["error"]
    assert "Traceback" not in out.stderr and "copying" not in out.stderr
    no_leftovers(tmp_path)


@pytest.mark.timeout(600)
def test_ctrl_c_during_the_demos_story(tmp_path):
    """Ctrl-C while the demo's runtimes hold sessions: its heartbeat loops failed later unheard
    ('Task exception was never retrieved', LinkClosed with a traceback)."""
    for mark in ("== 4.", "== 6.", "== 8."):
        tmp = tmp_path / mark.strip("= .")
        tmp.mkdir()
        proc = start(["demo"], tmp)
        try:
            for line in proc.stdout:
                if line.startswith(mark):
                    break
            ctrl_c(proc)
            rc, out, err = finish(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert rc == 130, (mark, err)
        assert "Traceback" not in err and "never retrieved" not in err, (mark, err)
        no_leftovers(tmp)
