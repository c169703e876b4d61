"""The `capwarden` command line (cap-supplement.md S4).

Each subcommand lives in its own module under this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable taking the parsed
arguments and returning an exit code. Exit codes (S4, and docs/cli.md): 0 done or granted,
1 denied or invalid input, 2 usage error, 130 interrupted; the full rule is in _common.
"""

import argparse
import contextlib
import importlib
import sys

from capwarden import __version__
from capwarden.cli._common import (EXIT_DENIED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, error_line, failure_object,
                                   json_printed, json_reset, print_json)
from capwarden.entry import release_interrupts
from capwarden.errors import CapwardenError, UsageError

# Subcommand modules, in the order `--help` lists them. A fixed list: no plugin discovery.
COMMANDS = (
    "init",
    "keys",
    "issue",
    "revoke",
    "descriptors",
    "revocations",
    "verify",
    "inspect",
    "serve",
    "request",
    "audit",
    "sim",
    "flash",
    "ping",
    "link",
    "ports",
    "id",
    "demo",
    "trust",
    "operator",
)

DESCRIPTION = """\
capwarden: who controls which piece of hardware right now, provably.

Credentials: init, keys, issue, revoke, descriptors, revocations, verify, inspect.
Engine:      serve (the runtime API), request (a runtime from the shell), audit.
Boards:      sim (the virtual board), flash (deploy the agent), ping, ports, link rekey.
Fleet:       trust (issuers, revocation service, registration authority).
Identity:    id new fay|terminal.
"""

EPILOG = """\
Run 'capwarden COMMAND --help' for each command's options and examples.
exit codes: 0 done or granted, 1 denied or invalid input, 2 usage error, 130 interrupted.
"""


class Parser(argparse.ArgumentParser):
    """argparse, except that a bad command line raises UsageError instead of exiting, so that
    main() reports it like every other failure (exit 2, and one object with --json)."""

    def error(self, message):
        raise _ParseError(self, message)


class _ParseError(UsageError):
    def __init__(self, parser, message):
        super().__init__(message)
        self.parser = parser


def build_parser():
    parser = Parser(
        prog="capwarden",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version="capwarden " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        # A module missing from the install is a broken install, said at once, not a command
        # silently gone from --help.
        try:
            module = importlib.import_module("capwarden.cli." + name)
        except ModuleNotFoundError as exc:
            if exc.name != "capwarden.cli." + name:
                raise
            raise CapwardenError("the command %r is missing from this installation (no module %s): "
                                 "reinstall capwarden" % (name, exc.name)) from None
        module.register(sub)
    return parser


def _command_of(argv):
    return next((a for a in argv if a in COMMANDS), "")


def main(argv=None):
    """Run one command; returns its exit code (the table in _common and docs/cli.md)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    wants_json = "--json" in argv
    json_reset()
    command = _command_of(argv)
    try:
        release_interrupts()            # a Ctrl-C held back while this was imported lands here
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
        except SystemExit as exc:       # --help and --version: argparse printed them
            return exc.code if isinstance(exc.code, int) else 0
        command = args.command or command
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return _fail(command, UsageError("give a command"), EXIT_USAGE, wants_json)
        return int(args.func(args) or 0)
    except _ParseError as exc:
        if not wants_json:
            exc.parser.print_usage(sys.stderr)
        return _fail(command, exc, EXIT_USAGE, wants_json)
    except CapwardenError as exc:
        return _fail(command, exc, exc.exit_code, wants_json)
    except RecursionError:
        # Every parser of outside input refuses deep nesting with its own error (the credential
        # layer's strict JSON and CBOR): this is the last guard, so that no input ever ends in a
        # traceback. Input nested too deeply is invalid input (S4: exit 1).
        return _fail(command, CapwardenError("the input is nested too deeply to be read"), EXIT_DENIED, wants_json)
    except KeyboardInterrupt:
        return _fail(command, CapwardenError("interrupted"), EXIT_INTERRUPTED, wants_json)
    except BrokenPipeError:  # output piped into head(1) and the like: not an error (an OSError: first)
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return EXIT_OK
    except OSError as exc:
        # The files a command line names are checked before use (usage errors); an OSError
        # here is the system failing under it (a full disk, a store made read-only meanwhile).
        where = " (%s)" % exc.filename if getattr(exc, "filename", None) else ""
        # A plain OSError("...") (the demo's trust service not answering, say) has no strerror.
        return _fail(command, CapwardenError("%s%s" % (exc.strerror or str(exc) or exc.__class__.__name__, where)),
                     EXIT_DENIED, wants_json)


def _fail(command, exc, code, wants_json):
    print(error_line(command, exc), file=sys.stderr, flush=True)
    if wants_json and not json_printed():
        print_json(failure_object(exc, code, command))
    return code


if __name__ == "__main__":
    sys.exit(main())
