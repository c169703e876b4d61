"""MQTT push (capwarden.trust.push) against a real mosquitto started by the tests (conftest)."""

import asyncio
import json
import logging

import pytest
import services
from eventloop import loop_runner, wait_until

from capwarden.trust import push

run = pytest.fixture(loop_runner)


class Recorder:
    """A plain subscriber (aiomqtt directly, not push.listen) that records what arrives."""

    def __init__(self, url, topics):
        self.broker = push.Broker(url)
        self.topics = topics
        self.got = []
        self.ready = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        async with self.broker.client() as client:
            for t in self.topics:
                await client.subscribe(t, qos=1)
            self.ready.set()
            async for msg in client.messages:
                self.got.append((str(msg.topic), msg.qos, json.loads(msg.payload)))

    async def stop(self):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_publishes_revocations_per_terminal_and_keysets_at_qos1(run, mosquitto):
    async def main():
        rec = Recorder(mosquitto.url, [push.terminal_topic("+"), push.KEYSET_TOPIC])
        await asyncio.wait_for(rec.ready.wait(), 20)
        pub = push.MqttPublisher(mosquitto.url)
        await pub.revocations({"terminal:a": 3, "terminal:b": 7})
        await pub.keyset(2)
        assert await wait_until(lambda: len(rec.got) == 3, 20)
        await pub.aclose()
        await rec.stop()
        return sorted(rec.got)

    assert run(main()) == [
        ("capwarden/v1/keysets", 1, {"kind": "keyset", "version": 2}),
        ("capwarden/v1/terminals/terminal:a", 1, {"kind": "revocations", "version": 3}),
        ("capwarden/v1/terminals/terminal:b", 1, {"kind": "revocations", "version": 7}),
    ]


def test_broker_down_does_not_block_and_delivers_after_it_comes_up(run, monkeypatch, caplog):
    services.require_mosquitto()
    port = services.free_port()
    url = "mqtt://127.0.0.1:%d" % port
    broker = services.MosquittoBroker()
    monkeypatch.setattr(push, "RECONNECT_MAX_S", 0.5)

    async def main():
        pub = push.MqttPublisher(url)
        # Nothing listens on the port: each call returns without waiting for any network step
        # (it is not even allowed to yield to the loop long enough for a connect attempt).
        for v in range(1, 51):
            await pub.revocations({"terminal:a": v})
        assert pub._pending == {push.terminal_topic("terminal:a"): 50}   # merged: newest only
        assert await wait_until(lambda: "unavailable" in caplog.text or "cannot reach" in caplog.text, 20)
        assert pub.published == 0 and not pub.connected
        # The broker comes up on that port: the publisher reconnects on its own and delivers.
        monkeypatch.setattr(services, "free_port", lambda host: port)
        await asyncio.get_running_loop().run_in_executor(None, broker.start)
        rec = Recorder(url, [push.terminal_topic("terminal:a")])
        await asyncio.wait_for(rec.ready.wait(), 20)
        await pub.revocations({"terminal:a": 51})
        assert await wait_until(lambda: (push.terminal_topic("terminal:a"), 1,
                                         {"kind": "revocations", "version": 51}) in rec.got, 30)
        # The broker forwards a QoS 1 message before its PUBACK reaches the publisher, so the
        # topic is forgotten a moment after the subscriber has it.
        assert await wait_until(lambda: pub._pending == {}, 20) and pub.connected
        await rec.stop()
        await pub.aclose()

    caplog.set_level(logging.WARNING, "capwarden.trust.push")
    try:
        run(main())
    finally:
        broker.stop()


def test_broker_lost_mid_run_reconnects(run, mosquitto, monkeypatch):
    monkeypatch.setattr(push, "RECONNECT_MAX_S", 0.5)
    port = mosquitto.port

    async def main():
        pub = push.MqttPublisher(mosquitto.url)
        await pub.keyset(1)
        assert await wait_until(lambda: pub.published == 1, 20)
        await asyncio.get_running_loop().run_in_executor(None, mosquitto.stop)
        assert await wait_until(lambda: not pub.connected, 20)
        await pub.keyset(2)      # while the broker is gone: returns, stays pending
        assert pub._pending == {push.KEYSET_TOPIC: 2}
        monkeypatch.setattr(services, "free_port", lambda host: port)
        await asyncio.get_running_loop().run_in_executor(None, mosquitto.start)
        assert await wait_until(lambda: pub.published == 2 and not pub._pending, 30)
        await pub.aclose()

    run(main())


def test_listen_hands_valid_messages_on_and_drops_others(run, mosquitto):
    async def main():
        got, connects = [], []

        async def on_message(kind, version):
            got.append((kind, version))

        async def on_connect():
            connects.append(1)

        broker = push.Broker(mosquitto.url)
        task = asyncio.get_running_loop().create_task(
            push.listen(broker, [push.terminal_topic("terminal:a"), push.KEYSET_TOPIC], on_message, on_connect))
        assert await wait_until(lambda: connects, 20)
        async with broker.client() as c:
            topic = push.terminal_topic("terminal:a")
            for bad in (b"not json", b'{"kind": "revocations"}', b'{"kind": "x", "version": 1}',
                        b'{"kind": "keyset", "version": -1}', b'{"kind": "keyset", "version": true}',
                        b'{"kind": "keyset", "version": 1, "extra": 0}', b"[" * 300):
                await c.publish(topic, bad, qos=1)
            await c.publish(topic, push.encode_message("revocations", 4), qos=1)
            await c.publish(push.KEYSET_TOPIC, push.encode_message("keyset", 9), qos=1)
            await c.publish(push.terminal_topic("terminal:b"), push.encode_message("revocations", 5), qos=1)
        assert await wait_until(lambda: len(got) >= 2, 20)
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return got

    assert run(main()) == [("revocations", 4), ("keyset", 9)]


def test_password_broker(run, mosquitto_factory):
    broker = mosquitto_factory(users={"svc": "s3cret", "t1": "pw1"},
                               acl="user svc\ntopic write capwarden/v1/#\nuser t1\ntopic read capwarden/v1/terminals/t1\n")

    async def main():
        got = []

        async def on_message(kind, version):
            got.append((kind, version))

        sub = asyncio.get_running_loop().create_task(
            push.listen(push.Broker(broker.url, username="t1", password="pw1"), [push.terminal_topic("t1")],
                        on_message))
        await asyncio.sleep(0.5)
        bad = push.MqttPublisher(broker.url, username="svc", password="wrong")
        await bad.revocations({"t1": 1})
        good = push.MqttPublisher("mqtt://svc:s3cret@127.0.0.1:%d" % broker.port)
        await good.revocations({"t1": 2})
        assert await wait_until(lambda: got == [("revocations", 2)], 20)
        assert bad.published == 0 and not bad.connected
        for p in (bad, good):
            await p.aclose()
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)

    run(main())


def test_broker_urls():
    b = push.Broker("mqtts://user:pa%40ss@broker.example:9999", ca_file="/ca.pem")
    assert (b.host, b.port, b.tls, b.username, b.password) == ("broker.example", 9999, True, "user", "pa@ss")
    assert push.Broker("mqtts://broker.example").port == 8883
    assert push.Broker("mqtt://127.0.0.1").port == 1883
    with pytest.raises(push.PushError, match="loopback") as e:
        push.Broker("mqtt://u:hunter2@broker.example")
    assert "hunter2" not in str(e.value)
    with pytest.raises(push.PushError) as e:
        push.Broker("http://u:hunter2@broker.example")
    assert "hunter2" not in str(e.value)
    assert isinstance(push.publisher_for(None), push.NullPublisher)
    assert isinstance(push.publisher_for("mqtt://localhost:1"), push.MqttPublisher)


def test_null_publisher_accepts_everything(run):
    async def main():
        p = push.NullPublisher()
        await p.start()
        await p.revocations({"terminal:a": 1})
        await p.keyset(1)
        await p.aclose()

    run(main())


def test_message_roundtrip():
    assert push.decode_message(push.encode_message("keyset", 12)) == ("keyset", 12)
    with pytest.raises(push.PushError):
        push.decode_message(b'{"kind": "keyset", "version": 1.0}')
