"""`capwarden trust ...`: the operator's side of the trust services (issue 13): set up the
service's data folder, run the service, manage authorizers, terminals, revocations and keys.

Every action but `serve` works on the database directly (the same functions the service calls),
so it works while service processes run beside it. The data folder DATA holds trust.json (the
database URL and the issuer id), trust.db (the SQLite database, unless --db names another) and
keys/ (the service's key ring, trust.servicekeys).
"""

import os

from capwarden.cli._common import add_json, formatter, needs_action
from capwarden.paths import data_dir

HELP = """\
The trust services of a fleet: the Ticket_Issuer, the Descriptor_Issuer, the revocation service
and the Registration_Authority in one service (docs/trust-api.md, docs/deployment.md).

  init        create the data folder, the database, the service's keys and the first authorizer
  serve       run the service (HTTPS; plain HTTP on loopback only)
  authorizer  add | list | suspend | resume: who may ask for credentials, within what policy
  terminal    enroll | list | suspend | resume | deregister: the Registration_Authority's terminals
  revoke      revoke an issued ticket or descriptor
  status      terminals, their last sync, key-set acknowledgements, revocations not yet fetched
  keys        list | rotate | publish | retire: the service's issuer and RA keys
  prune       delete records that can no longer matter (expired credentials, old revocations)

The data folder is --data DIR (default: $CAPWARDEN_TRUST_DATA, else %s).

examples:
  capwarden trust init --data ./trust --issuer issuer:acme
  capwarden trust serve --data ./trust --listen 127.0.0.1:8443
  capwarden trust terminal enroll --data ./trust --anchor-out ra-anchor.json
  capwarden trust status --data ./trust --json
"""

CONFIG = "trust.json"
SQLITE_FILE = "trust.db"
CONFIG_FORMAT = 1


def default_data():
    return data_dir("CAPWARDEN_TRUST_DATA", "capwarden-trust")


def add_data(p):
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the service's data folder (default: $CAPWARDEN_TRUST_DATA, else %s)" % default_data())
    p.add_argument("--db", default=None, metavar="URL",
                   help="the database: sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME (default: what "
                        "'trust init' recorded in DATA/trust.json, else DATA/trust.db)")


def leaf(sub, name, help_, text, func):
    """A subcommand with --data, --db and --json, calling `func(args)`."""
    p = sub.add_parser(name, help=help_, description=text, formatter_class=formatter())
    add_data(p)
    add_json(p)
    p.set_defaults(func=database_errors(func))
    return p


def database_errors(func):
    """`func(args)`, with a failure of the database under it (unreachable, refused, broken)
    said in one line, exit 1: a step failed after the command line was accepted. The message
    is the driver's first line, which never holds the password."""
    import functools

    @functools.wraps(func)
    def run(args):
        from sqlalchemy import exc

        from capwarden.errors import CapwardenError

        try:
            return func(args)
        except exc.SQLAlchemyError as e:
            orig = getattr(e, "orig", None) or e
            first = (str(orig).strip().splitlines() or [orig.__class__.__name__])[0]
            raise CapwardenError("the database failed: %s: %s" % (orig.__class__.__name__, first)) from None
    return run


def open_database(url):
    """trust.db.open_db(url), a URL it cannot use being a usage error (exit 2)."""
    from capwarden.errors import UsageError
    from capwarden.trust.db import DatabaseError, open_db

    try:
        return open_db(url)
    except DatabaseError as exc:
        raise UsageError("--db: %s" % exc) from None


def group(sub, name, help_, text):
    p = sub.add_parser(name, help=help_, description=text, formatter_class=formatter())
    s = p.add_subparsers(dest="trust_%s_command" % name, metavar="ACTION")
    p.set_defaults(func=needs_action(p))
    return s


def register(sub):
    from capwarden.cli import trust_admin, trust_prune, trust_serve

    p = sub.add_parser("trust", help="the trust services: issuers, revocations, registration authority",
                       description=HELP % default_data(), formatter_class=formatter())
    s = p.add_subparsers(dest="trust_command", metavar="ACTION")
    trust_serve.register_init(s)
    trust_serve.register_serve(s)
    trust_admin.register(s)
    trust_prune.register(s)
    p.set_defaults(func=needs_action(p))


# ---- the data folder and the database ------------------------------------------------------

class Deployment:
    """What an operator command opens: the data folder, its config, the database and the key
    ring. Raises UsageError (exit 2) for a data folder that was never initialised."""

    def __init__(self, args, migrate=False):
        from capwarden.credentials.store import read_json
        from capwarden.errors import UsageError
        from capwarden.trust.servicekeys import KeyRing, ring_folder

        self.data = os.path.abspath(args.data or default_data())
        path = os.path.join(self.data, CONFIG)
        if not os.path.isfile(path):
            raise UsageError("%s is not a trust data folder (no %s): create one with 'capwarden trust init --data %s "
                             "--issuer ISSUER_ID'" % (self.data, CONFIG, args.data or self.data))
        self.config = read_json(path, kind=dict)
        self.url = db_url(args, self.data, self.config)
        self.db = open_database(self.url)
        if migrate:
            self.db.migrate()
        else:
            check_schema(self.db)
        self.ring = KeyRing.open(ring_folder(self.data))
        self.issuer_id = self.ring.issuer_id

    def close(self):
        self.db.dispose()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def db_url(args, data, config=None):
    """--db, else $CAPWARDEN_TRUST_DB, else the URL init recorded, else DATA/trust.db."""
    from capwarden.trust.db import sqlite_url

    return (args.db or os.environ.get("CAPWARDEN_TRUST_DB") or (config or {}).get("db")
            or sqlite_url(os.path.join(data, SQLITE_FILE)))


def check_schema(db):
    """Refuse (UsageError) a database whose schema is not the newest: init (or serve, which
    migrates) has not run on it."""
    from alembic.script import ScriptDirectory
    from alembic.config import Config

    from capwarden.errors import UsageError
    from capwarden.trust.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    have = db.revision()
    if have is None:
        raise UsageError("the database %s holds no trust schema: run 'capwarden trust init' first" % safe_url(db.url))
    if have != head:
        raise UsageError("the database %s is at schema %s, this capwarden needs %s: run 'capwarden trust serve' "
                         "once (it migrates) or 'capwarden trust init --upgrade'" % (safe_url(db.url), have, head))


def safe_url(url):
    """A database URL without its password, for messages."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
