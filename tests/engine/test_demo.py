"""`make demo` runs `capwarden demo`: the main job must work and tell its story."""

import os
import subprocess
import sys

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")


def test_demo_runs_the_whole_scenario(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    out = subprocess.run([EXE, "demo"], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for expected in ("Both Fays read the GPS", "coFay refused: E_RESOURCE_BUSY", "handover completed",
                     "on camera: terminated (revoked)", "motor_left speed is now 0", "chain intact", "Done."):
        assert expected in text, expected
    assert os.listdir(tmp_path) == []   # the temporary store and the board's files are gone


def test_demo_bad_heapsize_is_a_usage_error_at_once(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    out = subprocess.run([EXE, "demo", "--heapsize", "banana"], capture_output=True, text=True, timeout=50, env=env)
    assert out.returncode == 2 and "heap" in out.stderr and "Traceback" not in out.stderr
    assert os.listdir(tmp_path) == []
