"""The audit log under crashes: a torn last line hides nothing before it, a restart over it
refuses or repairs, a failed write leaves no garbage, and a decision is acknowledged only once
its entry is on disk (group commit included). Issue 9 defect 8."""

import asyncio
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from capwarden.engine import audit as audit_mod
from capwarden.engine.audit import TORN, AuditLog, read, verify
from capwarden.errors import StoreError
from enginerig import EXE


def _log(path, n=5):
    log = AuditLog(path)
    for i in range(n):
        log.record("acquire", "granted", "", runtime="rtA", resource="r%d" % i, session="s%d" % i, epoch=i)
    log.close()
    return open(path, "rb").read()


def test_defect_8_torn_last_line_keeps_every_entry_before_it(tmp_path):
    path = str(tmp_path / "audit.log")
    data = _log(path)
    last = data.rstrip(b"\n").rfind(b"\n") + 1          # where line 5 starts
    for cut in range(last + 1, len(data)):              # every torn length of line 5, newline missing
        open(path, "wb").write(data[:cut])
        entries, problem = read(path)
        assert [e["seq"] for e in entries] == [1, 2, 3, 4], cut
        assert "line 5 is torn" in problem, cut
        c = verify(path)
        assert c.kind == TORN and c.line == 5 and c.good_bytes == last
    open(path, "wb").write(data[:last])                  # cut exactly at a line end: intact, 4 entries
    assert [e["seq"] for e in read(path)[0]] == [1, 2, 3, 4] and read(path)[1] is None


def test_defect_8_a_chain_break_before_a_torn_line_is_what_is_reported(tmp_path):
    path = str(tmp_path / "audit.log")
    lines = _log(path).splitlines(True)
    edited = lines[2].replace(b"granted", b"denied")
    open(path, "wb").write(b"".join(lines[:2] + [edited] + lines[3:4] + [lines[4][:30]]))
    c = verify(path)
    assert c.kind == audit_mod.BROKEN and c.line == 3 and [e["seq"] for e in c.entries] == [1, 2]


def test_defect_8_audit_command_shows_the_entries_and_where_it_is_torn(tmp_path):
    path = str(tmp_path / "audit.log")
    data = _log(path)
    open(path, "wb").write(data[:-40])
    out = subprocess.run([EXE, "audit", "--file", path, "--json"], capture_output=True, text=True, timeout=30)
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert out.returncode == 1                                             # S4: invalid input
    assert [r["seq"] for r in rows[:-1]] == [1, 2, 3, 4]
    assert rows[-1]["entries"] == 4 and rows[-1]["intact"] is False and rows[-1]["line"] == 5 and rows[-1]["torn"]
    out = subprocess.run([EXE, "audit", "--file", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "TORN at line 5" in out.stdout and "--repair" in out.stdout
    assert len([x for x in out.stdout.splitlines() if "acquire" in x]) == 4


def test_defect_8_restart_over_a_torn_log_refuses_then_repair_continues_the_chain(tmp_path):
    path = str(tmp_path / "audit.log")
    data = _log(path)
    torn = data[:-25]
    open(path, "wb").write(torn)
    with pytest.raises(StoreError, match="line 5 is torn.*--repair"):
        AuditLog(path)
    assert open(path, "rb").read() == torn                                 # refusing changes nothing
    out = subprocess.run([EXE, "audit", "--file", path, "--repair", "--json"], capture_output=True, text=True,
                         timeout=30)
    summary = json.loads(out.stdout.splitlines()[-1])
    assert out.returncode == 0 and summary["intact"] and summary["entries"] == 5, out.stdout + out.stderr
    aside = summary["repaired"]["moved_to"]
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    assert open(aside, "rb").read() == torn[last:]                          # the torn bytes are kept
    entries = read(path)[0]
    assert entries[-1]["action"] == "audit_repair" and os.path.basename(aside) in entries[-1]["detail"]
    log = AuditLog(path)                                                    # the engine starts again
    log.record("acquire", "granted", "", runtime="rtA")
    entries, problem = read(path)
    assert problem is None and [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]


def test_repair_is_offered_to_the_engine_and_refuses_a_broken_chain(tmp_path):
    path = str(tmp_path / "audit.log")
    data = _log(path)
    open(path, "wb").write(data[:-3])
    log = AuditLog(path, repair=True)
    assert log.seq == 5 and log.last_repair and read(path)[1] is None
    lines = open(path, "rb").read().splitlines(True)
    broken = b"".join([lines[1]] + lines[1:]) + b'{"torn'
    open(path, "wb").write(broken)
    with pytest.raises(StoreError, match="not a torn write"):
        AuditLog(path, repair=True)
    out = subprocess.run([EXE, "audit", "--file", path, "--repair"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "not a torn write" in out.stderr
    assert open(path, "rb").read() == broken                                # evidence untouched


def test_a_partial_write_is_cut_off_so_the_next_entry_does_not_follow_garbage(tmp_path, monkeypatch):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.record("acquire", "granted", "", runtime="rtA")
    real = os.pwrite
    calls = []

    real_write = os.write

    def disk_full(fd, data, offset):
        if not calls:
            calls.append(1)
            real(fd, bytes(data[:len(data) // 2]), offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    def disk_full_append(fd, data):
        if not calls:
            calls.append(1)
            real_write(fd, bytes(data[:len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(audit_mod.os, "pwrite", disk_full)
    monkeypatch.setattr(audit_mod.os, "write", disk_full_append)
    with pytest.raises(StoreError, match="No space left"):
        log.record("acquire", "granted", "", runtime="rtB")
    log.record("acquire", "denied", "E_X", runtime="rtC")
    entries, problem = read(path)
    assert problem is None and [(e["seq"], e["runtime"]) for e in entries] == [(1, "rtA"), (2, "rtC")]


def test_a_failed_sync_fails_closed(tmp_path, monkeypatch):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.record("acquire", "granted")

    def eio(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(audit_mod, "_fdatasync", eio)
    with pytest.raises(StoreError, match="could not be synced"):
        log.record("acquire", "granted")
    monkeypatch.undo()
    with pytest.raises(StoreError, match="could not be synced"):           # no later sync is trusted
        log.record("deny", "denied")


@pytest.fixture(params=["direct", "page-cache"])
def direct(request, monkeypatch):
    """Group commit through O_DIRECT, and through the page cache (file systems without it)."""
    monkeypatch.setattr(audit_mod, "DIRECT", request.param == "direct")
    return request.param == "direct"


def test_group_commit_shares_one_sync_among_concurrent_decisions(tmp_path, direct):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.group_commit(True)
    assert (log._direct is not None) == direct

    async def decide(i):
        log.record("acquire", "granted", "", session="s%d" % i)
        await log.durable()
        return log.pending

    async def main():
        return await asyncio.gather(*(decide(i) for i in range(20)))

    syncs = log.syncs
    assert asyncio.run(main()) == [0] * 20
    assert log.syncs - syncs == 1                           # twenty decisions, one fdatasync
    async def one():
        log.record("terminate", "done", "released")
        return log.pending

    assert asyncio.run(one()) == 1                           # not synced before the turn ends...
    log.group_commit(False)                                  # ...and turning it off syncs what is pending
    assert log.pending == 0 and read(path)[1] is None and len(read(path)[0]) == 21


def test_group_commit_flushes_an_entry_nobody_waits_for_within_a_turn(tmp_path, direct):
    """A session ended by liveness while its runtime is away: nothing is sent, the entry still
    reaches the disk at the next turn of the loop."""
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.group_commit(True)

    async def main():
        log.record("terminate", "done", "heartbeat_timeout", session="s1")
        await asyncio.sleep(0)
        return log.pending, [e.get("session") for e in read(path)[0]]

    assert asyncio.run(main()) == (0, ["s1"])


def test_group_commit_preallocates_zeros_and_a_restart_gives_them_back(tmp_path, direct):
    path = str(tmp_path / "audit.log")
    log = AuditLog(path)
    log.group_commit(True)
    async def three():
        for i in range(3):
            log.record("acquire", "granted", "", session="s%d" % i)
        await log.durable()

    asyncio.run(three())
    data = open(path, "rb").read()
    body = data.rstrip(b"\0")
    assert len(data) >= audit_mod.PREALLOCATE and body.count(b"\n") == 3 and body.endswith(b"\n")
    c = verify(path)                                      # zeros after the last line: not a problem
    assert c.problem is None and len(c.entries) == 3 and c.good_bytes == len(body)
    again = AuditLog(path)                                # a writer that did not close (kill -9)
    again.record("terminate", "done", "released")
    assert b"\0" not in open(path, "rb").read() and [e["seq"] for e in read(path)[0]] == [1, 2, 3, 4]
    log2 = AuditLog(path)
    log2.group_commit(True)
    log2.record("deny", "denied", "E_X")
    log2.group_commit(False)                              # a clean stop gives the zeros back
    data = open(path, "rb").read()
    assert b"\0" not in data and data.count(b"\n") == 5 and read(path)[1] is None


def test_group_commit_lines_of_every_size_across_blocks_and_preallocations(tmp_path, direct):
    path = str(tmp_path / "audit.log")
    AuditLog(path).record("acquire", "granted", "", detail="before")          # a partial first block
    log = AuditLog(path)
    log.group_commit(True)
    rnd = random.Random(8)
    sizes = [rnd.choice((1, 7, 4000, 4096, 5000, 70000, 300000)) for _ in range(40)]

    async def run():
        for i, n in enumerate(sizes):
            log.record("acquire", "granted", "", detail="%d:" % i + "y" * n)
            if rnd.random() < 0.5:
                await log.durable()
                assert log.pending == 0
        await log.durable()

    asyncio.run(run())
    entries, problem = read(path)
    assert problem is None and [e.get("detail", "").split(":")[0] for e in entries[1:]] == [str(i) for i in range(40)]
    assert [len(e["detail"]) for e in entries[1:]] == [len("%d:" % i) + n for i, n in enumerate(sizes)]
    log.group_commit(False)
    assert not open(path, "rb").read().endswith(b"\0") and len(read(path)[0]) == 41


def test_a_torn_line_before_preallocated_zeros_is_torn_and_zeros_before_data_are_not(tmp_path):
    path = str(tmp_path / "audit.log")
    data = _log(path, 3)
    open(path, "wb").write(data + b'{"seq":4,"ts' + bytes(5000))
    c = verify(path)
    assert c.kind == TORN and c.line == 4 and len(c.entries) == 3
    aside, n = audit_mod.repair_torn_tail(path)
    assert open(aside, "rb").read() == b'{"seq":4,"ts' and n == 12 and open(path, "rb").read() == data
    open(path, "wb").write(data + bytes(100) + data)
    c = verify(path)
    assert c.kind == audit_mod.BROKEN and c.line == 4
    with pytest.raises(StoreError, match="not a torn write"):
        AuditLog(path, repair=True)


def test_the_server_sends_nothing_before_its_audit_entries_are_on_disk(tmp_path, monkeypatch, direct):
    """A stub engine records one entry per request; the order of syncs and received answers is
    kept in one list (client and server share the loop, so the order is the causal one)."""
    from websockets.asyncio.client import connect

    from capwarden.engine import protocol
    from capwarden.engine.server import Server

    events = []
    real = audit_mod._fdatasync
    monkeypatch.setattr(audit_mod, "_fdatasync", lambda fd: (real(fd), events.append(("synced", log.seq))))
    log = AuditLog(str(tmp_path / "audit.log"))

    class StubEngine:
        audit = log

        def add_runtime(self, rid):
            pass

        def connected(self, rid, send):
            pass

        def disconnected(self, rid, send):
            pass

        def error(self, code, message, corr=None):
            return protocol.make("Error", {"error_code": code, "error_message": message}, "t", corr)

        async def handle(self, rid, msg, origin=None):
            entry = log.record("deny", "denied", "E_PERMISSION_DENIED", runtime=rid)
            await asyncio.sleep(0)
            return protocol.make("SessionList", {"sessions": [], "seq": entry["seq"]}, "t", msg["message_id"])

    async def main():
        server = await Server({"rt": "tok-123456"}, "127.0.0.1:0").start(StubEngine())
        try:
            async with connect(server.url, additional_headers={"Authorization": "Bearer tok-123456"}) as ws:
                for _ in range(5):
                    await ws.send(protocol.dumps(protocol.make("SessionQuery", {}, "rt")))
                for _ in range(5):
                    events.append(("answered", json.loads(await ws.recv())["body"]["seq"]))
        finally:
            await server.close()

    asyncio.run(main())
    synced = 0
    for kind, seq in events:
        if kind == "synced":
            synced = max(synced, seq)
        else:
            assert seq <= synced, events                     # answered only once its entry was synced
    assert sum(1 for k, _ in events if k == "answered") == 5


WRITER = r"""
import asyncio, os, random, sys
from capwarden.engine.audit import AuditLog
from capwarden.engine import audit
path, mode, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
audit.DIRECT = mode == "grouped"
rnd = random.Random(seed)
log = AuditLog(path, repair=True)
print("start", log.seq, flush=True)
def big():
    # Entries up to a few hundred KB span many pages, so a kill can land inside one write().
    return "x" * rnd.choice((10, 2000, 60000, 400000))
if mode == "inline":
    while True:
        e = log.record("acquire", "granted", "", detail=big())
        print("ack", e["seq"], e["hash"], flush=True)        # acknowledged: record() returned, synced
else:
    log.group_commit(True)
    async def decide():
        while True:
            e = log.record("acquire", "granted", "", detail=big())
            await asyncio.sleep(0)
            await log.durable()
            print("ack", e["seq"], e["hash"], flush=True)
    async def main():
        await asyncio.gather(*(decide() for _ in range(8)))
    asyncio.run(main())
"""


ROUNDS = 8


@pytest.mark.parametrize("mode", ["inline", "grouped", "grouped-page-cache"])
def test_kill_9_mid_append_never_loses_an_acknowledged_entry(tmp_path, mode):
    path = str(tmp_path / "audit.log")
    rnd = random.Random(9)
    acked = {}
    torn_rounds = repaired_next = 0
    for round_ in range(ROUNDS):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path, mode, str(round_)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline().split()
            assert first[:1] == ["start"], proc.stderr.read()
            start_seq = int(first[1])
            want = rnd.randint(1, 6)
            got = 0
            while got < want:
                line = proc.stdout.readline()
                if line.startswith("ack "):
                    _, seq, h = line.split()
                    acked[int(seq)] = h
                    got += 1
            time.sleep(rnd.random() * 0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
        # whatever it printed before it died was acknowledged too; a line the kill cut short
        # (no newline) was never a whole acknowledgement
        out, _err = proc.communicate(timeout=30)
        for line in out.split("\n")[:-1]:
            if line.startswith("ack "):
                _, seq, h = line.split()
                acked[int(seq)] = h
        c = verify(path)
        assert c.kind in (None, TORN), c.problem                    # verifies up to its last full line
        torn_rounds += c.kind == TORN
        by_seq = {e["seq"]: e["hash"] for e in c.entries}
        lost = [s for s, h in acked.items() if by_seq.get(s) != h]
        assert not lost, "acknowledged entries lost after kill -9 in round %d: %s" % (round_, lost)
        assert start_seq <= len(c.entries)
        repaired_next += c.kind == TORN and round_ < ROUNDS - 1       # the next writer repairs it
    repairs = [e for e in verify(path).entries if e["action"] == "audit_repair"]
    assert len(repairs) == repaired_next
    print("%s: %d of %d kills tore the last line" % (mode, torn_rounds, ROUNDS))


def test_kill_9_of_serve_mid_traffic_loses_no_acknowledged_decision(world):
    """The whole engine: runtimes acquire and release as fast as they can, `serve` is killed
    with SIGKILL at a random moment, three times over one store. Every AuthResult and
    SessionReleased a runtime received has its audit entry; the log verifies up to its end."""
    from capwarden.errors import CapwardenError
    from capwarden.sdk import connect
    from enginerig import TOKENS, Served

    rnd = random.Random(1)
    path = os.path.join(world.store, "audit.log")
    granted, released = set(), set()
    for round_ in range(3):
        served = Served(world)
        try:
            async def traffic():
                clients = [await connect(served.url, rid, TOKENS[rid]) for rid in ("rtA", "rtB")]

                async def loop(c):
                    try:
                        while True:
                            s = await world.take(c, "gps", "read")
                            granted.add(s.session_id)
                            await s.release()
                            released.add(s.session_id)
                    except (CapwardenError, ConnectionError, OSError):
                        return                                   # the engine died under us

                tasks = [asyncio.ensure_future(loop(c)) for c in clients for _ in range(3)]
                await asyncio.sleep(0.3 + rnd.random() * 0.7)
                served.proc.send_signal(signal.SIGKILL)
                await asyncio.wait(tasks, timeout=30)
                for c in clients:
                    await c.close()

            asyncio.run(traffic())
        finally:
            served.proc.kill()
            served.proc.wait(timeout=30)
        c = verify(path)
        assert c.kind in (None, TORN), c.problem
        if c.kind == TORN:
            audit_mod.repair_torn_tail(path)
        # the answer's own entry: "authorized" before the board (no wait_ms), "granted" after
        ok = {e["session"] for e in c.entries if e["action"] == "acquire" and e["outcome"] in ("authorized", "granted")}
        ended = {e["session"] for e in c.entries if e["action"] == "terminate" and e.get("reason") == "released"}
        assert granted and granted <= ok, "acknowledged grants missing from the log: %s" % (granted - ok)
        assert released <= ended, "acknowledged releases missing from the log: %s" % (released - ended)
