"""Engine work of a phase run ahead of Kanto's one-action-at-a-time feedback loop.

Kanto creates (DOWNLOAD) and starts (ACTIVATE) one container after the other; the engine
can do several at once (on 2 cores, 50 creates+starts take half the time with 8 in flight).
The phase loop keeps Kanto's order and feedback exactly: for each action it waits for the
work done ahead for it and raises that work's error at the same point a sequential run
would. Only work whose effects are recorded in the action's state (and so undone by
ROLLBACK/CLEANUP like a sequential run's) may run ahead: see `Operation`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

_A = TypeVar("_A")
_R = TypeVar("_R")


@dataclass(slots=True)
class _Outcome(Generic[_R]):
    value: _R | None = None
    error: Exception | None = None


class Lookahead(Generic[_A, _R]):
    """Async context manager. `advance(i)` keeps the work of action i and of the next
    `ahead` ones that are `ready` started; `wait(action)` returns its result (or raises its
    error). Leaving waits for every started work to finish, never cancels it: its effects
    must be recorded for the undo."""

    def __init__(
        self,
        work: Callable[[_A], Awaitable[_R]],
        ahead: int,
        ready: Callable[[_A], bool] | None = None,
    ) -> None:
        self._work = work
        self._ahead = max(0, ahead)
        self._ready = ready
        self._actions: Sequence[_A] = ()
        self._tasks: dict[int, asyncio.Task[_Outcome[_R]]] = {}
        self._group = asyncio.TaskGroup()
        self._index = -1  # where the loop is (the last `advance`)
        self._started = 0  # every action before this position has its work started
        self._open = False

    async def __aenter__(self) -> Lookahead[_A, _R]:
        await self._group.__aenter__()
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            await self._group.__aexit__(exc_type, exc, tb)
            return
        # The works never raise (see `_run`); the body's own exception (a stop, a bug)
        # propagates unchanged once they are done.
        await self._group.__aexit__(None, None, None)

    def start(self, actions: Sequence[_A]) -> None:
        self._actions = actions
        self._started = 0

    def advance(self, index: int) -> None:
        """The loop is at `actions[index]`: start its work and the next ones, if ready
        (one not ready is done by `wait` when the loop gets to it)."""
        self._index = index
        last = min(len(self._actions) - 1, index + self._ahead)
        # Those before `_started` all have their work: not looked at again (with every
        # action ahead, the loop would otherwise go over all of them at each step).
        for position in range(max(index, self._started), last + 1):
            action = self._actions[position]
            if id(action) not in self._tasks and (self._ready is None or self._ready(action)):
                self._tasks[id(action)] = self._group.create_task(self._run(action))
            if position == self._started and id(action) in self._tasks:
                self._started += 1

    def refresh(self) -> None:
        """What `ready` says may have changed (an image arrived): start the work that is
        ready now in the loop's window, without waiting for the loop to move on."""
        if self._open and self._index >= 0:
            self.advance(self._index)

    async def wait(self, action: _A) -> _R | None:
        """The action's result, raising its error; run now if it was not started."""
        task = self._tasks.get(id(action))
        if task is None:
            return await self._work(action)
        outcome = await task
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    async def _run(self, action: _A) -> _Outcome[_R]:
        try:
            return _Outcome(value=await self._work(action))
        except Exception as error:  # raised by `wait`, in the loop's order
            log.debug("work ahead failed: %s", error)
            return _Outcome(error=error)
