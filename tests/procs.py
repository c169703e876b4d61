"""Processes the tests start (capwarden serve, sim): stopped the way a user would, then killed
if they do not stop in time. For every suite (tests/ and hil/)."""

import subprocess


def stop(proc, timeout=20):
    """SIGTERM, then SIGKILL after `timeout` seconds; closes its pipes. Safe to call twice."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()
