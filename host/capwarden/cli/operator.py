"""`capwarden operator add|list|remove`: the people the engine's console lets in
(engine/operators.py). A password is never taken from the command line: it is read from a
prompt (twice), or with --password-stdin from the first line of standard input."""

import sys

from capwarden.cli._common import (add_json, add_store, check_store, formatter, human_time, needs_action, print_json,
                                   store_path)
from capwarden.errors import CapwardenError, UsageError

HELP = """\
Operators log in to the engine's console (take control of a resource, hand it back, decide a
pending request). Their passwords are kept as scrypt hashes in STORE/operators.json (owner
only); a running engine sees a change at the next login. Passwords are read from a prompt, or
with --password-stdin from the first line of standard input, never from the command line.

examples:
  capwarden operator add --store ./store alice
  printf '%s\\n' "$PASSWORD" | capwarden operator add --store ./store bob --password-stdin --json
  capwarden operator list --store ./store
  capwarden operator remove --store ./store bob
"""


def register(sub):
    p = sub.add_parser("operator", help="add, list or remove the console's operators", description=HELP,
                       formatter_class=formatter())
    s = p.add_subparsers(dest="operator_command", metavar="ACTION")
    a = s.add_parser("add", help="add an operator (or set a new password with --replace)", description=HELP,
                     formatter_class=formatter())
    a.add_argument("name", help="the operator's name: 1 to 64 of a-z 0-9 . _ -")
    a.add_argument("--password-stdin", action="store_true", help="read the password from standard input's first line")
    a.add_argument("--replace", action="store_true", help="give an existing operator a new password")
    ls = s.add_parser("list", help="list the operators", description=HELP, formatter_class=formatter())
    r = s.add_parser("remove", help="remove an operator", description=HELP, formatter_class=formatter())
    r.add_argument("name")
    for q, func in ((a, add), (ls, list_), (r, remove)):
        add_store(q)
        add_json(q)
        q.set_defaults(func=func)
    p.set_defaults(func=needs_action(p))


def _store(args):
    from capwarden.engine.operators import OperatorStore

    return OperatorStore(check_store(store_path(args)))


def _password(args):
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CapwardenError("no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password on: give --password-stdin and the password on "
                         "standard input")
    import getpass

    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CapwardenError("the two passwords differ")
    return first


def add(args):
    from capwarden.engine.operators import check_name

    check_name(args.name)              # before the prompt: a bad name is a usage error
    store = _store(args)
    op = store.add(args.name, _password(args), replace=args.replace)
    if args.json:
        print_json({"added": True, "name": op.name, "created_at": op.created_at})
    else:
        print("operator %s %s" % (op.name, "password replaced" if args.replace else "added"))
    return 0


def list_(args):
    ops = _store(args).list()
    if args.json:
        print_json({"operators": [o.to_json() for o in ops]})
    else:
        if not ops:
            print("no operators (add one with 'capwarden operator add')")
        for o in ops:
            print("%s  added %s" % (o.name, human_time(o.created_at)))
    return 0


def remove(args):
    if not _store(args).remove(args.name):
        raise CapwardenError("no operator %s in this store (see 'capwarden operator list')" % args.name)
    if args.json:
        print_json({"removed": True, "name": args.name})
    else:
        print("operator %s removed" % args.name)
    return 0
