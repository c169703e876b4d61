"""The `capwarden` command line (cap-supplement.md S4).

Each subcommand lives in its own module under this package and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable taking the parsed
arguments and returning an exit code. Exit codes (S4): 0 done or granted, 1 denied or invalid
input, 2 usage error.
"""

import argparse
import importlib
import sys

from capwarden import __version__
from capwarden.errors import CapwardenError

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
    "demo",
)

DESCRIPTION = """\
capwarden: who controls which piece of hardware right now, provably.

Credentials: init, keys, issue, revoke, descriptors, revocations, verify, inspect.
Engine:      serve (the runtime API), request (a runtime from the shell), audit.
Boards:      sim (the virtual board), flash (deploy the agent), ping.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="capwarden",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'capwarden COMMAND --help' for each command's options and examples.",
    )
    parser.add_argument("--version", action="version", version="capwarden " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module("capwarden.cli." + name)
        except ModuleNotFoundError as exc:
            if exc.name != "capwarden.cli." + name:
                raise
            continue  # command not built yet in this checkout
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CapwardenError as exc:
        print("capwarden %s: %s" % (args.command, exc), file=sys.stderr)
        return exc.exit_code
    except RecursionError:
        # Every parser of outside input refuses deep nesting with its own error (the credential
        # layer's strict JSON and CBOR): this is the last guard, so that no input ever ends in a
        # traceback. Input nested too deeply is invalid input (S4: exit 1).
        print("capwarden %s: the input is nested too deeply to be read" % args.command, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("capwarden %s: interrupted" % args.command, file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head(1) and the like: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
