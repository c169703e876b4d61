"""The one logging configuration of the command line: levels from -v/-q, the one-line format
of capwarden.logfmt on stderr. Tokens never reach a log call."""

import logging
import sys

from capwarden.logfmt import OneLineFormatter

LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


def add_verbosity(p):
    """-v (every request too), -vv (also every frame to and from the boards), -q (only warnings
    and errors) on a parser."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0,
                   help="log every request too; -vv also every frame to and from the boards")
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1,
                   help="log only warnings and errors")


def configure(verbosity=0, stream=None):
    """Send capwarden's log records to `stream` (stderr) in the one-line format, at the level of
    `verbosity` (-1, 0, 1, 2). Replaces an earlier configuration of the same loggers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLineFormatter())
    root = logging.getLogger("capwarden")
    for h in list(root.handlers):
        if getattr(h, "_capwarden_cli", False):
            root.removeHandler(h)
    handler._capwarden_cli = True
    root.addHandler(handler)
    root.setLevel(LEVELS[max(-1, min(1, verbosity))])
    # The link's frame trace is debug too, but one line per frame: only at -vv.
    logging.getLogger("capwarden.link").setLevel(logging.DEBUG if verbosity >= 2 else logging.NOTSET
                                                 if verbosity < 1 else logging.INFO)
    # The websockets library logs a failed handshake with the request's text: not ours to print.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    return handler
