"""Real servers for the tests (issue 13): Debian's PostgreSQL and mosquitto, started on temporary
folders and stopped afterwards, never mocked.

- PostgresServer: initdb on a fresh folder, `postgres` listening only on a Unix socket in that
  folder (listen_addresses=''), fsync off (test data need not survive a power cut; durable=True
  keeps it on, for benchmarks). Run as root
  (CI), the server runs as the `postgres` user, since PostgreSQL refuses to run as root.
  `create_database()` gives a new empty database and its SQLAlchemy URL; `create_schema()` a
  new empty schema in a shared database, as the URL of that database searching that schema
  (what the per-test db_url fixture of tests/trust uses: milliseconds instead of 0.5 s).
- MosquittoBroker: a config in a temporary folder, one listener on 127.0.0.1 and a free port;
  anonymous, or with a password file (users={name: password}) and an ACL file.

A server is never left behind: stop() in the fixture's finalizer, an atexit hook for an
interrupted run, and the server started with a parent-death signal (setpriv --pdeathsig) so that
even a pytest killed with SIGKILL takes it along.

require(): a missing server binary skips the test with the reason, except under CI=true, where
it fails it (issue 13: under CI no test may be skipped for a missing component).
"""

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

import procs

START_TIMEOUT = 60.0   # generous: two shared cores, and initdb under load


def _pg_bindir():
    """CAPWARDEN_PG_BIN, else the newest /usr/lib/postgresql/N/bin that has a server."""
    env = os.environ.get("CAPWARDEN_PG_BIN")
    if env:
        return env
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else "/usr/lib/postgresql/15/bin"


PG_BIN = _pg_bindir()
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def under_ci():
    return os.environ.get("CI", "").lower() == "true"


def require(path, what, package):
    """Skip (or, under CI=true, fail) the calling test when the executable `path` is missing."""
    import pytest

    if os.path.isfile(path) and os.access(path, os.X_OK):
        return
    reason = "%s not found at %s (Debian package %s; .ci/run installs it)" % (what, path, package)
    if under_ci():
        pytest.fail("CI=true and a component is missing: " + reason, pytrace=False)
    pytest.skip(reason)


def require_postgres():
    for tool in ("initdb", "postgres", "pg_ctl"):
        require(os.path.join(PG_BIN, tool), "PostgreSQL's " + tool, "postgresql")


def require_mosquitto(passwords=False):
    require(MOSQUITTO, "mosquitto", "mosquitto")
    if passwords:
        require(MOSQUITTO_PASSWD, "mosquitto_passwd", "mosquitto")


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- what is running, for the atexit hook ---------------------------------------------------

_RUNNING = set()


@atexit.register
def _stop_all():
    for server in list(_RUNNING):
        server.stop()


def _as_user():
    """The command prefix that runs a server: as `postgres` when we are root, and in every case
    with a parent-death signal so it dies with the test process (SIGINT: postgres's fast
    shutdown; mosquitto stops on it too)."""
    prefix = []
    setpriv = shutil.which("setpriv")
    if setpriv:
        prefix = [setpriv, "--pdeathsig", "INT"]
    if os.geteuid() == 0:
        if not setpriv:
            return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "postgres", "--"]
        prefix += ["--reuid=postgres", "--regid=postgres", "--init-groups"]
    return prefix


def _tail(path, n=2000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


STALE_S = 3600


def _sweep_stale():
    """Remove the folders of servers that shut down without their test process (killed with
    SIGKILL: the server followed it through its parent-death signal, the folder stayed): no
    postmaster.pid (the server is gone) and untouched for an hour (not one being set up)."""
    for folder in glob.glob("/tmp/cwpg-*"):
        try:
            if (not os.path.exists(os.path.join(folder, "data", "postmaster.pid"))
                    and time.time() - os.stat(folder).st_mtime > STALE_S):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


class PostgresServer:
    """One PostgreSQL server on a temporary folder, reachable only through its Unix socket in
    that folder. `user` is its superuser (trust authentication on the socket)."""

    user = "postgres"

    def __init__(self, durable=False):
        # durable: fsync and synchronous commit on, as a production server runs (the issuance
        # benchmark); tests run without them, since a test's data need not survive a power cut.
        self.durable = durable
        self.folder = None
        self.proc = None

    @property
    def socket_dir(self):
        return self.folder

    @property
    def data_dir(self):
        return os.path.join(self.folder, "data")

    def start(self):
        _sweep_stale()
        # A short path in /tmp: a Unix socket path holds at most 107 bytes.
        self.folder = tempfile.mkdtemp(prefix="cwpg-", dir="/tmp")
        _RUNNING.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.folder, pw.pw_uid, pw.pw_gid)
        log = os.path.join(self.folder, "server.log")
        run = _as_user()
        init = subprocess.run(run + [os.path.join(PG_BIN, "initdb"), "-D", self.data_dir, "-U", self.user,
                                     "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"]
                              + ([] if self.durable else ["--no-sync"]),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=START_TIMEOUT,
                              cwd=self.folder)
        if init.returncode != 0:
            raise RuntimeError("initdb failed (%d): %s" % (init.returncode, init.stdout[-2000:]))
        fast = [] if self.durable else ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                run + [os.path.join(PG_BIN, "postgres"), "-D", self.data_dir, "-k", self.folder,
                       "-c", "listen_addresses=", "-c", "max_connections=200", "-c", "shared_buffers=32MB"] + fast,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited with %s: %s" % (self.proc.returncode, _tail(log)))
            try:
                self.connect().close()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError("postgres not ready after %.0f s (%s): %s" % (START_TIMEOUT, exc, _tail(log)))
                time.sleep(0.1)

    def connect(self, dbname="postgres"):
        """A psycopg connection (autocommit) as the superuser."""
        import psycopg

        return psycopg.connect(host=self.folder, user=self.user, dbname=dbname, autocommit=True, connect_timeout=10)

    def url(self, dbname):
        """The SQLAlchemy URL of database `dbname` on this server (psycopg 3, the Unix socket)."""
        return "postgresql+psycopg://%s@/%s?host=%s" % (self.user, dbname, self.folder)

    def create_database(self, prefix="t"):
        """A new empty database; returns its SQLAlchemy URL."""
        name = "%s_%s" % (prefix, uuid.uuid4().hex[:16])
        with self.connect() as conn:
            conn.execute('CREATE DATABASE "%s"' % name)
        return self.url(name)

    SHARED_DB = "cw_schemas"

    def create_schema(self, prefix="s"):
        """A new empty schema in one shared database, as the SQLAlchemy URL of that database
        with the schema as its search_path: to the code under test an empty database (its
        tables, its alembic_version), made in milliseconds where CREATE DATABASE takes about
        0.5 s. What is database-wide (advisory locks, connections) is shared between schemas,
        so tests of those that must not see another test's use create_database()."""
        import urllib.parse

        if not getattr(self, "_shared", False):
            with self.connect() as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.SHARED_DB,)).fetchone() is None:
                    conn.execute('CREATE DATABASE "%s"' % self.SHARED_DB)
            self._shared = True
        name = "%s_%s" % (prefix, uuid.uuid4().hex[:16])
        with self.connect(self.SHARED_DB) as conn:
            conn.execute('CREATE SCHEMA "%s"' % name)
        return self.url(self.SHARED_DB) + "&options=" + urllib.parse.quote("-csearch_path=%s" % name)

    def stop(self):
        """pg_ctl stop -m fast, then the process itself if that did not do it; the folder
        removed. Safe to call twice, and after a failed start."""
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(_as_user() + [os.path.join(PG_BIN, "pg_ctl"), "stop", "-m", "fast", "-w", "-t", "30",
                                         "-D", self.data_dir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, cwd=self.folder)
            procs.stop(self.proc, timeout=10)
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        _RUNNING.discard(self)


class MosquittoBroker:
    """One mosquitto on 127.0.0.1 and a free port. users: {name: password} turns anonymous access
    off and writes a password file; acl: the text of an ACL file (mosquitto's syntax, e.g.
    "user t1\\ntopic read capwarden/v1/terminals/t1\\n")."""

    host = "127.0.0.1"

    def __init__(self, users=None, acl=None):
        self.users = users
        self.acl = acl
        self.folder = None
        self.proc = None
        self.port = None

    def __iter__(self):    # host, port = broker
        return iter((self.host, self.port))

    @property
    def url(self):
        return "mqtt://%s:%d" % (self.host, self.port)

    def start(self):
        self.folder = tempfile.mkdtemp(prefix="cwmq-", dir="/tmp")
        _RUNNING.add(self)
        try:
            for attempt in range(5):    # the free port may be taken between the probe and the bind
                if self._start():
                    return self
            raise RuntimeError("mosquitto did not start: %s" % _tail(os.path.join(self.folder, "broker.log")))
        except BaseException:
            self.stop()
            raise

    def _config(self):
        lines = ["listener %d %s" % (self.port, self.host), "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice"]
        if os.geteuid() == 0:
            lines.append("user root")   # else it switches to the `mosquitto` user and cannot read its files
        if self.users is None:
            lines.append("allow_anonymous true")
        else:
            pwfile = os.path.join(self.folder, "passwords")
            open(pwfile, "w").close()
            for name, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", pwfile, name, password], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
            lines += ["allow_anonymous false", "password_file " + pwfile]
        if self.acl is not None:
            aclfile = os.path.join(self.folder, "acl")
            with open(aclfile, "w") as f:
                f.write(self.acl)
            lines.append("acl_file " + aclfile)
        conf = os.path.join(self.folder, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        return conf

    def _start(self):
        self.port = free_port(self.host)
        conf = self._config()
        log = os.path.join(self.folder, "broker.log")
        prefix = [shutil.which("setpriv"), "--pdeathsig", "INT"] if shutil.which("setpriv") else []
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(prefix + [MOSQUITTO, "-c", conf], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.folder)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        procs.stop(self.proc)
        return False

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc, timeout=10)
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        _RUNNING.discard(self)
