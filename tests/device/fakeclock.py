# The clock the device tests move by hand: the three methods of MicroPython's time module the
# agent uses (ticks_ms, ticks_diff, ticks_add), without the wrap.


class Clock:
    def __init__(self, t=5000):
        self.t = t

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, d):
        return a + d
