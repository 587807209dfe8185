"""Group commit for creates on SQLite: concurrent POSTs share one database transaction.

SQLite has a single writer, so without grouping the create rate is one commit after another. Here
each create joins a queue and waits for the in-process write lock; whoever holds the lock commits
everything queued so far in one transaction through ``Store.create_new`` (new server-assigned ids,
so every resource gets version 1, a ``POST`` history row and its index rows, as a single create
would, and each request gets back what a single create returns). A request never waits for more
than the batch it joined, and a lone request is a plain ``Store.create``. If a grouped write
fails, its entries are retried one by one, so each request gets its own answer. PostgreSQL has
concurrent writers and does not use this.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rhip.errors import RhipError

if TYPE_CHECKING:
    from rhip.store import Store

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


class CreateBatcher:
    """Queue creates and commit them in groups under ``lock`` (the store's in-process write lock).

    Args:
        store: the SQLite store.
        lock: the lock every SQLite write of this process takes.
        max_batch: most creates per transaction.
    """

    def __init__(self, store: Store, lock: threading.Lock, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.lock = lock
        self.max_batch = max_batch
        self._queue: list[tuple[dict[str, Any], Future[CreateResult]]] = []
        self._queue_lock = threading.Lock()

    def create(self, resource: dict[str, Any]) -> CreateResult:
        """Create ``resource`` (server-assigned id), possibly in one transaction with others."""
        if not groupable(resource):
            with self.lock:
                result = self.store.create(resource, assign_id=True)
            return CreateResult(result.resource, True, result.version_id, result.last_updated)
        future: Future[CreateResult] = Future()
        with self._queue_lock:
            self._queue.append((resource, future))
        while not future.done():
            with self.lock:
                if future.done():
                    break
                with self._queue_lock:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                self._commit(batch)
        return future.result()

    def _commit(self, batch: list[tuple[dict[str, Any], Future[CreateResult]]]) -> None:
        if len(batch) > 1:
            try:
                self._commit_group(batch)
                return
            except RhipError as exc:
                logger.info("grouped create of %d failed (%s); retrying one by one", len(batch), exc.code)
        for resource, future in batch:
            try:
                result = self.store.create(resource, assign_id=True)
            except BaseException as exc:  # handed to the waiting request, which re-raises it
                future.set_exception(exc)
            else:
                future.set_result(CreateResult(result.resource, True, result.version_id, result.last_updated))

    def _commit_group(self, batch: list[tuple[dict[str, Any], Future[CreateResult]]]) -> None:
        results = self.store.create_new([resource for resource, _ in batch])
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(CreateResult(result.resource, True, result.version_id, result.last_updated))
