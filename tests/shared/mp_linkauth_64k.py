# capshared.linkauth in a 64 KB heap (the board's budget), as deployed (precompiled): what
# loading the module and one LinkAuth with its key cost, and that seal and verify allocate
# nothing there; then beside the whole agent with the device tests' rig (agent_rig.py).
# test_linkauth.py runs these and reports the figures.
import gc

import micropython
# Folded by the build (capwarden.sim.inline), as in the agent: this import loads nothing.
from capshared.linkauth import CURRENT, DIR_TO_BOARD, DIR_TO_HOST, OK, PENDING, TAG_SIZE

KEY = b"0123456789abcdef"


def _costs():
    gc.collect()
    a0 = gc.mem_alloc()
    free0 = gc.mem_free()
    from capshared import linkauth as la
    gc.collect()
    a1 = gc.mem_alloc()
    board = la.LinkAuth(DIR_TO_HOST)
    board.set_key(KEY)
    gc.collect()
    a2 = gc.mem_alloc()
    print("LINKAUTH-RAM module=%d instance=%d before=%d free_before=%d" % (a1 - a0, a2 - a1, a0, free0))
    return la, board, a1 - a0, a2 - a1


def test_64k_linkauth_costs_in_a_fresh_heap():
    la, board, module, instance = _costs()
    host = la.LinkAuth(DIR_TO_BOARD)
    host.set_key(KEY)
    nonce = bytearray(8)
    board.board_nonce(nonce, 0)
    board.begin(nonce, 0, nonce, 0, 5, PENDING)
    host.begin(nonce, 0, nonce, 0, 5, CURRENT)
    frame = bytearray(32)
    tag = bytearray(TAG_SIZE)
    gc.collect()
    b0 = gc.mem_alloc()
    ok = 0
    micropython.heap_lock()
    try:
        for i in range(10000):
            frame[5] = i & 0xFF
            c = host.seal(frame, 0, 32, tag, 0)
            ok += board.verify(frame, 0, 32, c, tag, 0) == OK
            c = board.seal(frame, 0, 32, tag, 0)
            ok += host.verify(frame, 0, 32, c, tag, 0) == OK
    finally:
        micropython.heap_unlock()
    b1 = gc.mem_alloc()
    print("LINKAUTH-HEAP before=%d after=%d" % (b0, b1))
    assert ok == 20000 and b1 == b0 and board.sessions == 1
    # Budgets on the 64-bit unix port (a 32-bit board spends less): a change that makes
    # the module much larger must say why.
    assert module < 6400 and instance < 1600, (module, instance)


def test_64k_linkauth_ram_beside_the_agent():
    # The signed agent at rest (its LinkAuth keyed, in session with the rig after HELLO and one frame), then a
    # second LinkAuth with its key: both fit in the agent's 64 KB (the heap is 64 KB plus the
    # rig's own cost, mpharness.budget_heap).
    from agent_rig import Rig

    gc.collect()
    rig = Rig()
    auth = rig.agent.link.auth
    rig.heartbeat(1)            # the first frame under the proposed session makes it current
    assert auth.enc is not None and auth.ok[CURRENT] and rig.agent.errors == 0
    la, other, module, instance = _costs()
    assert module < 256, ("the agent has loaded capshared.linkauth already", module)
    assert instance < 1600, instance
    print("free beside the signed agent:", gc.mem_free())
