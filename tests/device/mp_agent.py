# The whole agent, driven through an in-memory line under MicroPython: the frame path
# allocates nothing, and the heap stays flat over 10,000 lock/heartbeat/release cycles with
# 16 grants held on 8 resources in a 64 KB heap (issue 4, item 9), also on the paths issue 9
# added. The rig and the requests are shared with the other device tests (agent_rig.py).
import gc

import micropython
from agent_rig import Rig, config, hold_fifteen, new_paths
from capshared import wire as W
from capshared.limits import MODE_WRITE


def _cycle(rig, res, k):
    rig.acquire(res, MODE_WRITE, 7)
    rig.heartbeat(k)
    rig.release(res, 7)


def test_frame_path_allocates_nothing():
    rig = Rig()
    gim = hold_fifteen(rig)
    for k in range(1, 20):  # warm up: first calls may intern names or cache poll state
        _cycle(rig, gim, k)
    before = rig.line.frames
    micropython.heap_lock()
    try:
        for k in range(20, 520):
            _cycle(rig, gim, k)
    finally:
        micropython.heap_unlock()
    assert rig.agent.errors == 0 and rig.line.errors == 0
    assert rig.line.frames - before == 3 * 500


def test_actuation_path_allocates_nothing():
    rig = Rig()
    names = [r.name for r in rig.agent.resources]
    ml = names.index("motor_left")
    assert rig.acquire(ml, MODE_WRITE, 5) == W.ACQUIRE_R
    rig.actuate(ml, 5, 1, 100, 0)
    micropython.heap_lock()
    try:
        for k in range(300):
            rig.actuate(ml, 5, 1, k & 0xFF, 0)
    finally:
        micropython.heap_unlock()
    assert rig.line.errors == 0 and rig.agent.resources[ml].speed == 299 & 0xFF


def test_64k_sixteen_grants_and_flat_heap_over_10000_cycles():
    gc.collect()
    rig = Rig()
    gim = hold_fifteen(rig)
    rig.acquire(gim, MODE_WRITE, 7)
    assert rig.agent.control.g.count() == 16  # 8 resources, 16 concurrent grants
    rig.release(gim, 7)
    for k in range(1, 50):
        _cycle(rig, gim, k)
    gc.collect()
    before = gc.mem_alloc()
    for k in range(50, 10050):
        _cycle(rig, gim, k)
    gc.collect()
    after = gc.mem_alloc()
    assert rig.agent.errors == 0 and rig.line.errors == 0
    assert after <= before, "heap grew from %d to %d" % (before, after)
    print("heap in use with 15 grants held:", after, "free:", gc.mem_free())


def test_64k_issue9_paths_flat_heap_over_10000_cycles():
    gc.collect()
    r = Rig()
    gim = hold_fifteen(r)
    config(r, W.CFG_FAILSAFE_DELAY_MS, 100)
    for k in range(1, 30):
        new_paths(r, gim, 7, k)
    errors = r.line.errors
    gc.collect()
    before = gc.mem_alloc()
    for k in range(30, 630):                    # 600 rounds of 17 frames: over 10,000 cycles
        new_paths(r, gim, 7, k)
    gc.collect()
    after = gc.mem_alloc()
    assert r.agent.errors == 0
    assert r.line.errors - errors == 600        # exactly the late copies
    assert after <= before, "heap grew from %d to %d" % (before, after)
    print("heap in use with 15 grants held:", after, "free:", gc.mem_free())
