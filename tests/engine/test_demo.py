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
                     "on camera: terminated (revoked)", "motor_left speed is now 0", "chain intact", "Done.",
                     # issue 12: a rekey, the old key and a stranger's frames refused and counted
                     "capwarden link rekey: the board took", "old key says HELLO: no session",
                     "dropped both before any handler: bad_tag +2", "the iFay's grant stands: board session",
                     # issues 13 and 14: the trust service, the engine registered and online,
                     # a ticket over HTTP, its revocation polled from the service
                     "key set 1 acknowledged", "mode online", "/v1/tickets for the iFay",
                     "ends the session: terminated (revoked)",
                     # issue 14: degraded, a ticket refused, the converted credential offline,
                     # recovery ending the session revoked while offline, then online again
                     "converted at once to a local descriptor", "the terminal is degraded",
                     "terminal_mode=degraded", "a new ticket is refused: E_TICKET_OFFLINE_REJECTED",
                     "goes on offline with the converted credential", "the offline session ends (revoked)",
                     "the terminal is online",
                     # issue 15: priority preemption, an operator's take-over and hand-back, the console
                     "the iFay's session: terminated (preempted)", "the iFay's session ends (operator_takeover)",
                     "hands motor_left back to the iFay", "iFay drives motor_left at 650 again",
                     "operator console at http://127.0.0.1:"):
        assert expected in text, expected
    assert "not in this install" not in text            # the venv has every extra
    assert "Traceback" not in out.stderr
    assert os.listdir(tmp_path) == []   # the temporary store and the board's files are gone


def test_demo_bad_heapsize_is_a_usage_error_at_once(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    out = subprocess.run([EXE, "demo", "--heapsize", "banana"], capture_output=True, text=True, timeout=50, env=env)
    assert out.returncode == 2 and "heap" in out.stderr and "Traceback" not in out.stderr
    assert os.listdir(tmp_path) == []
