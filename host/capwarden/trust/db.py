"""The trust services' database: one schema on SQLite (default) or PostgreSQL (fleets).

`open_db(url)` gives a Database: `.migrate()` brings the schema to the newest Alembic revision
(the migrations are package data; no alembic.ini), `.transaction()` is a Session whose work is
committed when the block ends (or rolled back if it raises), and `.run(fn)` runs fn(session) in
a write transaction, again if the database answers that two writers collided.

SQLite: WAL, a busy timeout, foreign keys on, and write transactions begin IMMEDIATE so that two
writers queue on the lock instead of one failing when it upgrades from reading. PostgreSQL
(postgresql+psycopg://): READ COMMITTED; the code that must not race takes row locks or relies on
unique constraints (docs/DECISIONS.md, "Trust services: storage and issuance").
"""

import contextlib
import os
import random
import threading
import time

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from capwarden.errors import CapwardenError

BUSY_TIMEOUT_MS = 10_000
RETRIES = 8
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
# PostgreSQL SQLSTATEs that mean "run it again": serialization_failure, deadlock_detected.
_PG_RETRY = ("40001", "40P01")
MIGRATION_LOCK = 0x63617077   # "capw": the advisory lock key migrations take on PostgreSQL


class Base(DeclarativeBase):
    """The declarative base of every trust table (issuance's and the registry's)."""


class DatabaseError(CapwardenError):
    """The database could not be opened or used: a bad URL, a failed migration, or writers that
    kept colliding after every retry."""


def sqlite_url(path):
    return "sqlite:///" + os.path.abspath(path)


def open_db(url):
    """A Database for `url` (sqlite:///PATH or postgresql+psycopg://...). Raises DatabaseError."""
    return Database(url)


class Database:
    def __init__(self, url):
        try:
            u = sa.engine.make_url(url)
        except exc.ArgumentError:
            raise DatabaseError("not a database URL: %r" % url) from None
        self.url = url
        self.dialect = u.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = sa.create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            _sqlite_setup(self.engine)
        elif self.dialect == "postgresql":
            if u.get_driver_name() != "psycopg":
                raise DatabaseError("PostgreSQL URLs use psycopg 3: postgresql+psycopg://...")
            self.engine = sa.create_engine(u, isolation_level="READ COMMITTED", pool_pre_ping=True)
        else:
            raise DatabaseError("database %r not supported: use sqlite:/// or postgresql+psycopg://" % self.dialect)
        # SQLite has one writer at a time: this process's write transactions take turns on a
        # lock of their own rather than on SQLite's, whose busy handler sleeps (1, 2, 5, 10 ms...)
        # between tries; other processes still queue on SQLite's lock and its busy timeout.
        self._write_lock = threading.RLock() if self.dialect == "sqlite" else None
        self._writer = self.engine.execution_options(capwarden_write=True)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._writer, expire_on_commit=False)

    def migrate(self):
        """Bring the schema to the newest revision. Several processes may start at once: the
        migration runs under the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
        transaction-scoped advisory lock, and DDL is transactional), so the later ones wait
        and then find the schema at head. Raises DatabaseError."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", MIGRATIONS)
        for attempt in range(RETRIES):
            try:
                with self._writer.begin() as conn:
                    if self.dialect == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                return
            except exc.OperationalError as e:
                # SQLite answers "locked" at once, busy timeout or not, while another process
                # switches a fresh file to WAL: that one is migrating; wait and look again.
                if not self.retryable(e) or attempt == RETRIES - 1:
                    raise DatabaseError("migration failed: %s" % _reason(e)) from e
            except exc.SQLAlchemyError as e:
                raise DatabaseError("migration failed: %s" % _reason(e)) from e
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))

    def revision(self):
        """The schema's current Alembic revision, or None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @contextlib.contextmanager
    def transaction(self, write=True):
        """A Session in one transaction: committed when the block ends, rolled back if it raises."""
        lock = self._write_lock if write else None
        with lock if lock is not None else contextlib.nullcontext():
            with (self._write if write else self._read)() as s:
                with s.begin():
                    yield s

    session = transaction

    def run(self, fn, *args, write=True, retries=RETRIES):
        """fn(session, *args) in a transaction, run again (with a short random pause) when the
        database reports a serialization failure, a deadlock or a busy SQLite file. Returns
        what fn returns once committed. Raises DatabaseError when every try collided."""
        for attempt in range(retries):
            try:
                with self.transaction(write) as s:
                    return fn(s, *args)
            except exc.OperationalError as e:
                if not self.retryable(e) or attempt == retries - 1:
                    raise
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        raise DatabaseError("transaction kept colliding")   # not reached: the last try re-raises

    def retryable(self, error):
        """Whether a DBAPI error means "another writer got there first: try again"."""
        orig = getattr(error, "orig", error)
        if self.dialect == "postgresql":
            return getattr(orig, "sqlstate", None) in _PG_RETRY
        text = str(orig).lower()
        return "database is locked" in text or "database is busy" in text

    def dispose(self):
        self.engine.dispose()


def insert_rows(session, table, rows):
    """INSERT `rows` (dicts, each with the same keys) into `table` in the session's transaction.

    On PostgreSQL through COPY: psycopg's executemany (what SQLAlchemy's insert uses) spent
    about 10 us of CPU a row in Python, COPY 2.3 (thread CPU time around a 250-row insert,
    measured once; issue 13's bench shows the effect end to end). Errors come out as SQLAlchemy's, as from any statement (a serialization failure is
    still retried by Database.run). Elsewhere SQLAlchemy's executemany, which on SQLite costs
    no more than the driver's own."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), rows)
        return
    import psycopg

    cols = list(rows[0])
    sql = "COPY %s (%s) FROM STDIN" % (table.name, ", ".join(cols))
    try:
        with conn.connection.driver_connection.cursor() as cur:
            with cur.copy(sql) as copy:
                for r in rows:
                    copy.write_row(tuple(r[c] for c in cols))
    except psycopg.Error as e:
        raise exc.DBAPIError.instance(sql, None, e, psycopg.Error) from e


def _reason(error):
    """The database's own words for `error`, on one line (never the URL: it may hold a password)."""
    orig = getattr(error, "orig", None) or error
    return ("%s: %s" % (type(orig).__name__, orig)).splitlines()[0][:300]


def _sqlite_setup(engine):
    # pysqlite's own transaction handling begins late and never IMMEDIATE: turn it off and
    # issue BEGIN ourselves (the SQLAlchemy documentation's recipe).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")   # a committed answer survives a power loss too
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=%d" % BUSY_TIMEOUT_MS)
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("capwarden_write") else "BEGIN")


__all__ = ["Base", "Database", "DatabaseError", "Session", "open_db", "sqlite_url"]
