"""`capwarden link rekey` from the outside (issue 12 item 1): a new key over the authenticated
link, the old one refused afterwards, clean errors and S4 exit codes, no key ever printed."""

import asyncio
import json
import os
import subprocess
import sys

from capwarden.link import linkauth, open_board, opens_session
from capwarden.sim import VirtualBoard

EXE = os.path.join(os.path.dirname(sys.executable), "capwarden")


def cap(*args, timeout=90):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout)


async def _ping(port, key=None):
    board = await open_board(port, timeout=0.5, retries=1, key=key)
    try:
        return await board.ping()
    finally:
        await board.close()


def test_rekey_replaces_the_key_and_the_old_one_opens_nothing():
    with VirtualBoard() as vb:
        old = vb.link_key
        out = cap("link", "rekey", "--port", vb.port, "--json")
        assert out.returncode == 0, out.stderr
        said = json.loads(out.stdout)
        new = linkauth.key_for(vb.port)                      # the store's file: the new key
        assert said["ok"] is True and said["old_key_id"] == old.key_id.hex() and said["key_id"] == new.key_id.hex()
        assert new != old and linkauth.staged(vb.port) is None
        for secret in (old.material(), new.material()):      # never printed, in any form
            assert secret.hex() not in out.stdout + out.stderr
        assert asyncio.run(_ping(vb.port))["mem_free"] > 0   # the engine's next open: new key
        assert asyncio.run(opens_session(vb.port, old)) is False
        with open(os.path.join(vb.fs_dir, "link.key"), "rb") as f:
            assert f.read() == new.material()                # on the board's flash too


def test_rekey_errors_are_one_line_with_exit_codes():
    out = cap("link", "rekey", "--port", "sim")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "running board" in out.stderr
    out = cap("link", "rekey")
    assert out.returncode == 2 and "--port" in out.stderr
    with VirtualBoard(link_key=False) as vb:                  # a board without a key
        out = cap("link", "rekey", "--port", vb.port, "--json", "--timeout", "0.3")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert json.loads(out.stdout)["ok"] is False


def test_link_help_teaches_with_examples():
    out = cap("link", "rekey", "--help")
    assert out.returncode == 0 and "examples:" in out.stdout and "capwarden link rekey --port" in out.stdout


def test_link_without_an_action_or_with_a_bad_timeout_is_a_usage_error_with_json():
    out = cap("link", "--json")
    assert out.returncode == 2 and json.loads(out.stdout)["ok"] is False
    out = cap("link", "rekey", "--port", "/dev/null", "--timeout", "0")
    assert out.returncode == 2 and "--timeout" in out.stderr
