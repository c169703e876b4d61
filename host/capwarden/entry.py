"""The `capwarden` command's entry point (pyproject.toml, [project.scripts]).

Importing the command line takes a few hundred milliseconds on a loaded machine, and a Ctrl-C
then used to end in a KeyboardInterrupt traceback from the import machinery, before the
command's own handling existed. So SIGINT is held back (blocked, not ignored: it stays
pending) while the command line is imported, and let through as the command starts
(capwarden.cli.main), where it is an interrupt like any other: "capwarden COMMAND:
interrupted", exit 130. Nothing is started before that, so no child inherits the mask.
"""

import signal
import sys

_HOLD = {signal.SIGINT}


def hold_interrupts():
    if hasattr(signal, "pthread_sigmask"):       # not on Windows: there, nothing is held
        signal.pthread_sigmask(signal.SIG_BLOCK, _HOLD)


def release_interrupts():
    """Let a Ctrl-C held back meanwhile arrive now. A no-op when nothing was held."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HOLD)


def main():
    hold_interrupts()
    try:
        from capwarden.cli import main as command
    except BaseException:
        release_interrupts()
        raise
    return command(sys.argv[1:])      # releases them inside its handling
