"""Shared pieces of the benchmarks: timing, the table, raw engine calls, the agent process
and an MQTT client that measures "message to status".

Raw engine calls (`RawAPI`) go straight to the Engine API on the agent's own HTTP client
(`cua.engine.transport`: h11 over asyncio streams), not through `DockerEngine`: they are
the baseline the agent is measured against.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from cua.api.envelope import encode
from cua.api.models import ComponentWithConfig, DesiredState, Domain, KeyValuePair
from cua.api.topics import Topics
from cua.engine.transport import APIError, EngineHTTP, engine_address
from cua_dev.processes import stop_pid

TOPICS = Topics.for_domain("containers")
PYTHON = sys.executable
# The activation window (`update_agent.activation_window`, seconds) the agent runs with: "" is
# the agent's default (3 s). `BENCH_ACTIVATION_WINDOW=0` measures only without it (Kanto's
# success at start); unset, the engine-cost rows (change, apply) are measured with window 0
# and each again with the default window, in rows of their own (what the window costs).
ACTIVATION_WINDOW = os.environ.get("BENCH_ACTIVATION_WINDOW", "")
ENGINE_WINDOW = ACTIVATION_WINDOW or "0"  # the window of every row's main figure
EXTRA_WINDOWS = [] if ACTIVATION_WINDOW else [""]  # measured besides: the default


def window_text(window: str) -> str:
    return "the default activation window" if not window else f"activation window {window} s"


def config_args(directory: Path, window: str = ENGINE_WINDOW) -> list[str]:
    """`--config FILE` setting the activation window `window` ("": none, the default) and
    the engine's pulls (`download: "engine"`: the stack's registry is in its network
    namespace, which the agent process's own downloads do not reach; the agent's are the
    `agent_download` case's, in-process)."""
    update_agent: dict[str, object] = {"download": "engine"}
    if window:
        update_agent["activation_window"] = float(window)
    path = directory / "bench-config.json"
    path.write_text(json.dumps({"update_agent": update_agent}))
    return ["--config", str(path)]


# --- timing and the table ------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.2f} s"


def mb(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


@dataclass
class Row:
    case: str
    agent: str
    baseline: str = "—"
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)


def print_table(rows: list[Row], out: Any = sys.stdout) -> None:
    """One markdown table (case | agent | baseline | ratio | target)."""
    print("| case | agent | baseline | ratio | target |", file=out)
    print("|---|---|---|---|---|", file=out)
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "—"
        target = row.target
        if row.met is not None:
            target = f"{target} ({'met' if row.met else 'MISSED'})"
        print(f"| {row.case} | {row.agent} | {row.baseline} | {ratio} | {target} |", file=out)
    notes = [(row.case, note) for row in rows for note in row.notes]
    if notes:
        print(file=out)
        for case, note in notes:
            print(f"- {case}: {note}", file=out)


def progress(message: str) -> None:
    """Progress on stderr, so stdout is only the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- desired states ------------------------------------------------------------------------


def desired_state(containers: Mapping[str, str], **config: str) -> DesiredState:
    """Components `name -> image`, each with the same extra `config` keys."""
    components = [
        ComponentWithConfig(
            id=name,
            version="1",
            config=[KeyValuePair(key="image", value=image)]
            + [KeyValuePair(key=k, value=v) for k, v in config.items()],
        )
        for name, image in containers.items()
    ]
    return DesiredState(domains=[Domain(id="containers", components=components)])


def names(count: int, prefix: str = "app") -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


# --- raw engine (the baseline) ----------------------------------------------------------------


class RawAPI:
    """The Engine API, raw (no `DockerEngine`, no mapping): the baseline's calls."""

    def __init__(self, docker_host: str) -> None:
        self.http = EngineHTTP(engine_address(docker_host))

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        data = b"" if body is None else json.dumps(body).encode()
        response = await self.http.request(method, path, params=params or None, body=data)
        return response.json()

    async def create(self, name: str, image: str) -> str:
        created = await self.call("POST", "/containers/create", {"Image": image}, name=name)
        return str(created["Id"])

    async def create_start(self, name: str, image: str) -> str:
        container = await self.create(name, image)
        await self.call("POST", f"/containers/{container}/start")
        return container

    async def remove(self, container: str) -> None:
        await self.call("DELETE", f"/containers/{container}", force="1")

    async def remove_all(self) -> None:
        """Force-remove every container, concurrently (untimed clean-up)."""
        containers = await self.call("GET", "/containers/json", all="1")
        await asyncio.gather(*(self.remove(c["Id"]) for c in containers))

    async def remove_images(self, images: Iterable[str]) -> None:
        for image in images:
            try:
                await self.call("DELETE", f"/images/{image}", force="1")
            except APIError as error:
                if error.status != 404:
                    raise

    async def pull(self, image: str) -> None:
        """`POST /images/create` read to its end (the engine's pull is done then)."""
        repository, _, tag = image.rpartition(":")
        params = {"fromImage": repository, "tag": tag}
        async with self.http.stream("POST", "/images/create", params=params) as response:
            while line := await response.readline():
                if b'"error"' in line:
                    raise RuntimeError(f"pull {image}: {line!r}")

    async def close(self) -> None:
        await self.http.aclose()


# --- the agent as a process --------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of a live process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def python_baseline_rss() -> int:
    """VmRSS of `python -c 'import asyncio'` (read by the process itself, at its end)."""
    code = (
        "import asyncio\n"
        "for l in open('/proc/self/status'):\n"
        "    l.startswith('VmRSS:') and print(l.split()[1])\n"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


class AgentProcess:
    """`cua run` against the stack's dockerd and mosquitto, started and stopped by PID."""

    def __init__(
        self, docker_host: str, broker: str, state_dir: Path, window: str = ENGINE_WINDOW
    ) -> None:
        self.window = window
        self.argv = [
            *self.python_argv(),
            "run",
            "--engine",
            docker_host,
            "--broker",
            broker,
            "--state-dir",
            str(state_dir),
            "--log-level",
            os.environ.get("BENCH_AGENT_LOG", "WARNING"),
        ]
        state_dir.mkdir(parents=True, exist_ok=True)
        self.argv += config_args(state_dir, window)
        self.log = state_dir / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def python_argv() -> list[str]:
        return [PYTHON, "-m", "cua"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid, timeout, proc=self.proc)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the agent is not running; its log ends:\n{self.log_tail()}")

    async def first_current_state(self, broker: Broker, within: float = 30.0) -> Received:
        """The first current state the agent publishes (the caller cleared the retained one)."""
        try:
            return await broker.first_current_state(within)
        except TimeoutError:
            self.check_alive()
            raise RuntimeError(
                f"no current state within {within} s; the agent's log ends:\n{self.log_tail()}"
            ) from None


# --- MQTT ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    at: float  # perf_counter when read
    topic: str
    payload: bytes


_ACTIVITY = re.compile(rb'"activityId":"([^"]*)"')
_STATUS = re.compile(rb'"status":"([A-Z_]*)"')


def peek(envelope: bytes) -> tuple[str, str]:
    """activityId and the top-level status of a feedback envelope, without decoding all
    of it (Go key order puts the payload's status before its actions): the benchmark
    client must not steal much CPU from the agent it measures."""
    activity = _ACTIVITY.search(envelope)
    status = _STATUS.search(envelope)
    return (
        activity.group(1).decode() if activity else "",
        status.group(1).decode() if status else "",
    )


class Broker:
    """One MQTT client: publishes desired states, sees feedback and current states."""

    def __init__(self, port: int) -> None:
        self._client = aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{os.getpid()}")
        self._queue: asyncio.Queue[Received] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._seq = 0
        self.last_failure = ""  # the last final feedback that was not COMPLETED

    async def __aenter__(self) -> Broker:
        await self._client.__aenter__()
        await self._client.subscribe(TOPICS.desired_state_feedback, qos=1)
        await self._client.subscribe(TOPICS.current_state, qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self._client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self._queue.put_nowait(Received(time.perf_counter(), message.topic.value, payload))

    async def drain(self, settle: float = 0.2) -> None:
        """Forget everything received so far (after `settle` s of quiet)."""
        await asyncio.sleep(settle)
        while not self._queue.empty():
            self._queue.get_nowait()

    async def clear_current_state(self) -> None:
        """The current state is retained: clear it so the next one seen is a fresh one."""
        await self._client.publish(TOPICS.current_state, b"", qos=1, retain=True)
        await self.drain()

    async def next(self, within: float) -> Received:
        return await asyncio.wait_for(self._queue.get(), within)

    async def first_current_state(self, within: float = 30.0) -> Received:
        deadline = time.monotonic() + within
        while True:
            got = await self.next(max(0.01, deadline - time.monotonic()))
            if got.topic == TOPICS.current_state and got.payload:
                return got

    def activity(self, name: str) -> str:
        self._seq += 1
        return f"bench-{name}-{self._seq}"

    async def send_desired(
        self,
        activity_id: str,
        desired: DesiredState,
        until: str,
        within: float = 300.0,
        finish: str = "",
    ) -> tuple[float, str]:
        """Publish a desired state; the seconds from publishing to feedback `until` (or to
        an earlier final status), and the last status seen. With `finish`, also wait for
        that status (or any final one) before returning."""
        payload = encode(activity_id, desired)
        final = {"COMPLETED", "INCOMPLETE", "IDENTIFICATION_FAILED", "SUPERSEDED"}
        started = time.perf_counter()
        await self._client.publish(TOPICS.desired_state, payload, qos=1)
        elapsed: float | None = None
        status = ""
        deadline = time.monotonic() + within
        while True:
            got = await self.next(max(0.01, deadline - time.monotonic()))
            if got.topic != TOPICS.desired_state_feedback:
                continue
            found_id, status = peek(got.payload)
            if found_id != activity_id:
                continue
            if elapsed is None and (status == until or status in final):
                elapsed = got.at - started
            if elapsed is not None and (not finish or status == finish or status in final):
                if status != "COMPLETED":
                    self.last_failure = got.payload.decode(errors="replace")[:2000]
                return elapsed, status
