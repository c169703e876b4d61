"""An AuthRequest's grant entry is written before the board is asked, and synced while it answers
(docs/DECISIONS.md, "The grant's audit entry before the board's lock"): the AuthResult still
leaves only with its own entry on disk, the board's epoch follows in a `lock` entry, and a board
refusal is audited after the `granted` entry."""

from capwarden.engine import server as server_mod
from capwarden.errors import CapError
from capwarden.engine.audit import read
from enginerig import runtime


def test_grant_entry_is_on_disk_before_the_answer_and_the_epoch_follows(world, in_process, run, monkeypatch):
    seen = []

    async def scenario():
        app = await in_process()
        audit = app.engine.audit
        real_dumps = server_mod.protocol.dumps

        def dumps(msg):
            if msg["message_type"] == "AuthResult":
                # When the answer is encoded for sending: its own entry is synced, and no later one
                # was needed for it.
                sid = msg["body"].get("session_id")
                seen.append((sid, audit._synced_seq, [e for e in read(audit.path)[0]
                                                       if e.get("session") == sid]))
            return real_dumps(msg)

        monkeypatch.setattr(server_mod.protocol, "dumps", dumps)
        c = await runtime(app, "rtA")
        b = await runtime(app, "rtB")
        try:
            s = await world.take(c, "motor_left", "write")
            try:
                await world.take(b, "motor_left", "write", who="B")
                raise AssertionError("the held motor was granted twice")
            except CapError as exc:
                assert exc.code == "E_RESOURCE_BUSY"
            await s.release()
        finally:
            await c.close()
            await b.close()
        return app, s

    app, s = run(scenario())
    (sid, synced, mine), _denied = seen
    assert sid == s.session_id
    granted = [e for e in mine if e["action"] == "acquire" and e["outcome"] == "authorized"]
    assert len(granted) == 1 and synced >= granted[0]["seq"]
    entries, problem = read(app.engine.audit.path)
    assert problem is None
    lock = [e for e in entries if e["action"] == "lock" and e.get("session") == s.session_id]
    assert len(lock) == 1 and lock[0]["seq"] > granted[0]["seq"] and lock[0]["epoch"] >= 1
    assert lock[0]["outcome"] == "granted" and lock[0]["resource"] == granted[0]["resource"]
    ended = [e for e in entries if e["action"] == "terminate" and e.get("session") == s.session_id]
    assert ended[0]["epoch"] == lock[0]["epoch"]
    # B's request: authorized by the engine, refused by the board, audited in that order; never
    # "granted" (the demo's log read "granted" then "denied" for one request).
    of_b = [e for e in entries if e.get("fay") == world.B and e["action"] == "acquire"]
    assert [(e["outcome"], e["reason"]) for e in of_b] == [("authorized", ""), ("denied", "E_RESOURCE_BUSY")]
    assert of_b[0]["session"] != s.session_id
