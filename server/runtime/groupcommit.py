"""Group commit: the writes that pile up while one transaction runs share the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """One transaction for the writes that pile up while the previous one runs.

    `add(item)` queues the item and returns a future of the result of the transaction that carries
    it (the whole result: each caller picks its own part). A write starts at once when none is
    running, so a lone send waits no longer than before; concurrent sends share a commit.
    """

    def __init__(self, write: Callable[[list[T]], R], executor: Executor | None = None) -> None:
        self._write = write
        self._executor = executor  # None: asyncio's default thread pool
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def add(self, item: T) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return future

    async def _flush(self) -> None:
        while self._queue:
            taken, self._queue = self._queue, []
            try:
                items = [item for item, _ in taken]
                result = await asyncio.get_running_loop().run_in_executor(self._executor, self._write, items)
            except Exception as exc:
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                continue
            except asyncio.CancelledError:  # the loop is closing: no waiter may hang
                for _, future in taken + self._queue:
                    future.cancel()
                raise
            for _, future in taken:
                if not future.done():
                    future.set_result(result)
