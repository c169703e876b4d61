"""Argument types and id checks of the command line: a bad value is a usage error (exit 2),
refused by argparse at once, before anything is started; an id's error names its format
with an example (supplement S1)."""

from capwarden.errors import UsageError


def _int_in(lo, hi, what):
    import argparse

    def parse(text):
        try:
            v = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be a whole number (got %r)" % (what, text)) from None
        if not lo <= v <= (hi if hi is not None else v):
            raise argparse.ArgumentTypeError("%s must be %s (got %d)" % (
                what, ("%d..%d" % (lo, hi)) if hi is not None else "at least %d" % lo, v))
        return v
    parse.__name__ = what
    return parse


def int_range(lo, hi=None, what="a number"):
    """An argparse type: an int in lo..hi (hi None: no upper bound)."""
    return _int_in(lo, hi, what)


def nonneg_float(what="a number of seconds"):
    import argparse
    import math

    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%s must be a number (got %r)" % (what, text)) from None
        if not math.isfinite(v) or v < 0:
            raise argparse.ArgumentTypeError("%s must be 0 or more (got %r)" % (what, text))
        return v
    parse.__name__ = what
    return parse


def positive_float(what="a number"):
    import argparse

    base = nonneg_float(what)

    def parse(text):
        v = base(text)
        if v <= 0:
            raise argparse.ArgumentTypeError("%s must be more than 0 (got %r)" % (what, text))
        return v
    parse.__name__ = what
    return parse


baud_rate = int_range(1, 10_000_000, "a baud rate")


def heap_size(text):
    """An argparse type for a MicroPython heap size: bytes, or a number with K or M (64K, 2M)."""
    import argparse

    t = text.strip().upper()
    mult = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    digits = t[:-1] if t[-1:] in ("K", "M") else t
    if not digits.isdigit() or not 8 * 1024 <= int(digits) * mult <= 64 * 1024 * 1024:
        raise argparse.ArgumentTypeError("a heap size is bytes or a number with K or M, 8K..64M, e.g. 64K "
                                         "(got %r)" % text)
    return text.strip()


def listen_address(text):
    """An argparse type: HOST:PORT (port 0..65535; 0 picks a free one) or unix:PATH."""
    import argparse

    if text.startswith("unix:"):
        if len(text) == 5:
            raise argparse.ArgumentTypeError("unix:PATH needs a path, e.g. unix:/run/capwarden.sock")
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError("HOST:PORT with a port 0..65535, or unix:PATH, e.g. 127.0.0.1:8765 "
                                         "(got %r)" % text)
    return text


ID_FORMATS = {
    "fay": ("a Fay_ID", "'fay:' and a lowercase UUIDv7", "fay:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
            "capwarden id new fay"),
    "terminal": ("a Terminal_ID", "'terminal:' and a lowercase UUIDv7",
                 "terminal:0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "capwarden id new terminal"),
    "uuid": ("an id", "a lowercase UUIDv7", "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", None),
}


def id_format_error(kind, option, value):
    """The message for an id in the wrong format: what it must be, an example, how to make one."""
    name, form, example, make = ID_FORMATS[kind]
    shown = value if len(value) <= 60 else value[:57] + "..."
    return "%s must be %s: %s, e.g. %s%s (got %r)" % (option, name, form, example,
                                                      "; make one with '%s'" % make if make else "", shown)


def check_id(value, kind, option):
    """Refuse (UsageError, exit 2) an id argument that is not in the spec's format (S1)."""
    from capwarden.credentials.ids import FAY_RE, TERMINAL_RE, UUID_RE

    pattern = {"fay": FAY_RE, "terminal": TERMINAL_RE, "uuid": UUID_RE}[kind]
    if not isinstance(value, str) or not pattern.match(value):
        raise UsageError(id_format_error(kind, option, str(value)))
    return value
