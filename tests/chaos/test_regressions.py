"""Fault schedules that once broke an invariant, kept as regular tests, step by step.

Each came from the random schedules (test_schedules.py), shrunk, against the code of commit
869fad2 (before issue 9's fixes); the docstring names the invariant it violated there and the
defect of issue 9 it shows. A schedule runs on a freshly power-cycled virtual board with every
invariant of invariants.py checked after every step, so a test here fails on any violation, not
only on the one it was kept for.

Steps (schedule.py): ("acquire", runtime, credential, resource, mode, wait_ms), ("heartbeat",
runtime), ("release", runtime, k), ("command", runtime, k), ("silence", runtime, disconnect),
("revoke", credential), ("expire",), ("fault", direction, fault, message, count, delay),
("kill_engine",), ("power_cycle",), ("churn", runtime, n), ("wait", seconds), the operator's
("take", resource), ("op_act", resource), ("hand_back", resource, credential), ("op_release",
resource), ...
Credentials: A and C are rtA's (C expires at `expire`), B and the ticket T are rtB's.
"""

from .schedule import run


def play(steps):
    r = run(steps)
    assert r.violation is None, "%s\n%s" % (r.violation, "\n".join(r.trace[-40:]))
    return r


def test_defect_1_an_engine_restarted_in_front_of_a_running_board_keeps_heartbeating_sessions():
    """healthy_session_ended (lease_expired): the first engine ran long enough to count its
    board heartbeats past the lease; the new engine's counter starts again from 0, the board
    takes its heartbeats as frozen, and the motor of a runtime that heartbeats is cut."""
    play([
        ("wait", 1.5),
        ("wait", 1.5),
        ("kill_engine",),
        ("acquire", "rtA", "A", "motor_left", "write", 0),
        ("wait", 1.5),
    ])


def test_defect_1_after_two_restarts_too():
    play([
        ("acquire", "rtA", "A", "motor_left", "write", 0),
        ("wait", 1.5),
        ("kill_engine",),
        ("wait", 1.5),
        ("kill_engine",),
        ("acquire", "rtB", "B", "led", "write", 0),
        ("wait", 1.5),
        ("command", "rtB", 0),
    ])


def test_defect_2_suspension_is_enforced_after_17_suspended_sessions_were_released():
    """actuation_accepted (suspended before and after): the board's suspension table was freed
    only by END_SESSION; 17 sessions suspended and then released filled it, and the 18th
    suspended session drove the motor."""
    play([
        ("churn", "rtB", 17),
        ("acquire", "rtA", "A", "motor_left", "write", 0),
        ("silence", "rtA", False),
        ("command", "rtA", 0),
    ])


def test_defect_3_a_late_duplicate_acquire_leaves_no_orphan_grant():
    """orphan_grant: the ACQUIRE is held on the line past the host's retry (answered from the
    board's replay cache), the session is released, and when the late copy arrives the cache
    has moved on: the board grants it again, for nobody, and the blanket heartbeat keeps it."""
    play([
        ("fault", "to_board", "delay", "ACQUIRE", 1, 1.5),
        ("acquire", "rtA", "A", "led", "write", 0),
        ("release", "rtA", 0),
        ("wait", 1.5),
    ])


def test_defect_4_a_queued_request_whose_descriptor_is_revoked_while_it_waits_is_not_granted():
    """grant_for_invalid_credential: B waits for the motor with wait_ms; B's descriptor is
    revoked (the engine has read the revocation); A releases; B was answered `granted`."""
    play([
        ("acquire", "rtA", "A", "motor_left", "write", 0),
        ("acquire", "rtB", "B", "motor_left", "write", 1500),
        ("revoke", "B"),
        ("release", "rtA", 0),
    ])


def test_defect_4_a_queued_request_whose_ticket_expires_while_it_waits_is_not_granted():
    """grant_for_invalid_credential, by the wall clock: the ticket T expires while its request
    waits behind A."""
    play([
        ("acquire", "rtA", "A", "led", "write", 0),
        ("acquire", "rtB", "T", "led", "write", 1500),
        ("expire",),
        ("release", "rtA", 0),
    ])


def test_defect_10_a_board_that_dies_under_the_engine_is_noticed_and_logged():
    """dead_board_unnoticed / dead_board_unlogged: the board process is killed; a heartbeat
    period later the engine still called the session active, and its log said nothing.
    (Shrunk from seed 705245519393 to its one step, with a session added so both show.)"""
    play([
        ("acquire", "rtA", "A", "motor_left", "write", 0),
        ("power_cycle",),
    ])


def test_defect_3_a_killed_engines_queued_request_granted_after_the_restart_leaves_no_orphan():
    """orphan_grant (shrunk from seed 9025, 10 steps): A waits on the board for the motor B
    holds; the engine is killed; the new engine releases B's grant at start, the board serves
    the dead engine's waiter, and nobody owns that grant (the heartbeat kept it)."""
    play([
        ("acquire", "rtB", "B", "motor_left", "write", 0),
        ("acquire", "rtA", "A", "motor_left", "write", 1500),
        ("kill_engine",),
    ])


def test_defect_2_churn_alone_shows_it():
    """actuation_accepted: the same defect from one generated step: of 18 sessions suspended
    and then released, the last one's command was accepted although it was suspended."""
    play([
        ("churn", "rtB", 18),
    ])


def test_session_8_a_killed_engines_hand_back_wait_writes_nothing_after_it():
    """audit_chain (seed 265853870556, 29 steps shrunk to 4; the first schedules with operator
    steps): the operator hands the led back to a Fay that has not asked yet, and the engine is
    killed. The hand-back's wait was a task of the control room's, not of the engine's, so it
    outlived the engine and, at its timeout, appended to the log the next engine was writing.
    It is an engine task now (Engine.spawn), ended with the engine."""
    play([
        ("take", "led"),
        ("hand_back", "led", "T"),
        ("kill_engine",),
        ("wait", 1.5),
    ])
