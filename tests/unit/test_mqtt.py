"""MQTT connection pieces that need no broker: URLs, backoff, the outgoing queue."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest
from aiomqtt.exceptions import MqttConnectError, MqttError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from cua.backoff import Backoff
from cua.broker import BrokerAddress, BrokerUrlError, MqttOptions, parse_broker_url
from cua.mqtt import (
    MqttConnection,
    OutgoingKind,
    OutgoingMessage,
    OutgoingQueue,
    _ignore_closed_socket_registration,
    describe_connect_error,
    incoming_queue_type,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def fresh_log_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the queue warnings from the first (they are rate-limited)."""
    import cua.mqtt
    from cua.logtext import Throttle

    monkeypatch.setattr(cua.mqtt, "_throttle", Throttle(cua.mqtt.log))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://localhost:1883", BrokerAddress("localhost", 1883, tls=False)),
        ("mqtt://127.0.0.1", BrokerAddress("127.0.0.1", 1883, tls=False)),
        ("TCP://Broker.local:2000", BrokerAddress("broker.local", 2000, tls=False)),
        ("ssl://h", BrokerAddress("h", 8883, tls=True)),
        ("mqtts://h:9000", BrokerAddress("h", 9000, tls=True)),
        ("tls://127.0.0.1:8884/", BrokerAddress("127.0.0.1", 8884, tls=True)),
        ("tcp://[::1]:1883", BrokerAddress("::1", 1883, tls=False)),
    ],
)
def test_broker_urls(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("localhost:1883", "missing scheme"),
        ("ws://h:80", "unsupported scheme 'ws'"),
        ("https://h", "unsupported scheme"),
        ("tcp://", "missing host"),
        ("tcp://h:port", "invalid port"),
        ("tcp://h:0", "invalid port"),
        ("tcp://u:p@h:1883", "credentials in the URL"),
        ("tcp://h:1883/topic", "unexpected path"),
    ],
)
def test_bad_broker_urls(url: str, reason: str) -> None:
    with pytest.raises(BrokerUrlError, match=reason):
        parse_broker_url(url)


def test_broker_address_str() -> None:
    assert str(BrokerAddress("::1", 1883, tls=False)) == "mqtt://[::1]:1883"
    assert str(BrokerAddress("h", 8883, tls=True)) == "mqtts://h:8883"


def test_backoff_grows_caps_and_resets() -> None:
    # rng returns the upper bound: the ceiling itself.
    backoff = Backoff(0.5, 4.0, rng=lambda low, high: high)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_stays_within_half_to_full() -> None:
    backoff = Backoff(1.0, 8.0)
    for ceiling in (1.0, 2.0, 4.0, 8.0, 8.0, 8.0):
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_never_overflows() -> None:
    backoff = Backoff(0.5, 30.0, rng=lambda low, high: high)
    for _ in range(2000):
        delay = backoff.next_delay()
    assert delay == 30.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="backoff"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="backoff"):
        Backoff(2, 1)


def message(name: str, kind: OutgoingKind) -> OutgoingMessage:
    return OutgoingMessage(name, name.encode(), 1, False, kind)


async def test_queue_drops_oldest_non_feedback_first(caplog: pytest.LogCaptureFixture) -> None:
    queue = OutgoingQueue(3)
    f1 = message("f1", OutgoingKind.FEEDBACK)
    s1 = message("s1", OutgoingKind.OTHER)
    f2 = message("f2", OutgoingKind.FEEDBACK)
    for item in (f1, s1, f2):
        queue.put(item)
    queue.put(message("f3", OutgoingKind.FEEDBACK))
    assert [m.topic for m in queue.messages()] == ["f1", "f2", "f3"]
    assert "dropped the oldest other message for s1" in caplog.text
    # Only feedback left: the oldest feedback goes.
    queue.put(message("f4", OutgoingKind.FEEDBACK))
    assert [m.topic for m in queue.messages()] == ["f2", "f3", "f4"]
    assert queue.dropped == 2


async def test_queue_is_bounded_by_bytes_and_drops_are_summarised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = OutgoingQueue(100_000, byte_limit=10_000)
    feedback = OutgoingMessage("fb", b"f" * 1000, 1, False, OutgoingKind.FEEDBACK)
    queue.put(feedback)
    for index in range(5000):
        queue.put(OutgoingMessage(f"s{index}", b"s" * 1000, 1, True, OutgoingKind.OTHER))
    assert queue.size <= 10_000
    assert len(queue) == 10
    # The oldest non-feedback messages went; the feedback stayed.
    assert [m.topic for m in queue.messages()] == ["fb", *(f"s{i}" for i in range(4991, 5000))]
    assert (queue.dropped, queue.dropped_bytes) == (4991, 4_991_000)
    drops = [r for r in caplog.records if "outgoing queue full" in r.getMessage()]
    assert 1 <= len(drops) <= 5  # rate-limited, not one line per drop
    assert queue.messages()[0] is feedback
    queue.pop_sent(feedback)
    assert queue.size == 9000


async def test_incoming_queue_is_bounded_by_bytes(caplog: pytest.LogCaptureFixture) -> None:
    import aiomqtt

    queue = incoming_queue_type(3000)()

    def received(size: int) -> aiomqtt.Message:
        return aiomqtt.Message("t", b"x" * size, qos=1, retain=False, mid=1, properties=None)

    for _ in range(10):
        queue.put_nowait(received(1000))
    assert (queue.qsize(), queue.size, queue.dropped) == (3, 3000, 7)
    assert "MQTT incoming queue full (3000 bytes at most): dropped a message" in caplog.text
    await queue.get()
    queue.put_nowait(received(1000))
    assert (queue.qsize(), queue.size) == (3, 3000)


async def test_a_producer_waits_for_room_while_connected() -> None:
    """Feedback goes at the broker's pace instead of being dropped by a full queue."""
    connection = MqttConnection(
        MqttOptions(broker=parse_broker_url("tcp://127.0.0.1:1"), queue_bytes=10_000),
        ["t"],
        on_message=lambda topic, payload: None,
    )
    for index in range(9):
        connection.publish(f"t{index}", b"x" * 1000)
    await asyncio.wait_for(connection.wait_for_room(), 1)  # disconnected: never waits
    connection._connected.set()
    waiting = asyncio.create_task(connection.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    queue = connection._queue
    for _ in range(4):
        message = queue.messages()[0]
        queue.pop_sent(message)  # the broker acknowledged it
    await asyncio.wait_for(waiting, 1)
    assert queue.size == 5000
    assert queue.dropped == 0


async def test_queue_pop_sent_by_identity() -> None:
    queue = OutgoingQueue(10)
    a = message("x", OutgoingKind.OTHER)
    b = message("x", OutgoingKind.OTHER)  # equal, not the same
    queue.put(a)
    queue.put(b)
    assert queue.messages()[0] is a
    queue.pop_sent(b)
    assert queue.messages()[0] is a
    assert len(queue) == 1
    queue.pop_sent(a)
    assert queue.messages() == []
    await queue.wait_empty()


async def test_on_delivered_is_called_after_the_broker_acknowledged_only() -> None:
    """`_send` calls a message's `on_delivered` once `publish` returned (PUBACK); a publish
    that fails (connection lost) keeps the message queued and calls nothing."""
    connection = MqttConnection(
        MqttOptions(broker=parse_broker_url("tcp://127.0.0.1:1")),
        ["t"],
        on_message=lambda topic, payload: None,
    )
    delivered: list[str] = []
    acknowledge = asyncio.Event()
    sent: list[str] = []

    class Client:
        async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
            sent.append(topic)
            if topic == "lost":
                raise MqttError("connection lost")
            await acknowledge.wait()

    connection.publish("final", b"x", on_delivered=lambda: delivered.append("final"))
    sender = asyncio.create_task(connection._send(Client()))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert (sent, delivered) == (["final"], [])  # written, no PUBACK yet
    acknowledge.set()
    await asyncio.wait_for(connection._queue.wait_empty(), 1)
    assert delivered == ["final"]
    connection.publish("lost", b"x", on_delivered=lambda: delivered.append("lost"))
    with pytest.raises(MqttError):
        await asyncio.wait_for(sender, 1)
    assert delivered == ["final"]
    assert connection.pending == 1  # sent again on the next connection


def options() -> MqttOptions:
    return MqttOptions(broker=BrokerAddress("h", 1883, tls=False), username="agent", password="pw")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (4, "bad username or password (user 'agent')"),
        (134, "bad username or password (user 'agent')"),
        (5, "not authorized (user 'agent'); check client_username and client_password"),
        (135, "not authorized (user 'agent'); check client_username and client_password"),
    ],
)
def test_connect_refusal_lines(code: int, expected: str) -> None:
    rc: int | ReasonCode = code
    if code > 100:
        rc = ReasonCode(PacketTypes.CONNACK, identifier=code)
    line = describe_connect_error(MqttConnectError(rc), options())
    assert line == f"broker mqtt://h:1883 refused the connection: {expected}"
    assert "pw" not in line.replace("password", "")


def test_connect_failure_line() -> None:
    line = describe_connect_error(MqttError("[Errno 111] Connection refused"), options())
    assert line == "cannot connect to broker mqtt://h:1883: [Errno 111] Connection refused"


# --- the loop exception handler --------------------------------------------------------------


def _context_for(loop: asyncio.AbstractEventLoop, exc: BaseException) -> dict[str, Any]:
    handle = asyncio.Handle(loop.add_writer, (8, print), loop)
    return {"message": "Exception in callback", "exception": exc, "handle": handle}


def test_closed_socket_registration_race_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG):
            _ignore_closed_socket_registration(
                loop, _context_for(loop, OSError(errno.EBADF, "Bad file descriptor"))
            )
        assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    finally:
        loop.close()


def test_other_loop_errors_reach_the_default_handler(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.DEBUG):
            _ignore_closed_socket_registration(
                loop, _context_for(loop, OSError(errno.EPIPE, "Broken pipe"))
            )
        assert any(
            r.levelno == logging.ERROR and "Exception in callback" in r.getMessage()
            for r in caplog.records
        )
    finally:
        loop.close()


@pytest.mark.parametrize(("keep_alive", "sent"), [(20.0, 20), (0.0, 0), (0.25, 0), (1.9, 1)])
async def test_keep_alive_in_whole_seconds_as_kanto(keep_alive: float, sent: int) -> None:
    """Kanto hands `keep_alive` to paho as whole seconds (truncated); 0 turns pings off: the
    CONNECT packet says so (MQTT 3.1.1: its variable header's bytes 8 and 9)."""
    said: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1)  # CONNECT's type
        length, shift = 0, 0
        while True:  # the remaining length, a variable-length integer
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        header = await reader.readexactly(length)
        if not said.done():
            said.set_result(int.from_bytes(header[8:10], "big"))
        writer.close()  # no CONNACK

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = MqttOptions(
        BrokerAddress("127.0.0.1", port, False), keep_alive=keep_alive, connect_timeout=0.5
    )
    connection = MqttConnection(options, ["t"], on_message=lambda topic, payload: None)
    running = asyncio.create_task(connection.run())
    try:
        assert await asyncio.wait_for(said, 10) == sent
        await asyncio.wait_for(connection.wait_first_attempt(), 10)
    finally:
        await connection.stop(0)
        await asyncio.wait_for(running, 10)
        server.close()


async def test_a_broker_that_never_answers_is_named_at_once_then_no_connack(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The TCP connection is accepted, no CONNACK ever comes: `connecting to ...` is logged
    before anything else, then the failure says which timeout ran out."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    options = MqttOptions(BrokerAddress("127.0.0.1", port, False), connect_timeout=0.5)
    connection = MqttConnection(options, ["t"], on_message=lambda topic, payload: None)
    with caplog.at_level(logging.INFO, logger="cua.mqtt"):
        running = asyncio.create_task(connection.run())
        await asyncio.wait_for(connection.wait_first_attempt(), 10)
        await connection.stop(0)
        await asyncio.wait_for(running, 10)
    server.close()
    for writer in accepted:
        writer.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "cua.mqtt"]
    assert lines[0] == f"connecting to MQTT broker mqtt://127.0.0.1:{port}"
    assert lines[1].startswith(
        f"cannot connect to broker mqtt://127.0.0.1:{port}: no CONNACK within 0.5 s "
        "(connection.connect_timeout): the broker accepted the connection but did not answer; "
        "retrying in "
    )
    assert "Operation timed out" not in caplog.text


# --- the send window -------------------------------------------------------------------------


class WindowClient:
    """A client whose publishes wait until the test acknowledges (or fails) them."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.acks: dict[str, asyncio.Future[None]] = {}

    async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
        self.sent.append(topic)
        acknowledged = asyncio.get_running_loop().create_future()
        self.acks[topic] = acknowledged
        await acknowledged

    def ack(self, *topics: str) -> None:
        for topic in topics:
            self.acks[topic].set_result(None)

    def lose(self, topic: str) -> None:
        self.acks[topic].set_exception(MqttError("connection lost"))


def windowed(window: int, **more: Any) -> MqttConnection:
    return MqttConnection(
        MqttOptions(broker=parse_broker_url("tcp://127.0.0.1:1"), send_window=window, **more),
        ["t"],
        on_message=lambda topic, payload: None,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_window_sends_in_order_and_delivers_in_order() -> None:
    connection = windowed(4)
    delivered: list[str] = []
    for index in range(10):
        connection.publish(
            f"m{index}", b"x", on_delivered=lambda i=index: delivered.append(f"m{i}")
        )
    client = WindowClient()
    sender = asyncio.create_task(connection._send(client))  # type: ignore[arg-type]
    await settle()
    assert client.sent == ["m0", "m1", "m2", "m3"]  # 4 outstanding at most
    # Acknowledged out of order: nothing leaves the queue before the oldest.
    client.ack("m2", "m1")
    await settle()
    assert (delivered, connection.pending, client.sent) == ([], 10, ["m0", "m1", "m2", "m3"])
    client.ack("m0")
    await settle()
    assert delivered == ["m0", "m1", "m2"]
    assert connection.pending == 7
    assert client.sent == [f"m{i}" for i in range(7)]  # the window refilled, in order
    assert [m.topic for m in connection._queue.messages()] == [f"m{i}" for i in range(3, 10)]
    for index in range(3, 10):
        await settle()
        client.ack(f"m{index}")
    await asyncio.wait_for(connection._queue.wait_empty(), 1)
    assert delivered == [f"m{i}" for i in range(10)]
    assert client.sent == [f"m{i}" for i in range(10)]  # each once
    # Messages queued later go out at once.
    connection.publish("late", b"x")
    await settle()
    assert client.sent[-1] == "late"
    sender.cancel()


async def test_a_connection_lost_mid_window_resends_every_unacknowledged_message_in_order() -> None:
    connection = windowed(4)
    delivered: list[str] = []
    for index in range(8):
        connection.publish(
            f"m{index}", b"x", on_delivered=lambda i=index: delivered.append(f"m{i}")
        )
    first = WindowClient()
    sender = asyncio.create_task(connection._send(first))  # type: ignore[arg-type]
    await settle()
    first.ack("m0", "m2")  # m1 is never acknowledged on this connection
    await settle()
    assert first.sent == ["m0", "m1", "m2", "m3", "m4"]
    first.lose("m1")
    with pytest.raises(MqttError):
        await asyncio.wait_for(sender, 1)
    assert delivered == ["m0"]  # m2 was acknowledged, but after m1: it is sent again
    assert [m.topic for m in connection._queue.messages()] == [f"m{i}" for i in range(1, 8)]
    # The publishes still outstanding on the lost connection were cancelled.
    assert all(first.acks[t].cancelled() for t in ("m3", "m4"))
    second = WindowClient()
    sender = asyncio.create_task(connection._send(second))  # type: ignore[arg-type]
    await settle()
    assert second.sent == ["m1", "m2", "m3", "m4"]
    for index in range(1, 8):
        second.ack(f"m{index}")
        await settle()
    await asyncio.wait_for(connection._queue.wait_empty(), 1)
    assert second.sent == [f"m{i}" for i in range(1, 8)]
    assert delivered == [f"m{i}" for i in range(8)]
    sender.cancel()


async def test_the_window_keeps_the_queue_bounds() -> None:
    """Messages in flight stay queued (and counted) until acknowledged: a producer waits for
    their PUBACKs; the queue may drop one in flight, the others go on in order."""
    connection = windowed(3, queue_bytes=10_000, queue_limit=6)
    for index in range(9):
        connection.publish(f"m{index}", b"x" * 1000, kind=OutgoingKind.FEEDBACK)
    connection._connected.set()
    client = WindowClient()
    sender = asyncio.create_task(connection._send(client))  # type: ignore[arg-type]
    await settle()
    assert connection._queue.size == 6000  # m3..m8: the count limit dropped m0..m2
    assert client.sent == ["m3", "m4", "m5"]
    waiting = asyncio.create_task(connection.wait_for_room())
    await settle()
    assert not waiting.done()  # sent is not acknowledged: still 6000 bytes queued
    client.ack("m3")
    await settle()
    assert waiting.done()  # 5000 bytes: half the byte limit
    assert client.sent == ["m3", "m4", "m5", "m6"]  # m3 left the window, m6 came in
    # Full by count: the oldest queued goes, although it is in flight.
    connection.publish("n0", b"x" * 1000, kind=OutgoingKind.FEEDBACK)
    connection.publish("n1", b"x" * 1000, kind=OutgoingKind.FEEDBACK)
    queued = ["m5", "m6", "m7", "m8", "n0", "n1"]
    assert [m.topic for m in connection._queue.messages()] == queued
    client.ack("m4")  # the dropped one's PUBACK: nothing else leaves the queue
    await settle()
    assert [m.topic for m in connection._queue.messages()] == queued
    assert client.sent == ["m3", "m4", "m5", "m6", "m7"]
    for topic in queued:
        client.ack(topic)
        await settle()
    await asyncio.wait_for(connection._queue.wait_empty(), 1)
    assert client.sent == ["m3", "m4", *queued]
    assert (connection._queue.size, connection._queue.dropped) == (0, 4)
    sender.cancel()
