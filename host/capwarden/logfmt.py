"""One log record, one line: the format of capwarden's log lines and of their structured fields.

    2026-12-01T12:00:00.123Z INFO capwarden.engine event=connected runtime=rt1 peer=127.0.0.1:50122

Control characters (a line break in a peer's header, an exception's own text) are escaped, so
no input can forge a second log line. Configured by capwarden.cli.logsetup.
"""

import logging
import time

_CONTROL = {i: "\\x%02x" % i for i in range(32)}
_CONTROL.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 127: "\\x7f", 0x85: "\\x85",
                 0x2028: "\\u2028", 0x2029: "\\u2029"})


def one_line(text):
    """`text` with every control character escaped: it can never become two lines."""
    return str(text).translate(_CONTROL)


class OneLineFormatter(logging.Formatter):
    def format(self, record):
        t = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % (record.msecs,)
        text = "%s %s %s %s" % (stamp, record.levelname, record.name, one_line(record.getMessage()))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += " exc=%s" % one_line("%s: %s" % (type(exc).__name__, exc))
        return text


def kv(**fields):
    """'key=value key2="a value"' for a structured log line (values escaped, quoted if needed)."""
    out = []
    for k, v in fields.items():
        s = one_line(v)
        if not s or any(c in s for c in ' "='):
            s = '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')
        out.append("%s=%s" % (k, s))
    return " ".join(out)
