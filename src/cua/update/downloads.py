"""The image pulls of one DOWNLOAD phase, run concurrently (bounded) with their progress.

Kanto pulls each image when it creates the container, one after the other. We start every
needed pull at the beginning of the phase, then the per-action loop (Kanto's order and
feedback) waits for each action's image in turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from cua.engine.base import Engine, EngineError, ensure_image

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pull:
    done: int = 0
    total: int = 0
    percent: int = 0  # the highest so far: the summed total grows as layers start
    error: EngineError | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Downloads:
    """An async context manager: the pulls run while it is entered; leaving cancels the rest.

    `on_finished` is called when a pull ends (so that what waits for its image can start at
    once, not when the phase loop gets to it)."""

    def __init__(
        self,
        engine: Engine,
        images: Iterable[str],
        *,
        always: bool,
        concurrency: int,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._on_finished = on_finished
        self._always = always
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._pulls: dict[str, _Pull] = {image: _Pull() for image in dict.fromkeys(images)}
        self._group = asyncio.TaskGroup()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Downloads:
        await self._group.__aenter__()
        for image, pull in self._pulls.items():
            self._tasks.append(self._group.create_task(self._pull(image, pull)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()  # a phase that stopped early needs no more images
        # The pulls never raise; the body's own exception propagates unchanged (not
        # wrapped in an ExceptionGroup).
        await self._group.__aexit__(None, None, None)

    async def _pull(self, image: str, pull: _Pull) -> None:
        try:
            async with self._limit:
                async for progress in ensure_image(self._engine, image, always=self._always):
                    pull.done, pull.total = progress.done, progress.total
                    if progress.total > 0:
                        percent = min(99, progress.done * 100 // progress.total)
                        pull.percent = max(pull.percent, percent)
        except EngineError as error:
            pull.error = error
        except Exception as error:  # never let one pull break the phase's task group
            log.exception("pull of %s failed unexpectedly", image)
            pull.error = EngineError(f"cannot pull image {image}: {error}")
        finally:
            pull.finished.set()
            if self._on_finished is not None:
                self._on_finished()

    def ready(self, image: str) -> bool:
        """Whether `image` is there (its pull, if any, finished without error)."""
        pull = self._pulls[image]
        return pull.finished.is_set() and pull.error is None

    def percent(self, image: str) -> int:
        """0-99 while pulling (0 when the size is not known yet); never lower than before:
        the engine reports a layer's size only when its download starts."""
        pull = self._pulls[image]
        if pull.finished.is_set():
            return 0
        return max(0, pull.percent)

    async def wait(self, image: str, within: float) -> bool:
        """Wait up to `within` s for `image`; True when it is there. Raises its pull error."""
        pull = self._pulls[image]
        if not pull.finished.is_set():
            try:
                await asyncio.wait_for(pull.finished.wait(), within)
            except TimeoutError:
                return False
        if pull.error is not None:
            raise pull.error
        return True
