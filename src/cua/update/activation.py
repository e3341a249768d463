"""Activation means running: a started container is watched before ACTIVATE succeeds.

Kanto reports ACTIVATION_SUCCESS as soon as the engine's start call returns, so a container
whose process exits at once is reported started (and the update COMPLETED). Here (the
"Activation means running" decision of our behaviour) every container the agent starts in
ACTIVATE must stay up for a stability window (`UpdateSettings.activation_window`) and, when
it has a HEALTHCHECK, report `healthy` within `activation_timeout`:

* exited with a non-zero code, or restarted by its restart policy, within the window;
  exited at all when its restart policy is `always`/`unless-stopped`; `unhealthy`; or not
  healthy by the timeout -> `ActivationFailedError`, whose message gives the exit code and
  the container's last log lines (values of its env hidden);
* exited with code 0 under restart policy `no` or `on-failure` -> a one-shot job: success.

The window is slept once and the state read once at its end (then polled while a healthcheck
says `starting`): the engine's restart count and the exit code keep every exit in between
visible, and many containers watched at once cost one read each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cua.containers.spec import RestartPolicyType
from cua.containers.state import ContainerDetails, ContainerStatus
from cua.engine.base import Engine

__all__ = ["ActivationFailedError", "ActivationWatch", "hide_values", "watch_activation"]

LOG_LINES = 5  # last log lines in a failure message
LINE_LIMIT = 200  # characters kept of each line
MIN_HIDDEN = 4  # env values shorter than this are not hidden (they are ordinary words)
HEALTH_POLL = 0.25  # seconds between reads while a healthcheck says "starting"

_KEEPS_RUNNING = (RestartPolicyType.ALWAYS, RestartPolicyType.UNLESS_STOPPED)


class ActivationFailedError(Exception):
    """A started container did not stay up (or healthy); the message says how and why."""


@dataclass(frozen=True, slots=True)
class ActivationWatch:
    """How long a started container is watched. `window` 0 turns the watch off (Kanto)."""

    window: float
    timeout: float


def _seconds(value: float) -> str:
    return f"{value:g}s"


def hide_values(text: str, env: Iterable[str]) -> str:
    """`text` with the value of every `KEY=value` of `env` (of `MIN_HIDDEN` characters or
    more) replaced by `***`, longest first so that no part of a longer value stays."""
    values = {entry.partition("=")[2] for entry in env}
    for value in sorted((v for v in values if len(v) >= MIN_HIDDEN), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _printable(line: str) -> str:
    line = "".join(ch if ch.isprintable() else "?" for ch in line.rstrip("\r\n"))
    return line if len(line) <= LINE_LIMIT else line[:LINE_LIMIT] + "..."


def _problem(details: ContainerDetails, window: float) -> str | None:
    """What is wrong with the container as read after the window, or None (fine so far)."""
    state = details.state
    within = f"within {_seconds(window)} of its start"
    if state.restart_count > 0:
        code = f" (exit code {state.exit_code})" if state.exit_code else ""
        times = "once" if state.restart_count == 1 else f"{state.restart_count} times"
        return f"was restarted {times} by its restart policy {within}{code}"
    if state.status in (ContainerStatus.EXITED, ContainerStatus.DEAD):
        if state.exit_code != 0:
            return f"exited with code {state.exit_code} {within}"
        if details.spec.restart.type in _KEEPS_RUNNING:
            return f"exited with code 0 {within}, but its restart policy keeps it running"
        return None  # a one-shot job that did its work
    if state.status in (ContainerStatus.CREATED, ContainerStatus.UNKNOWN):
        return f"is {state.status.value.lower()} {within}"
    if state.health == "unhealthy":
        return "is unhealthy"
    return None


def _settled(details: ContainerDetails) -> bool:
    """Nothing more to wait for: exited for good, or running without a pending healthcheck."""
    state = details.state
    return state.status in (ContainerStatus.EXITED, ContainerStatus.DEAD) or (
        state.health != "starting"
    )


async def _failure(engine: Engine, details: ContainerDetails, name: str, problem: str) -> str:
    env = details.spec.config.env if details.spec.config is not None else ()
    try:
        lines = await engine.container_logs(details.id, LOG_LINES)
    except Exception as error:  # the failure is the news; a log read error only a note
        tail = f"its log cannot be read ({error})"
    else:
        tail = (
            "last log lines: " + " | ".join(_printable(line) for line in lines)
            if lines
            else "no log output"
        )
    return hide_values(f"container {name} {problem}; {tail}", env)


async def watch_activation(
    engine: Engine,
    container: str,
    name: str,
    watch: ActivationWatch,
    checkpoint: Callable[[], None] = lambda: None,
) -> None:
    """Watch the just started `container` (called `name` in messages); raise
    `ActivationFailedError` if it does not stay up (see the module doc). `checkpoint` is
    called before each wait for a healthcheck (it raises to end the watch: agent stop)."""
    if watch.window <= 0:
        return
    started = time.monotonic()
    await asyncio.sleep(watch.window)
    while True:
        details = await engine.inspect_container(container)
        problem = _problem(details, watch.window)
        if problem is not None:
            raise ActivationFailedError(await _failure(engine, details, name, problem))
        if _settled(details):
            return
        if time.monotonic() - started >= watch.timeout:
            problem = f"did not become healthy within {_seconds(watch.timeout)} of its start"
            raise ActivationFailedError(await _failure(engine, details, name, problem))
        checkpoint()
        await asyncio.sleep(HEALTH_POLL)
