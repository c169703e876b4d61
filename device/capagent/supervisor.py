# The watchdog supervisor. A hardware watchdog cannot be stopped once started, so it is armed
# only when the host asks (CONFIG CFG_WATCHDOG_MS). After that the agent's loop feeds it on
# every tick, but only after health checks pass: a loop that stalls (a hung driver, a GC storm)
# or a heap that runs out stops the feeding, and the watchdog resets the board. After a reset
# nothing is granted and the host learns of it from the new boot id (faults.md 67).
import gc

from micropython import const

_MIN_TIMEOUT_MS = const(100)
_MIN_FREE_HEAP = const(1024)


class Supervisor:
    def __init__(self, board):
        self.board = board
        self.wdt = None
        self.timeout = 0

    def arm(self, timeout_ms):
        # True when armed (or already armed with this timeout); False when it cannot be.
        if self.wdt is not None:
            return timeout_ms == self.timeout
        if timeout_ms < _MIN_TIMEOUT_MS:
            return False
        try:
            make = getattr(self.board, "watchdog", None)
            if make is not None:
                self.wdt = make(timeout_ms)
            else:
                import machine

                self.wdt = machine.WDT(timeout=timeout_ms)
        except Exception:
            return False
        self.timeout = timeout_ms
        return True

    def tick(self):
        # A loop that stalls never gets here, so the watchdog is not fed and resets the board.
        if self.wdt is None:
            return
        if gc.mem_free() < _MIN_FREE_HEAP:
            return  # unhealthy: stop feeding and let the watchdog reset the board
        self.wdt.feed()
