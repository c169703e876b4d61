"""Issue 9 defect 7: a store has one writer.

Two `capwarden serve` on one store (or on one audit log) both ran and both appended to the
audit log, breaking its chain. The second is now refused at start, before it deploys the
board, with a message naming the first process; exit code 1 (S4: refused), no traceback.
"""

import os
import subprocess

from capwarden.engine import audit
from enginerig import EXE, TOKENS, Served, World


def _second(store, *extra):
    args = [EXE, "serve", "--store", store, "--listen", "127.0.0.1:0", "--board", "sim",
            "--runtime-token", "rtA=%s" % TOKENS["rtA"]] + list(extra)
    return subprocess.run(args, capture_output=True, text=True, timeout=90)


async def _decide(world, url):
    """One grant and one refusal: entries in the audit log."""
    from capwarden.errors import CapError
    from capwarden.sdk import connect

    a = await connect(url, "rtA", TOKENS["rtA"])
    s = await world.take(a, "gps", "read")
    await s.release()
    try:
        await world.take(a, "gps", "read", who="C")
    except CapError:
        pass
    await a.close()


def test_issue9_7_a_second_engine_on_the_same_store_is_refused(world, tmp_path, run):
    first = Served(world)
    try:
        run(_decide(world, first.url))
        p = _second(world.store)
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert "in use by another capwarden serve" in p.stderr and str(first.proc.pid) in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and "deploying" not in p.stderr, p.stderr   # before the board
        assert p.stdout == ""
        other = World(str(tmp_path / "other"))                      # its own store, the first one's audit log
        p = _second(other.store, "--audit", os.path.join(world.store, "audit.log"))
        assert p.returncode == 1 and "audit log" in p.stderr and str(first.proc.pid) in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
        assert first.proc.poll() is None                            # the first one serves on
        run(_decide(world, first.url))
    finally:
        first.stop()
    entries, problem = audit.read(os.path.join(world.store, "audit.log"))
    assert problem is None and len(entries) >= 6                    # the one writer's chain, intact
    again = Served(world)                                           # the lock went with its holder
    again.stop()
    assert audit.read(os.path.join(world.store, "audit.log"))[1] is None


def test_issue9_7_the_lock_is_not_the_store_write_lock(world):
    from capwarden.engine.app import ENGINE_LOCK

    assert ENGINE_LOCK != ".lock"     # STORE/.lock is taken briefly by every credential write
    first = Served(world)
    try:
        from capwarden.credentials import Terminal

        # The command line still writes the store while the engine runs (revocations import).
        from capwarden.credentials.issue import sign_revocation

        Terminal.open(world.store).import_revocation(sign_revocation(world.key, world.dC, world.now), world.now)
    finally:
        first.stop()
