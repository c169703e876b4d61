# The agent's view of each resource (Control.r_state) is what locks, actuation and reports use:
# a driver whose poll() raises counts as faulted, whatever its own attributes say. Kept apart
# from mp_agent.py so that its 64 KB test does not carry these tests' bytecode. RES_INFO_R's
# payload: index, class, modes, state.
from agent_rig import Rig
from capshared import wire as W
from capshared.errors import E_DEV_STALE_EPOCH, E_RESOURCE_UNAVAILABLE
from capshared.limits import MODE_WRITE, RES_ABSENT, RES_FAULT, RES_PRESENT


def _motors(rig):
    names = [r.name for r in rig.agent.resources]
    return names.index("motor_left"), names.index("motor_right")


def test_a_driver_whose_poll_raises_is_faulted_and_the_loop_goes_on():
    rig = Rig()
    ml, mr = _motors(rig)
    ctl = rig.agent.control
    assert rig.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R
    assert rig.acquire(mr, MODE_WRITE, 6) == W.ACQUIRE_R
    assert rig.actuate(ml, 5, 1, 100, 0) == W.ACTUATE_R
    motor = rig.agent.resources[ml]
    epoch = ctl.g.epoch[ctl.g.find(ml, 5)]

    def broken():
        raise OSError(5)   # an I2C read that fails, say

    motor.poll = broken
    rig.heartbeat(1)                           # the loop ticks: poll() raises
    assert ctl.r_state[ml] == RES_FAULT
    assert ctl.g.find(ml, 5) < 0               # the grant ended
    assert motor.speed == 0                    # and the motor went to its safe state
    assert motor.state == RES_PRESENT          # though the driver's own attribute says present
    assert rig.acquire(ml, MODE_WRITE, 5) == W.ERROR and rig.line.last_error == E_RESOURCE_UNAVAILABLE
    # Actuation under the ended grant's epoch is refused, and nothing reaches the driver.
    e = rig.begin(W.ACTUATE)
    e.u8(ml)
    e.u32(5)
    e.u32(epoch)
    e.u8(1)
    e.u8(100)
    e.u8(0)
    assert rig.send() == W.ERROR and rig.line.last_error == E_DEV_STALE_EPOCH
    assert motor.speed == 0
    # The resource is reported faulted.
    e = rig.begin(W.RES_INFO)
    e.u8(ml)
    assert rig.send() == W.RES_INFO_R and rig.line.u8(3) == RES_FAULT
    # The other motor is still served.
    assert rig.actuate(mr, 6, 1, 50, 0) == W.ACTUATE_R
    assert rig.agent.running


def test_locks_and_actuation_follow_the_agents_view_not_the_drivers_attribute():
    rig = Rig()
    ml, mr = _motors(rig)
    ctl = rig.agent.control
    assert rig.acquire(mr, MODE_WRITE, 6) == W.ACQUIRE_R
    # The agent has seen motor_left absent and motor_right faulted; the drivers' attributes
    # still say present (a driver that reports through poll() only).
    ctl.r_state[ml] = RES_ABSENT
    ctl.r_state[mr] = RES_FAULT
    for k in (ml, mr):
        rig.agent.resources[k].poll = (lambda st: lambda: st)(ctl.r_state[k])
    assert rig.agent.resources[ml].state == RES_PRESENT
    assert rig.acquire(ml, MODE_WRITE, 5) == W.ERROR and rig.line.last_error == E_RESOURCE_UNAVAILABLE
    assert rig.actuate(mr, 6, 1, 50, 0) == W.ERROR and rig.line.last_error == E_RESOURCE_UNAVAILABLE
    # Resource info reports the agent's view too.
    e = rig.begin(W.RES_INFO)
    e.u8(ml)
    assert rig.send() == W.RES_INFO_R and rig.line.u8(3) == RES_ABSENT


def test_a_driver_whose_poll_answers_nonsense_is_faulted():
    rig = Rig()
    ml, mr = _motors(rig)
    ctl = rig.agent.control
    for answer in (None, 7, -1, "present"):
        rig.agent.resources[ml].poll = (lambda a: lambda: a)(answer)
        rig.heartbeat(1)                                         # the loop polls after each frame
        assert rig.acquire(ml, MODE_WRITE, 5) == W.ERROR and rig.line.last_error == E_RESOURCE_UNAVAILABLE
        assert ctl.r_state[ml] == RES_FAULT and rig.agent.running and rig.agent.errors == 0
        rig.agent.resources[ml].poll = lambda: RES_PRESENT      # fixed: granted again
        rig.heartbeat(1)
        assert ctl.r_state[ml] == RES_PRESENT
        assert rig.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R
        rig.release(ml, 5)


def test_a_driver_whose_safe_raises_cannot_keep_the_others_driving():
    # Suspending a session puts every resource it drives in safe hold; a driver whose safe()
    # raises (against the driver contract) used to stop that loop at itself and answer
    # E_INTERNAL, leaving the session's other motors running. Every path to the safe state
    # goes through one guarded call now (Grants.safe).
    rig = Rig()
    ml, mr = _motors(rig)
    assert rig.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R
    assert rig.acquire(mr, MODE_WRITE, 5) == W.ACQUIRE_R
    assert rig.actuate(mr, 5, 1, 100, 0) == W.ACTUATE_R

    def broken():
        raise OSError(5)

    rig.agent.resources[ml].safe = broken
    e = rig.begin(W.SUSPEND)
    e.u32(5)
    e.u8(1)
    assert rig.send() == W.SUSPEND_R and rig.line.u8(5) == 2       # both grants held back
    assert rig.agent.resources[mr].speed == 0 and rig.agent.errors == 0
