"""The test servers themselves (tests/services.py): PostgreSQL on a Unix socket only, a fresh
database per test, mosquitto anonymous and with passwords and an ACL, nothing left behind, and
the rule for a missing binary (skip, or fail under CI=true)."""

import os
import time

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy

import services


def test_postgres_listens_only_on_its_unix_socket(pg_server):
    with pg_server.connect() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
        assert conn.execute("SHOW unix_socket_directories").fetchone()[0] == pg_server.socket_dir
    assert os.path.exists(os.path.join(pg_server.socket_dir, ".s.PGSQL.5432"))


def test_db_url_is_a_fresh_empty_database_each_time(db_url):
    engine = sqlalchemy.create_engine(db_url)
    try:
        with engine.begin() as conn:
            assert sqlalchemy.inspect(conn).get_table_names() == []
            conn.execute(sqlalchemy.text("CREATE TABLE probe (x INTEGER)"))
            conn.execute(sqlalchemy.text("INSERT INTO probe VALUES (1)"))
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT x FROM probe")).scalar() == 1
    finally:
        engine.dispose()


def test_two_databases_on_one_server_are_separate(pg_server):
    a, b = pg_server.create_database(), pg_server.create_database()
    assert a != b
    ea, eb = sqlalchemy.create_engine(a), sqlalchemy.create_engine(b)
    try:
        with ea.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE only_in_a (x INTEGER)"))
        with eb.connect() as conn:
            assert sqlalchemy.inspect(conn).get_table_names() == []
    finally:
        ea.dispose()
        eb.dispose()


def _gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_stopped_postgres_leaves_no_process_and_no_folder():
    services.require_postgres()
    server = services.PostgresServer().start()
    pid, folder = server.proc.pid, server.folder
    server.create_database()
    server.stop()
    server.stop()  # twice is harmless
    assert server.proc.returncode is not None and _gone(pid)
    assert not os.path.exists(folder)


def _client(broker, username=None, password=None):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    if username is not None:
        c.username_pw_set(username, password)
    return c


def _connect(client, broker):
    """The broker's CONNACK reason code (0: accepted)."""
    got = []
    client.on_connect = lambda c, u, flags, rc, props=None: got.append(rc)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    return got[0] if got else None


def _roundtrip(broker, reader=(None, None), writer=(None, None), topic="capwarden/v1/terminals/t1",
               marker=None):
    """The payloads of QoS 1 messages published by `writer` that reach `reader` subscribed to
    `topic`. With `marker` (a topic the reader may read), the reader also subscribes to it and a
    message to it is published last: once it arrives, anything on `topic` has arrived too (one
    publisher, one QoS: the broker keeps their order), so a refusal needs no waiting."""
    received = []
    sub, pub = _client(broker, *reader), _client(broker, *writer)
    topics = [topic] + ([marker] if marker else [])
    try:
        assert _connect(sub, broker) == 0
        subscribed = []
        sub.on_subscribe = lambda c, u, mid, codes, props=None: subscribed.append(codes)
        sub.on_message = lambda c, u, msg: received.append((msg.topic, msg.payload))
        sub.subscribe([(t, 1) for t in topics])
        deadline = time.monotonic() + 20
        while not subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _connect(pub, broker) == 0
        for t in topics:
            pub.publish(t, b'{"kind": "revocations", "version": 1}', qos=1).wait_for_publish(20)
        deadline = time.monotonic() + 20
        while len(received) < (1 if marker else len(topics)) and time.monotonic() < deadline:
            time.sleep(0.02)
        if marker:
            deadline = time.monotonic() + 20
            while marker not in [t for t, _ in received] and time.monotonic() < deadline:
                time.sleep(0.02)
            assert marker in [t for t, _ in received], "the reader's own topic never arrived"
        return [m for t, m in received if t == topic]
    finally:
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def test_mosquitto_carries_a_message(mosquitto):
    host, port = mosquitto
    assert host == "127.0.0.1" and port > 0 and mosquitto.url == "mqtt://127.0.0.1:%d" % port
    assert _roundtrip(mosquitto) == [b'{"kind": "revocations", "version": 1}']


def test_mosquitto_with_passwords_and_an_acl(mosquitto_factory):
    acl = ("user service\ntopic write capwarden/v1/#\n\n"
           "user t1\ntopic read capwarden/v1/terminals/t1\n\n"
           "user t2\ntopic read capwarden/v1/terminals/t2\n")
    broker = mosquitto_factory(users={"service": "s-pass", "t1": "t1-pass", "t2": "t2-pass"}, acl=acl)
    anonymous = _client(broker)
    try:
        assert _connect(anonymous, broker) not in (0, None)
    finally:
        anonymous.disconnect()
        anonymous.loop_stop()
    wrong = _client(broker, "t1", "not-it")
    try:
        assert _connect(wrong, broker) not in (0, None)
    finally:
        wrong.disconnect()
        wrong.loop_stop()
    assert _roundtrip(broker, reader=("t1", "t1-pass"), writer=("service", "s-pass"))
    # t2 may not read t1's topic: the broker accepts the subscription but delivers nothing
    # (its own topic, published after t1's, arrives).
    assert _roundtrip(broker, reader=("t2", "t2-pass"), writer=("service", "s-pass"),
                      marker="capwarden/v1/terminals/t2") == []


def test_a_stopped_broker_leaves_no_process_and_no_folder():
    services.require_mosquitto()
    broker = services.MosquittoBroker().start()
    pid, folder = broker.proc.pid, broker.folder
    broker.stop()
    assert _gone(pid) and not os.path.exists(folder)


def test_a_missing_binary_skips_but_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package nothing-here"):
        services.require("/nonexistent/bin/server", "a server", "nothing-here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and a component is missing"):
        services.require("/nonexistent/bin/server", "a server", "nothing-here")
    services.require(services.MOSQUITTO if os.path.exists(services.MOSQUITTO) else "/bin/sh", "present", "x")
