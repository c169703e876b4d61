"""The chaos rig: the real virtual board, a cable whose faults can target one message type, and
an Engine assembled as `capwarden serve` assembles it, with injected clocks.

One VirtualBoard serves every schedule of a pytest process (`shared_board()`); between
schedules it is power-cycled (`VirtualBoard.restart()`, about half a second: the files stay, all
RAM state goes), so a schedule never inherits grants, heartbeat counters or table entries from
the one before and a failing schedule replays the same way on its own.

Clocks: the engine's monotonic clock is real monotonic time plus an offset the schedule can
jump (a runtime that stops heartbeating for longer than its timeout, without waiting that
long); its wall clock is real time plus an offset (credential expiry). The board keeps real
time: its leases run out for real, so the board heartbeats the engine sends in real time are
what keeps them.
"""

import collections
import os
import shutil
import subprocess
import tempfile
import threading
import time

from capshared import codec
from capwarden.credentials import Terminal
from capwarden.credentials.ids import new_fay_id
from capwarden.credentials.issue import (SigningKey, descriptor_payload, sign_descriptor, sign_revocation,
                                         sign_ticket, ticket_claims)
from capwarden.engine.liveness import LivenessPolicy
from capwarden.sim import cable as cable_mod

# Timings of the rig. Short leases so a schedule sees leases run out within a second or two;
# generous against the 2-core machine (a board heartbeat every 0.2 s renews a 1 s lease).
LEASE_MS = 1000
BOARD_HB_MS = 200
LINK_TIMEOUT = 0.3          # the host's per-try timeout; a retry goes out after this
LINK_RETRIES = 2
LIVENESS = (1000, 5000)     # runtime heartbeat interval / timeout (ms), every class
RUNTIME_HB_S = 0.25         # how often a healthy runtime heartbeats (real seconds)
JUMP_S = 5.5                # a silence: the engine clock jumps past the heartbeat timeout
SETTLE_S = 0.12             # after each step, before the invariants are checked
# "Within one heartbeat period": a board grant nobody owns, or an engine session whose grant
# the board no longer holds, must be gone after one board heartbeat period plus one request's
# full retry time; 0.5 s more for a loaded machine.
GRACE_S = BOARD_HB_MS / 1000.0 + LINK_TIMEOUT * (LINK_RETRIES + 1) + 0.5
# A dead board must be noticed within the same bound.
DETECT_S = GRACE_S + 0.5
# A request must have its final answer by its own wait plus this (link retries, a handover's
# board move, a loaded machine).
ANSWER_SLACK_S = 8.0

RESOURCES = ("motor_left", "led", "gps")
RUNTIMES = ("rtA", "rtB")
# credential key -> (runtime that uses it, fay attribute, kind, lifetime in seconds)
CREDENTIALS = {
    "A": ("rtA", "A", "descriptor", 10 ** 6),
    "C": ("rtA", "C", "descriptor", 900),      # expires at the first `expire` step
    "B": ("rtB", "B", "descriptor", 10 ** 6),
    "T": ("rtB", "B", "ticket", 900),          # a ticket for B, also short-lived
}
EXPIRE_STEP_S = 1000


def policy():
    return LivenessPolicy(default=LIVENESS)


# ---- the cable ------------------------------------------------------------------------------

def frame_name(frame):
    """The message name of one frame as it crosses the cable, or None (noise, a bare delimiter).

    Read as a signed frame first (counter and tag after the payload: every board since protocol
    3), then as an unsigned one. Read without the trailer, a signed frame of a fixed-size message
    is the wrong size and has no name: until session 8 every targeted fault but those on ACTUATE
    and ACTUATE_R (variable size) matched nothing, and the schedules ran with fewer faults than
    they said."""
    frame = frame if frame.endswith(b"\x00") else frame + b"\x00"
    for trailer in (True, False):
        for f in codec.StreamDecoder(trailer=trailer).feed(frame):
            return f.name
    return None


# Targeted faults: how many were aimed and how many frames they hit (the chaos report prints
# both, so a harness whose faults stop matching shows it), and the same per message type
# ((name, "aimed") and (name, "hit"); a fault aimed at several types counts under each).
TARGETED = collections.Counter()
TARGETED_BY_TYPE = collections.Counter()


class TargetedCable(cable_mod.VirtualCable):
    """The virtual cable, plus faults aimed at one message type ("the ACQUIRE is delayed"), so a
    schedule says which frame a fault hits instead of whichever the background heartbeats put
    on the line first. Untargeted faults behave exactly as the base cable's."""

    def inject_matching(self, direction, fault, names, count=1, arg=None):
        if fault not in cable_mod.FAULTS:
            raise ValueError(fault)
        d = self._dirs[direction]
        with d.lock:
            d.pending.append([fault, count, arg, frozenset(names)])
        TARGETED["aimed"] += count
        for n in names:
            TARGETED_BY_TYPE[n, "aimed"] += count

    def clear_faults(self):
        for d in self._dirs.values():
            with d.lock:
                d.pending.clear()

    def armed(self):
        return any(d.pending for d in self._dirs.values())

    def _frame_done(self, d, frame):
        if d.pending and len(d.pending[0]) < 4:
            return super()._frame_done(d, frame)         # an untargeted fault: the base cable's
        name = None
        for k, p in enumerate(d.pending):
            if len(p) < 4:
                continue
            if name is None:
                name = frame_name(frame)
            if name in p[3]:
                TARGETED["hit"] += 1
                TARGETED_BY_TYPE[name, "hit"] += 1
                p[1] -= 1
                if p[1] <= 0:
                    d.pending.pop(k)
                saved, d.pending = d.pending, [[p[0], 1, p[2]]]
                try:
                    super()._frame_done(d, frame)         # the base cable applies it
                finally:
                    d.pending = saved
                return None
        self._emit(d, frame)
        return None


# ---- the board ------------------------------------------------------------------------------

class SharedBoard:
    """One VirtualBoard for the whole pytest process, on the targeted cable."""

    def __init__(self):
        self.vb = None
        self.fresh = False
        self.lock = threading.Lock()

    def _patched(self, fn):
        import capwarden.sim.board as board_mod

        old = board_mod.VirtualCable
        board_mod.VirtualCable = TargetedCable
        try:
            return fn()
        finally:
            board_mod.VirtualCable = old

    def ensure(self):
        from capwarden.sim import VirtualBoard

        if self.vb is None:
            self.vb = VirtualBoard()
            self._patched(self.vb.start)
            self.fresh = True
        return self.vb

    def reset(self):
        """A power cycle unless the board has just booted: no state from the last schedule."""
        vb = self.ensure()
        if not self.fresh or not vb.alive():
            self._patched(vb.restart)
        self.fresh = False
        return vb

    def power_cycle(self):
        vb = self.ensure()
        self._patched(vb.restart)
        return vb

    def reboot_in_place(self):
        """The board resets and the host's port stays (a reset button, a brown-out, a watchdog):
        the board process is killed and started again on the same flash, the cable re-joined to
        the same host pty. The agent starts by itself (as main.py does on a real board) and
        announces its new boot id to the engine that is still running. RAM state is lost."""
        import capwarden.sim.board as board_mod

        vb = self.ensure()
        if vb.cable:
            vb.cable.close()
            vb.cable = None
        if vb.proc is not None and vb.proc.poll() is None:
            os.killpg(vb.proc.pid, 9)
            vb.proc.wait(timeout=5)
        os.close(vb._fds[0])
        bm, bs = board_mod._raw_pty()
        vb.proc = subprocess.Popen([board_mod.micropython_exe(), "-X", "heapsize=" + vb.heapsize, "-c", "import main"],
                                   stdin=bs, stdout=bs, stderr=bs, cwd=vb.fs_dir, close_fds=True,
                                   start_new_session=True, preexec_fn=board_mod._die_with_parent,
                                   env=dict(os.environ, CAPWARDEN_SIM_GRANTS=str(vb.grants or 16)))
        os.close(bs)
        vb._fds[0] = bm
        vb.cable = TargetedCable(vb._fds[1], bm).start()
        return vb

    def stop(self):
        if self.vb is not None:
            self.vb.stop()
            self.vb = None


_BOARD = SharedBoard()


def shared_board():
    return _BOARD


# ---- credentials ----------------------------------------------------------------------------

class Creds:
    """A store with one issuer key and the schedule's credentials (see CREDENTIALS)."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="capwarden-chaos-")
        self.store = os.path.join(self.folder, "store")
        t = Terminal.init(self.store)
        self.tid = t.terminal_id
        now = int(time.time())
        self.key = SigningKey.generate("ed25519", "acme-1", "issuer:acme")
        t.import_key(self.key.public_json(now - 100))
        self.fays = {"A": new_fay_id(), "B": new_fay_id(), "C": new_fay_id()}
        grants = [{"resource_pattern": self.tid + "/sim/motor_left", "modes": ["read", "write"]},
                  {"resource_pattern": self.tid + "/sim/led", "modes": ["read", "write"]},
                  {"resource_pattern": self.tid + "/sim/gps", "modes": ["read"]}]
        self.items = {}     # key -> dict(fay_id, credential, id, not_after)
        for key, (_rt, fay, kind, life) in CREDENTIALS.items():
            fay_id = self.fays[fay]
            if kind == "descriptor":
                data = sign_descriptor(self.key, descriptor_payload(fay_id, self.tid, grants, "issuer:acme",
                                                                    now - 60, now + life))
                did = t.import_descriptor(data)
                cred = {"type": "descriptor_ref", "descriptor_id": did}
                cid = did
            else:
                claims = ticket_claims(fay_id, self.tid, grants, "issuer:acme", now - 60, now + life)
                cred = {"type": "ticket", "ticket": sign_ticket(self.key, claims)}
                cid = claims["jti"]
            self.items[key] = {"fay_id": fay_id, "credential": cred, "id": cid, "not_after": now + life}
        self.audit_path = os.path.join(self.folder, "audit.log")

    def res(self, name):
        return self.tid + "/sim/" + name

    def revoke(self, key, now):
        """Import a revocation of credential `key` into the store, as `capwarden revocations
        import` in another process would (the engine picks it up from the store's files)."""
        t = Terminal.open(self.store)
        t.import_revocation(sign_revocation(self.key, self.items[key]["id"], now), now)

    def cleanup(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def chaos_mode():
    """`make chaos`: CAPWARDEN_CHAOS=1, or the chaos hypothesis profile asked for by name."""
    return os.environ.get("CAPWARDEN_CHAOS") == "1" or os.environ.get("HYPOTHESIS_PROFILE") == "chaos"
