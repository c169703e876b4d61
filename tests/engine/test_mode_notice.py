"""The mode notice (chapter 4 section 4.5.2 item 4): SessionStateChanged with `terminal_mode`,
checked by the shipped schema as every message is, and pushed by modepush.notify_mode for every
live session, the state unchanged."""


import pytest

from capwarden import runtimeapi
from capwarden.engine import modepush
from capwarden.engine.conversion import Converter

U = "01927b34-7e21-7c4d-a89f-1234567890ab"
BASE = {"session_id": U, "state": "active", "previous_state": "active", "suspended": False}


def _valid(body):
    try:
        runtimeapi.validate(runtimeapi.make("SessionStateChanged", body, "terminal:x"))
        return True
    except runtimeapi.BadMessage:
        return False


@pytest.mark.parametrize("mode", ["online", "degraded"])
def test_a_mode_notice_matches_the_schema(mode):
    assert _valid(dict(BASE, reason=modepush.MODE_REASONS[mode], terminal_mode=mode))


def test_a_mode_other_than_online_or_degraded_is_refused():
    assert not _valid(dict(BASE, reason="terminal_online", terminal_mode="offline"))
    assert not _valid(dict(BASE, reason="terminal_online", terminal_mode=True))


def test_terminal_mode_comes_only_with_a_mode_reason():
    assert not _valid(dict(BASE, reason="released", terminal_mode="online"))
    assert _valid(dict(BASE, reason="released"))             # a plain change is as before


class _S:
    def __init__(self, sid, rt, state, suspended=False):
        self.session_id, self.runtime_id, self.state, self.suspended = sid, rt, state, suspended


class _Registry:
    def __init__(self, sessions):
        self.sessions = sessions

    def live(self):
        return [s for s in self.sessions if s.state in ("active", "handover_pending")]


class _Engine:
    def __init__(self, sessions):
        self.registry = _Registry(sessions)
        self.pushed = []
        self.conversion = Converter()

    def push(self, runtime_id, mtype, body):
        self.pushed.append((runtime_id, mtype, body))


def test_notify_mode_tells_every_live_session_and_keeps_its_state():
    a = _S(U, "rtA", "active", suspended=True)
    b = _S(U.replace("1234", "5678"), "rtB", "handover_pending")
    gone = _S(U.replace("1234", "9999"), "rtA", "terminated")
    eng = _Engine([a, b, gone])
    assert modepush.notify_mode(eng, False, "unreachable") == 2
    assert [(rt, m) for rt, m, _ in eng.pushed] == [("rtA", "SessionStateChanged"), ("rtB", "SessionStateChanged")]
    first, second = eng.pushed[0][2], eng.pushed[1][2]
    assert first == {"session_id": a.session_id, "state": "active", "previous_state": "active",
                     "reason": "terminal_degraded", "suspended": True, "terminal_mode": "degraded"}
    assert second["state"] == second["previous_state"] == "handover_pending"
    for _, _, body in eng.pushed:
        assert _valid(body)
    assert eng.conversion.offline
    eng.pushed.clear()
    modepush.notify_mode(eng, True, "recovered")
    assert not eng.conversion.offline
    assert {body["terminal_mode"] for _, _, body in eng.pushed} == {"online"}
    assert {body["reason"] for _, _, body in eng.pushed} == {"terminal_online"}
