"""Group commit for creates on SQLite: concurrent POSTs share one database transaction.

SQLite has a single writer, so without grouping the create rate is one commit after another. A
create checked on the event loop joins a queue there and awaits its future; one drainer task per
event loop hands the queue to a worker thread, which commits it under the in-process write lock
in one transaction through ``Store.create_new`` (new server-assigned ids, so every resource gets
version 1, a ``POST`` history row and its index rows, and each request gets back what a single
create returns). Creates arriving while a group commits form the next group, so a request never
waits for more than the group after the one in progress, and a lone request is a plain
``Store.create``. The requests themselves never occupy a thread: one thread hop per group instead
of one per request, and no thread waits on the lock per request. If a grouped write fails, its
entries are retried one by one, so each request gets its own answer. PostgreSQL has concurrent
writers and does not use this.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from rhip.errors import RhipError

if TYPE_CHECKING:
    from rhip.store import Store, WriteResult

logger = logging.getLogger(__name__)

#: Most creates committed in one transaction.
MAX_BATCH = 64


@dataclass(frozen=True)
class CreateResult:
    """What a route needs from a create (the shape of ``rhip.store.WriteResult``)."""

    resource: dict[str, Any]
    created: bool
    version_id: int
    last_updated: float


def groupable(resource: dict[str, Any]) -> bool:
    """True when a transaction would store exactly what a single create stores.

    A transaction rewrites ``urn:uuid:`` and conditional (``Type?params``) references; a single
    create does not, so resources carrying such references are created on their own.
    """
    from rhip.api.everything import references

    return not any(ref.startswith("urn:") or "?" in ref for ref in references(resource))


#: What a create ends in: its result, or the error its request raises.
Outcome = CreateResult | Exception


class CreateBatcher:
    """Queue creates made on one event loop and commit them in groups in a worker thread.

    Args:
        store: the SQLite store.
        lock: the lock every SQLite write of this process takes.
        max_batch: most creates per transaction.
    """

    def __init__(self, store: Store, lock: threading.Lock, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.lock = lock
        self.max_batch = max_batch
        self._queue: list[tuple[dict[str, Any], asyncio.Future[CreateResult]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def create(self, resource: dict[str, Any]) -> CreateResult:
        """Create ``resource`` (server-assigned id), possibly in one transaction with others."""
        if not groupable(resource):
            (outcome,) = await anyio.to_thread.run_sync(self.commit, [resource])
            return _unwrap(outcome)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CreateResult] = loop.create_future()
        self._queue.append((resource, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Commit the queue group after group until it is empty (the loop is single-threaded, so
        a create queued after the last check starts a new drainer)."""
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    outcomes = await anyio.to_thread.run_sync(self.commit, [r for r, _ in batch])
                except BaseException as exc:  # commit hands errors back; whatever else, nobody waits forever
                    _settle(batch, [RuntimeError(f"group commit failed: {exc!r}")] * len(batch))
                    if not isinstance(exc, Exception):
                        raise
                    logger.exception("group commit of %d creates failed", len(batch))
                    continue
                _settle(batch, outcomes)
        finally:
            self._drainer = None
            if self._queue:  # only after a failure above: fail the rest too, never leave them waiting
                rest, self._queue = self._queue, []
                _settle(rest, [RuntimeError("group commit stopped")] * len(rest))

    def commit(self, resources: list[dict[str, Any]]) -> list[Outcome]:
        """Create ``resources`` under the write lock: one transaction, else one by one (thread side)."""
        with self.lock:
            if len(resources) > 1:
                try:
                    return [_result(r) for r in self.store.create_new(resources)]
                except Exception as exc:  # rolled back: each create gets its own answer below
                    code = exc.code if isinstance(exc, RhipError) else type(exc).__name__
                    logger.info("grouped create of %d failed (%s); retrying one by one", len(resources), code)
            return [self._create_one(resource) for resource in resources]

    def _create_one(self, resource: dict[str, Any]) -> Outcome:
        try:
            return _result(self.store.create(resource, assign_id=True))
        except Exception as exc:  # handed to the waiting request, which raises it
            return exc


def _result(result: WriteResult) -> CreateResult:
    return CreateResult(result.resource, True, result.version_id, result.last_updated)


def _unwrap(outcome: Outcome) -> CreateResult:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _settle(
    batch: list[tuple[dict[str, Any], asyncio.Future[CreateResult]]], outcomes: list[Outcome]
) -> None:
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():  # the request was cancelled (client gone); its resource is written all the same
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def batcher_for(state: Any, store: Store, lock: threading.Lock) -> CreateBatcher:
    """The batcher of the running event loop (one per loop: futures belong to their loop)."""
    batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CreateBatcher] | None = getattr(
        state, "create_batchers", None
    )
    if batchers is None:
        batchers = state.create_batchers = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    batcher = batchers.get(loop)
    if batcher is None:
        batcher = batchers[loop] = CreateBatcher(store, lock)
    return batcher
