"""The agent's MQTT connection: connect, stay connected, queue what must go out.

Kanto's agent gives up when the broker is down at start and ignores the TLS settings
(spec §10, D1/D2). This connection reconnects forever with capped exponential backoff and
jitter, honours TLS (CA, client certificate and key), renews its subscriptions on every
connect and keeps what is published while disconnected in a bounded queue that is sent, in
order, once connected again. A message leaves the queue only when the broker acknowledged
it (QoS 1 PUBACK), so a connection lost mid-send resends it (at least once, as QoS 1 means).

Up to `MqttOptions.send_window` QoS 1 messages are on the wire unacknowledged at once (a
window, as MQTT allows): the next ones are written while the broker acknowledges the first,
instead of one round trip per message. They are written in queue order, they leave the queue
and their `on_delivered` is called in that order as they are acknowledged, and a connection
lost mid-window resends every unacknowledged one, in order, on the next connection.

One `aiomqtt.Client` is made per connection attempt: paho's own session state never
outlives a connection, our queue is the only place where unsent messages live.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import math
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt import client as paho_client
from paho.mqtt.reasoncodes import ReasonCode

from cua.backoff import Backoff
from cua.broker import DEFAULT_QUEUE_BYTES, MqttOptions, MqttVersion, tls_context
from cua.logtext import Throttle

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["MqttConnection", "OutgoingKind"]

log = logging.getLogger(__name__)

_throttle = Throttle(log)

# CONNACK refusals that mean "your credentials are wrong" (3.1.1 codes 4, 5; MQTT 5 codes
# 134, 135 — paho reports 3.1.1 refusals as the MQTT 5 reason codes).
_BAD_CREDENTIALS = frozenset({4, 134})
_NOT_AUTHORIZED = frozenset({5, 135})


class OutgoingKind(enum.Enum):
    """Feedback is what an update manager waits for; it is dropped last when the queue is full."""

    FEEDBACK = "feedback"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    kind: OutgoingKind
    # Called once the broker acknowledged the message (not for one dropped or never sent).
    on_delivered: Callable[[], None] | None = None


class OutgoingQueue:
    """FIFO bounded by count and by bytes. When full, the oldest non-feedback message is
    dropped (else the oldest); the drops are logged (rate-limited, with a summary)."""

    def __init__(self, limit: int, byte_limit: int = DEFAULT_QUEUE_BYTES) -> None:
        if limit < 1 or byte_limit < 1:
            raise ValueError("queue limits must be >= 1")
        self._limit = limit
        self._byte_limit = byte_limit
        # In order. A dropped message may stay in these deques until it reaches the left
        # end (dropping is O(1)); `_live` has the ids of the messages really queued.
        self._items: deque[OutgoingMessage] = deque()
        self._base = 0  # position of `_items[0]`: positions count every message ever put
        self._others: deque[OutgoingMessage] = deque()  # the non-feedback ones
        self._live: set[int] = set()
        self._bytes = 0
        self._changed = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._shrunk = asyncio.Event()
        self.dropped = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._live)

    @property
    def size(self) -> int:
        """Bytes of payload queued."""
        return self._bytes

    def messages(self) -> list[OutgoingMessage]:
        """The queued messages, oldest first."""
        return [m for m in self._items if id(m) in self._live]

    def put(self, message: OutgoingMessage) -> None:
        size = len(message.payload)
        while self._live and (
            len(self._live) >= self._limit or self._bytes + size > self._byte_limit
        ):
            self._drop_one()
        self._items.append(message)
        if message.kind is not OutgoingKind.FEEDBACK:
            self._others.append(message)
        self._live.add(id(message))
        self._bytes += size
        self._changed.set()
        self._empty.clear()

    def _drop_one(self) -> None:
        self._trim()
        victim = self._others[0] if self._others else self._items[0]
        self._forget(victim)
        self.dropped += 1
        self.dropped_bytes += len(victim.payload)
        _throttle.warning(
            "outgoing-drop",
            "MQTT outgoing queue full (%d messages, %d bytes at most): dropped the oldest %s"
            " message for %s (%d bytes)",
            self._limit,
            self._byte_limit,
            victim.kind.value,
            victim.topic,
            len(victim.payload),
        )

    def _forget(self, message: OutgoingMessage) -> None:
        if id(message) in self._live:
            self._live.discard(id(message))
            self._bytes -= len(message.payload)
        self._trim()
        self._shrunk.set()
        if not self._live:
            self._empty.set()

    async def wait_below(self, size: int) -> None:
        """Until at most `size` bytes are queued."""
        while self._bytes > size:
            self._shrunk.clear()
            await self._shrunk.wait()

    def _trim(self) -> None:
        """Drop references to messages no longer queued from the left ends."""
        while self._items and id(self._items[0]) not in self._live:
            self._items.popleft()
            self._base += 1
        while self._others and id(self._others[0]) not in self._live:
            self._others.popleft()

    def next_from(self, position: int) -> tuple[int, OutgoingMessage] | None:
        """The oldest message queued at `position` or after, with its position (positions
        count every message ever put: the sender's cursor; 0 is the oldest queued)."""
        self._trim()
        items = self._items
        index = max(position - self._base, 0)
        while index < len(items):
            message = items[index]
            if id(message) in self._live:
                return self._base + index, message
            index += 1
        return None

    def pop_sent(self, message: OutgoingMessage) -> None:
        """Remove `message` after the broker acknowledged it (it may have been dropped)."""
        self._forget(message)

    async def wait_empty(self) -> None:
        await self._empty.wait()

    async def wait_changed(self) -> None:
        """Until a message is put or `wake()` is called (since the last return)."""
        await self._changed.wait()
        self._changed.clear()

    def wake(self) -> None:
        """Wake `wait_changed` (the sender: one of its publishes ended)."""
        self._changed.set()


class IncomingQueue(asyncio.Queue["aiomqtt.Message"]):
    """aiomqtt's queue of received messages, bounded by bytes (aiomqtt bounds it by count
    only): a message that does not fit is dropped and logged (rate-limited)."""

    byte_limit = DEFAULT_QUEUE_BYTES

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.size = 0
        self.dropped = 0

    def put_nowait(self, item: aiomqtt.Message) -> None:
        size = _payload_size(item)
        if self.size + size > self.byte_limit:
            self.dropped += 1
            _throttle.warning(
                "incoming-drop",
                "MQTT incoming queue full (%d bytes at most): dropped a message of %d bytes on %s",
                self.byte_limit,
                size,
                item.topic.value,
            )
            return
        super().put_nowait(item)
        self.size += size

    def get_nowait(self) -> aiomqtt.Message:
        item = super().get_nowait()
        self.size -= _payload_size(item)
        return item


def _payload_size(message: aiomqtt.Message) -> int:
    payload = message.payload
    return len(payload) if isinstance(payload, bytes | bytearray | str) else 8


def incoming_queue_type(byte_limit: int) -> type[IncomingQueue]:
    """An IncomingQueue class with this byte limit (aiomqtt makes the queue itself)."""
    return type("BoundedIncomingQueue", (IncomingQueue,), {"byte_limit": byte_limit})


MessageHandler = Callable[[str, bytes], None]
ConnectHook = Callable[[], Awaitable[None]]


def describe_connect_error(error: BaseException, options: MqttOptions) -> str:
    """A log line for a failed connect: says plainly when the credentials were refused."""
    code = getattr(error, "rc", None)
    value = code.value if isinstance(code, ReasonCode) else code
    user = f"user {options.username!r}" if options.username else "no username"
    if isinstance(error, MqttConnectError) and value in _BAD_CREDENTIALS:
        return f"broker {options.broker} refused the connection: bad username or password ({user})"
    if isinstance(error, MqttConnectError) and value in _NOT_AUTHORIZED:
        return (
            f"broker {options.broker} refused the connection: not authorized ({user});"
            " check client_username and client_password"
        )
    if isinstance(error, MqttConnectError):
        return f"broker {options.broker} refused the connection: {error}"
    text = str(error) or type(error).__name__
    return f"cannot connect to broker {options.broker}: {text}"


def _ignore_closed_socket_registration(
    loop: asyncio.AbstractEventLoop, context: dict[str, Any]
) -> None:
    """Loop exception handler: drop one known aiomqtt race, pass on everything else.

    aiomqtt registers paho's socket with the loop through `call_soon_threadsafe(add_writer,
    fd, ...)`; when the broker closes the connection at once (a TLS 1.3 server refusing our
    certificate), the socket is closed before that callback runs and `add_writer` fails with
    EBADF. The connection failure itself is reported by the reconnect loop.
    """
    exc = context.get("exception")
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)
    if (
        isinstance(exc, OSError)
        and exc.errno == errno.EBADF
        and getattr(callback, "__name__", "") in ("add_writer", "add_reader")
    ):
        log.debug("socket closed before the event loop watched it (connection lost)")
        return
    loop.default_exception_handler(context)


# A message being published, and its publish (its error, or None once acknowledged).
_InFlight = tuple[OutgoingMessage, "asyncio.Task[aiomqtt.MqttError | None]"]


def _watching(closed: Callable[[str], None]) -> type[ssl.SSLSocket]:
    """A TLS socket class whose reads tell `closed` why the broker ended the connection
    (an alert, or its end): set as the context's `sslsocket_class` (the standard library's
    hook for this), it is the socket paho reads. aiomqtt ignores a connection lost before
    the CONNACK and waits for its timeout; with TLS 1.3 a broker refusing our certificate
    says so with an alert after the handshake, at the first read."""

    class Watched(ssl.SSLSocket):
        def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
            try:
                data = super().read(len, buffer)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # nothing to read yet (a non-blocking socket)
            except OSError as error:
                closed(str(error) or type(error).__name__)
                raise
            if not data:
                closed("the broker closed the connection")
            return data

    return Watched


class MqttConnection:
    """Keeps one MQTT session alive until `stop()`; owns its tasks in a TaskGroup.

    `on_message(topic, payload)` is called for each incoming message (must not block);
    `on_connect()` runs after every (re)connect, once the subscriptions are in place.
    """

    def __init__(
        self,
        options: MqttOptions,
        subscriptions: Sequence[str],
        on_message: MessageHandler,
        on_connect: ConnectHook | None = None,
    ) -> None:
        self.options = options
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._on_connect = on_connect
        self._queue = OutgoingQueue(options.queue_limit, options.queue_bytes)
        self._backoff = Backoff(options.backoff_initial, options.backoff_max)
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._first_attempt = asyncio.Event()  # the first connect attempt ended (either way)
        self._attempts = 0  # connect attempts made
        self._session_up = False

    # --- publishing --------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        kind: OutgoingKind = OutgoingKind.OTHER,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        """Queue a message; it is sent as soon as (or once) connected. Never blocks.
        `on_delivered` is called after the broker's PUBACK (never if the message is lost)."""
        self._queue.put(OutgoingMessage(topic, payload, qos, retain, kind, on_delivered))

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def wait_for_room(self) -> None:
        """While connected, wait until the queue is at most half full (in bytes): a producer
        that can wait (an operation's feedback) goes at the broker's pace instead of making
        the queue drop its messages. Disconnected, it returns at once (the queue bounds)."""
        while self._connected.is_set() and not self._stopping.is_set():
            if self._queue.size <= self.options.queue_bytes // 2:
                return
            # Rechecked every 0.5 s: the connection may drop meanwhile (nothing is sent).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._queue.wait_below(self.options.queue_bytes // 2)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Returns once connected and subscribed (the first time, or now if connected)."""
        await self._connected.wait()

    async def wait_first_attempt(self) -> None:
        """Returns once the first connect attempt succeeded or failed (or now, if it has)."""
        await self._first_attempt.wait()

    # --- life cycle ------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, reconnect, send and receive until `stop()` is called."""
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(_ignore_closed_socket_registration)
        try:
            await self._run()
        finally:
            loop.set_exception_handler(previous_handler)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._session_up = False
            try:
                await self._session()
            except (aiomqtt.MqttError, OSError) as exc:  # OSError: e.g. a TLS file vanished
                if self._session_up:
                    problem = f"MQTT connection to {self.options.broker} lost: {exc}"
                else:
                    problem = describe_connect_error(exc, self.options)
            except Exception as exc:  # never give up on the broker because of one failure
                log.exception("unexpected MQTT error")
                problem = f"unexpected MQTT error: {exc}"
            else:
                continue
            self._connected.clear()
            self._first_attempt.set()
            if self._stopping.is_set():
                break
            delay = self._backoff.next_delay()
            log.warning(
                "%s; %s in %.1f s",
                problem,
                "reconnecting" if self._session_up else "retrying",
                delay,
            )
            await self._sleep_unless_stopping(delay)
        self._connected.clear()

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Send what is queued (up to `flush_timeout` s when connected), then disconnect."""
        if self._connected.is_set() and len(self._queue):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.wait_empty(), flush_timeout)
        if len(self._queue):
            log.warning("stopping with %d MQTT message(s) not sent", len(self._queue))
        self._stopping.set()

    async def _sleep_unless_stopping(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    def _client(self, closed: Callable[[str], None]) -> aiomqtt.Client:
        """A client for one connection; `closed` is told why the broker ended a TLS
        connection (`_watching`)."""
        o = self.options
        v5 = o.version is MqttVersion.V5
        tls = None
        if o.broker.tls:
            tls = tls_context(o.tls)
            tls.sslsocket_class = _watching(closed)
        client = aiomqtt.Client(
            o.broker.host,
            o.broker.port,
            username=o.username or None,
            password=o.password or None,
            identifier=o.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else True,
            # paho refuses clean_start with 3.1.1 (its default, FIRST_ONLY, is ignored there).
            clean_start=True if v5 else paho_client.MQTT_CLEAN_START_FIRST_ONLY,
            # Whole seconds, truncated, 0 = no pings: as Kanto's paho client takes it.
            keepalive=int(o.keep_alive),
            timeout=o.connect_timeout,
            tls_context=tls,
            logger=logging.getLogger("cua.mqtt.paho"),
            queue_type=incoming_queue_type(o.incoming_bytes),
            max_inflight_messages=max(o.send_window, 1),
        )
        # aiomqtt warns above this many calls awaiting their acknowledgement: a full window
        # (and the subscriptions) is what we mean to have.
        client.pending_calls_threshold = max(o.send_window, 1) + len(self._subscriptions)
        return client

    async def _session(self) -> None:
        """One connection: connect, subscribe, hook, then send and receive until it drops."""
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[str] = loop.create_future()

        def mark_closed(reason: str) -> None:
            if not closed.done():
                closed.set_result(reason)

        def tell_closed(reason: str) -> None:  # from paho's reads, on any thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(mark_closed, reason)

        client = self._client(tell_closed)
        # At once, so that a broker that never answers is not silent for connect_timeout.
        log.log(
            logging.DEBUG if self._attempts else logging.INFO,
            "connecting to MQTT broker %s",
            self.options.broker,
        )
        self._attempts += 1
        await self._enter(client, closed)
        async with contextlib.AsyncExitStack() as exits:
            exits.push_async_exit(client)
            self._backoff.reset()
            await client.subscribe(
                [(topic, 1) for topic in self._subscriptions],
                timeout=self.options.subscribe_timeout,
            )
            log.info(
                "connected to MQTT broker %s (client id %s), subscribed to %s",
                self.options.broker,
                self.options.client_id,
                ", ".join(self._subscriptions),
            )
            self._session_up = True
            self._connected.set()
            self._first_attempt.set()
            try:
                async with asyncio.TaskGroup() as group:
                    receiver = group.create_task(self._receive(client))
                    sender = group.create_task(self._send(client))
                    if self._on_connect is not None:
                        group.create_task(self._run_connect_hook(self._on_connect))
                    await self._stopping.wait()
                    receiver.cancel()
                    sender.cancel()
            except* aiomqtt.MqttError as group_error:
                self._connected.clear()
                raise group_error.exceptions[0] from None
            self._connected.clear()
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(
                    list(self._subscriptions), timeout=self.options.unsubscribe_timeout
                )
            log.info("disconnecting from MQTT broker %s", self.options.broker)
            # Leaving the context sends DISCONNECT and waits for the socket to close, for at
            # most `client.timeout` seconds: Kanto's disconnect_timeout (at least 0.25 s).
            client.timeout = max(self.options.disconnect_timeout, 0.25)

    async def _enter(self, client: aiomqtt.Client, closed: asyncio.Future[str]) -> None:
        """`client.__aenter__()`, but a TLS connection the broker closes before its CONNACK
        (`closed`: e.g. a TLS 1.3 server refusing our certificate after the handshake) fails
        at once instead of after the whole connect timeout. (A plain TCP one waits for that
        timeout: aiomqtt signals neither, and only TLS sockets have a public hook.)"""
        entering = asyncio.ensure_future(client.__aenter__())
        first: set[asyncio.Future[Any]] = {entering, closed}
        try:
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if not entering.done():
                # A refused CONNACK also closes the socket: let its clearer error win.
                await asyncio.wait({entering}, timeout=0.2)
        except asyncio.CancelledError:
            entering.cancel()
            raise
        if entering.done():
            try:
                entering.result()
            except aiomqtt.MqttError as exc:
                if str(exc) == "Operation timed out":  # aiomqtt's text for any timeout
                    raise aiomqtt.MqttError(
                        f"no CONNACK within {self.options.connect_timeout:g} s "
                        "(connection.connect_timeout): the broker accepted the connection "
                        "but did not answer"
                    ) from None
                raise
            return
        entering.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await entering
        raise aiomqtt.MqttError(
            f"the connection was closed before the broker accepted it ({closed.result()})"
        )

    async def _run_connect_hook(self, hook: ConnectHook) -> None:
        try:
            await hook()
        except Exception:  # the hook's failure must not take the connection down
            log.exception("error in the MQTT on-connect hook")

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                self._on_message(message.topic.value, payload)
            except Exception:  # a handler bug must not take the connection down
                log.exception("error handling a message on %s", message.topic.value)

    async def _send(self, client: aiomqtt.Client) -> None:
        """Send the queue in order, `send_window` messages unacknowledged at most; raises
        (ending the session) when a publish fails: what was not acknowledged stays queued."""
        window = max(self.options.send_window, 1)
        queue = self._queue
        in_flight: deque[_InFlight] = deque()
        position = 0  # the queue position of the next message to send
        try:
            async with asyncio.TaskGroup() as group:  # the publishes in flight
                while True:
                    self._acknowledged(in_flight)  # raises MqttError: one was not
                    while len(in_flight) < window:
                        found = queue.next_from(position)
                        if found is None:
                            break
                        position, message = found
                        position += 1
                        # Tasks start in the order they are made (the loop runs ready
                        # callbacks first in, first out) and `publish` writes before its
                        # first await: the messages go on the wire in queue order.
                        publishing = group.create_task(self._publish(client, message))
                        publishing.add_done_callback(self._publish_ended)
                        in_flight.append((message, publishing))
                    await queue.wait_changed()
        except* aiomqtt.MqttError as failed:
            raise failed.exceptions[0] from None
        finally:
            # Ending (the connection was lost, the session stops): what was acknowledged
            # before still leaves the queue rather than being sent again.
            with contextlib.suppress(aiomqtt.MqttError):
                self._acknowledged(in_flight)

    def _acknowledged(self, in_flight: deque[_InFlight]) -> None:
        """The acknowledged ones at the head of the window leave the queue, in order; raises
        the error of the oldest one that failed."""
        while in_flight and in_flight[0][1].done():
            message, publishing = in_flight[0]
            if publishing.cancelled():
                return
            error = publishing.result()
            if error is not None:  # not acknowledged (connection lost, timeout)
                raise error
            in_flight.popleft()
            self._queue.pop_sent(message)
            self._delivered(message)

    def _publish_ended(self, _: asyncio.Future[aiomqtt.MqttError | None]) -> None:
        self._queue.wake()

    async def _publish(
        self, client: aiomqtt.Client, message: OutgoingMessage
    ) -> aiomqtt.MqttError | None:
        """The publish's error is returned, not raised: the window raises the oldest one, in
        queue order (`_acknowledged`), once those before it were acknowledged."""
        limit = self.options.acknowledge_timeout
        try:
            # asyncio.timeout, not aiomqtt's own (asyncio.wait_for: a task per message).
            async with asyncio.timeout(limit):
                await client.publish(
                    message.topic,
                    message.payload,
                    qos=message.qos,
                    retain=message.retain,
                    timeout=math.inf,
                )
        except TimeoutError:
            return aiomqtt.MqttError(
                f"no acknowledgement within {limit:g} s (connection.acknowledge_timeout)"
            )
        except aiomqtt.MqttError as error:
            return error
        return None

    def _delivered(self, message: OutgoingMessage) -> None:
        if message.on_delivered is not None:
            try:
                message.on_delivered()
            except Exception:  # the caller's bug must not take the connection down
                log.exception("error in the delivery callback of a message on %s", message.topic)
