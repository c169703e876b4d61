"""Fixtures of the trust-service tests (issue 13): real PostgreSQL and mosquitto servers
(tests/services.py), and a fresh empty database per test on each backend.

- pg_server (session): one PostgreSQL server for the whole run, started on first use only.
- db_url: parametrized sqlite / postgresql; a new empty database each test (sqlite: a file in
  tmp_path; postgresql: a new schema in one shared database on pg_server, reached through its
  Unix socket with that schema as its search_path: services.PostgresServer.create_schema).
- mosquitto: a fresh anonymous broker on 127.0.0.1 (unpacks as host, port; .url).
- mosquitto_factory: brokers with a password file and an ACL (MosquittoBroker(users=, acl=)).
- tmp_path: on tmpfs when the machine has one (trustrig.shm_tmp_path: no fsync cost).

A missing server binary skips the test with the reason, or fails it under CI=true.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import services  # noqa: E402
import trustrig  # noqa: E402

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def tmp_path(request, tmp_path_factory):
    """On tmpfs when there is one (tests/trustrig.shm_tmp_path)."""
    yield from trustrig.shm_tmp_path(request, tmp_path_factory)


@pytest.fixture(scope="session")
def pg_server():
    services.require_postgres()
    server = services.PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def db_backend(request):
    return request.param


@pytest.fixture
def db_url(db_backend, request, tmp_path):
    """A fresh, empty database URL on each backend (no schema: the code under test migrates)."""
    if db_backend == "sqlite":
        return "sqlite:///%s" % (tmp_path / "trust.db")
    return request.getfixturevalue("pg_server").create_schema()


@pytest.fixture
def mosquitto_factory():
    started = []

    def start(users=None, acl=None):
        services.require_mosquitto(passwords=users is not None)
        broker = services.MosquittoBroker(users=users, acl=acl)
        started.append(broker)
        return broker.start()

    try:
        yield start
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory):
    return mosquitto_factory()
