"""The one logging configuration of the command line: levels from -v/-q, the one-line format
of capwarden.logfmt on stderr. Tokens never reach a log call."""

import logging
import sys

from capwarden.logfmt import OneLineFormatter

LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}


def add_verbosity(p):
    """-v (debug: every request) and -q (only warnings and errors) on a parser."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=1, default=0,
                   help="log every request too (debug)")
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=-1,
                   help="log only warnings and errors")


def configure(verbosity=0, stream=None):
    """Send capwarden's log records to `stream` (stderr) in the one-line format, at the level of
    `verbosity` (-1, 0, 1). Replaces an earlier configuration of the same loggers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(OneLineFormatter())
    root = logging.getLogger("capwarden")
    for h in list(root.handlers):
        if getattr(h, "_capwarden_cli", False):
            root.removeHandler(h)
    handler._capwarden_cli = True
    root.addHandler(handler)
    root.setLevel(LEVELS[max(-1, min(1, verbosity))])
    # The websockets library logs a failed handshake with the request's text: not ours to print.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    return handler
