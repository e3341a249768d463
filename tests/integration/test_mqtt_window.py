"""The MQTT connection's send window on the real mosquitto: a connection cut while messages
are unacknowledged loses none and reorders none (at least once, as QoS 1 means).

The agent's connection goes through a loopback TCP proxy (`cua_dev.proxy`) that counts the
bytes from the broker: cutting after a given count cuts right after a given number of
PUBACKs, while the next messages are on the wire. A subscriber on the broker itself sees
every message.
"""

from __future__ import annotations

import asyncio
import functools
import uuid

import aiomqtt
import pytest

from cua.broker import MqttOptions, parse_broker_url
from cua.mqtt import MqttConnection
from cua_dev.proxy import RegistryProxy
from cua_dev.stack import LocalStack
from tests.builders import until

pytestmark = pytest.mark.integration

COUNT = 120
PAYLOAD = 13_000  # about a feedback message of 100 actions
CONNACK, SUBACK, PUBACK = 4, 5, 4  # bytes (MQTT 3.1.1, one subscription)
CUT_AFTER = 10  # PUBACKs


def _number(payload: bytes) -> int:
    return int(payload[:8])


async def test_a_connection_cut_mid_window_loses_and_reorders_nothing(stack: LocalStack) -> None:
    topic = f"window/{uuid.uuid4().hex}"
    received: list[int] = []
    delivered: list[int] = []

    async def tcp() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", stack.mqtt_port)

    with RegistryProxy(tcp) as proxy:
        proxy.cut_at(CONNACK + SUBACK + CUT_AFTER * PUBACK)
        options = MqttOptions(
            broker=parse_broker_url(f"tcp://{proxy.address}"),
            send_window=16,
            backoff_initial=0.05,
            backoff_max=0.1,
        )
        connection = MqttConnection(options, [f"{topic}/in"], on_message=lambda t, p: None)
        async with aiomqtt.Client("127.0.0.1", stack.mqtt_port) as subscriber:
            await subscriber.subscribe(topic, qos=1)
            running = asyncio.create_task(connection.run())
            try:
                for number in range(COUNT):
                    payload = f"{number:08d}".encode() + b"x" * PAYLOAD
                    connection.publish(
                        topic, payload, on_delivered=functools.partial(delivered.append, number)
                    )
                async with asyncio.timeout(60):
                    await until(lambda: proxy.held)  # cut after 10 PUBACKs, more sent
                    await until(lambda: not connection.connected)
                    # Those whose PUBACK came (and was handled before the loss was seen)
                    # left the queue: the others are sent again.
                    acknowledged = len(delivered)
                    assert delivered == list(range(acknowledged))
                    assert acknowledged <= CUT_AFTER
                    assert connection.pending == COUNT - acknowledged
                    proxy.release()
                    await connection._queue.wait_empty()
                    async for message in subscriber.messages:
                        assert isinstance(message.payload, bytes)
                        received.append(_number(message.payload))
                        if received[-1] == COUNT - 1:
                            break
            finally:
                await connection.stop(flush_timeout=5)
                await running
    # Each message acknowledged once, in order.
    assert delivered == list(range(COUNT))
    # The subscriber saw each one, in order; the unacknowledged ones again after the cut
    # (the broker may have taken them before the cut): never a gap, never one out of order.
    assert sorted(set(received)) == list(range(COUNT))
    highest = -1
    restarts = 0
    for number in received:
        assert number <= highest + 1, received
        if number <= highest:
            restarts += 1
            assert number >= acknowledged, received  # those acknowledged are not sent again
        highest = max(highest, number)
    first_seen = [n for i, n in enumerate(received) if n not in received[:i]]
    assert first_seen == list(range(COUNT))
    assert proxy.connections >= 2
