"""The virtual cable: a null-modem between the host's pty and the virtual board's pty.

It copies bytes both ways on one thread and is where every reliability test injects its
faults: pacing at a baud rate, and per-direction drop, corrupt, duplicate and delay of whole
frames (counted at the 0x00 delimiter), plus disconnect/reconnect of the whole line.

Faults act on frames rather than bytes because that is what a test reasons about ("the ack of
this acquire is lost"); byte-level garbage can be injected with `inject_bytes`.
"""

import os
import select
import threading
import time

TO_BOARD = "to_board"
TO_HOST = "to_host"
FAULTS = ("drop", "corrupt", "duplicate", "delay")


class _Direction:
    def __init__(self, src, dst, name):
        self.src = src
        self.dst = dst
        self.name = name
        self.frame = bytearray()       # the frame being collected (faults need whole frames)
        self.pending = []              # [fault, count, arg]
        self.held = []                 # (release_time, bytes) for delayed frames
        self.line_free_at = 0.0        # pacing: when the line finishes the bytes already sent
        self.bytes = 0
        self.frames = 0
        self.dropped = 0
        self.lock = threading.Lock()


class VirtualCable:
    """Joins two pty masters. Thread-safe controls; `close()` stops the thread.

    baud: None for as fast as the ptys go, else bytes are paced at 10 bits per byte.
    """

    def __init__(self, host_fd, board_fd, baud=None, clock=time.monotonic):
        self.baud = baud
        self.clock = clock
        self.connected = True
        self._dirs = {
            TO_BOARD: _Direction(host_fd, board_fd, TO_BOARD),
            TO_HOST: _Direction(board_fd, host_fd, TO_HOST),
        }
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="virtual-cable", daemon=True)
        self.trace = None  # optional callable(direction, bytes): a readable record of the line

    def start(self):
        self._thread.start()
        return self

    # ---- controls -------------------------------------------------------------------------
    def inject(self, direction, fault, count=1, arg=None):
        """Apply `fault` to the next `count` frames going `direction`.

        drop: the frame vanishes. corrupt: one bit of the frame's middle byte flips.
        duplicate: the frame is sent twice. delay: the frame is held `arg` seconds.
        """
        if fault not in FAULTS:
            raise ValueError("unknown fault %r (known: %s)" % (fault, ", ".join(FAULTS)))
        d = self._dirs[direction]
        with d.lock:
            d.pending.append([fault, count, arg])

    def inject_bytes(self, direction, data):
        """Put raw bytes on the line (line noise, a bare Ctrl-C)."""
        d = self._dirs[direction]
        with d.lock:
            self._emit(d, bytes(data))

    def disconnect(self):
        """Cut the line: bytes in either direction are lost until reconnect()."""
        self.connected = False

    def reconnect(self):
        for d in self._dirs.values():
            with d.lock:
                d.frame.clear()
        self.connected = True

    def stats(self, direction):
        d = self._dirs[direction]
        return {"bytes": d.bytes, "frames": d.frames, "dropped": d.dropped}

    def close(self):
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ---- the copying thread ---------------------------------------------------------------
    def _run(self):
        fds = {d.src: d for d in self._dirs.values()}
        while not self._stop.is_set():
            timeout = self._next_release()
            try:
                ready, _, _ = select.select(list(fds) + [self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return
            for fd in ready:
                if fd == self._wake_r:
                    os.read(fd, 64)
                    continue
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    # The other end went away (process exit): nothing more to copy from it.
                    del fds[fd]
                    if not fds:
                        return
                    continue
                d = fds[fd]
                if not self.connected:
                    d.dropped += len(data)
                    continue
                with d.lock:
                    self._take(d, data)
            self._release_held()

    def _take(self, d, data):
        d.bytes += len(data)
        if not d.pending:
            # Fast path: no fault armed, forward as is (frames still counted).
            d.frames += data.count(0)
            d.frame.clear()
            self._emit(d, data)
            return
        start = 0
        for i, b in enumerate(data):
            if b == 0:
                d.frame += data[start:i + 1]
                start = i + 1
                d.frames += 1
                self._frame_done(d, bytes(d.frame))
                d.frame.clear()
        d.frame += data[start:]

    def _frame_done(self, d, frame):
        if not d.pending:
            self._emit(d, frame)
            return
        p = d.pending[0]
        fault, arg = p[0], p[2]
        p[1] -= 1
        if p[1] <= 0:
            d.pending.pop(0)
        if fault == "drop":
            d.dropped += 1
        elif fault == "corrupt":
            b = bytearray(frame)
            mid = len(b) // 2
            b[mid] ^= 0x10 if b[mid] not in (0x10, 0x13) else 0x01  # never forge a 0x00 or 0x03
            self._emit(d, bytes(b))
        elif fault == "duplicate":
            self._emit(d, frame + frame)
        elif fault == "delay":
            d.held.append((self.clock() + float(arg or 0.5), frame))

    def _emit(self, d, data):
        if self.baud:
            now = self.clock()
            start = max(now, d.line_free_at)
            d.line_free_at = start + len(data) * 10.0 / self.baud
            wait = d.line_free_at - now
            if wait > 0:
                time.sleep(wait)
        try:
            os.write(d.dst, data)
        except OSError:
            pass

    def _next_release(self):
        soonest = None
        for d in self._dirs.values():
            for t, _ in d.held:
                soonest = t if soonest is None else min(soonest, t)
        if soonest is None:
            return 0.5
        return max(0.0, soonest - self.clock())

    def _release_held(self):
        now = self.clock()
        for d in self._dirs.values():
            with d.lock:
                due = [h for h in d.held if h[0] <= now]
                if due:
                    d.held = [h for h in d.held if h[0] > now]
                    for _, frame in due:
                        self._emit(d, frame)
