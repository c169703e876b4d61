"""Liveness settings: heartbeat interval and timeout per resource class.

Defaults 1 s and 5 s, as MAVLink's heartbeat. The rules themselves (AND rule for expiry,
suspension while the connection is up) are applied in Engine.sweep().
"""

DEFAULT = (1000, 5000)


class LivenessPolicy:
    def __init__(self, per_class=None, default=DEFAULT):
        self.default = default
        self.per_class = dict(per_class or {})
        for cls, (interval, timeout) in list(self.per_class.items()) + [("default", default)]:
            if not (50 <= interval < timeout <= 600000):
                raise ValueError("liveness for %s: need 50 <= interval < timeout <= 600000 ms" % cls)

    def for_class(self, cls):
        return self.per_class.get(cls, self.default)

    @staticmethod
    def parse(items):
        """['motor=500/2000', 'default=1000/5000'] -> LivenessPolicy. Raises ValueError."""
        per = {}
        for it in items or ():
            cls, sep, rest = it.partition("=")
            a, sep2, b = rest.partition("/")
            if not sep or not sep2 or not a.isdigit() or not b.isdigit():
                raise ValueError("--liveness takes CLASS=INTERVAL_MS/TIMEOUT_MS, e.g. motor=500/2000 (got %r)" % it)
            per[cls] = (int(a), int(b))
        default = per.pop("default", DEFAULT)
        return LivenessPolicy(per, default)
