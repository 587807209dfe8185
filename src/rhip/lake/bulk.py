"""FHIR Bulk Data export jobs: NDJSON files written in the background, polled by the client.

A job lives in ``<data dir>/bulk/<job id>/``: ``job.json`` (request, status, progress, output list)
and one NDJSON file per resource type (split every ``FILE_ROWS`` resources). Jobs run in a daemon
thread reading ``Store.iter_current``; system level exports every type, Patient level the patients
and every resource that references one of them (``subject``, ``patient``, ``beneficiary``), Group
level the same restricted to the group's members. ``_type``, ``_since`` and ``_typeFilter`` (search
queries resolved through the store's search) narrow the output.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from rhip.errors import InvalidRequest, ResourceNotFound

if TYPE_CHECKING:
    from rhip.store import Store

__all__ = ["BulkJob", "BulkRequest", "JobManager"]

log = logging.getLogger(__name__)

FILE_ROWS = 50_000
#: Elements through which a resource belongs to a patient's compartment for export.
PATIENT_REFS = ("subject", "patient", "beneficiary")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_FILE = re.compile(r"^[A-Z][A-Za-z]{1,63}-[0-9]{1,6}\.ndjson$")


@dataclass
class BulkRequest:
    """What the client asked for."""

    level: str  # system | patient | group
    request_url: str
    types: list[str] | None = None
    since: float | None = None
    type_filters: dict[str, list[list[tuple[str, str]]]] = field(default_factory=dict)
    group_id: str | None = None


@dataclass
class BulkJob:
    """State of one export job, persisted as job.json."""

    id: str
    request: BulkRequest
    status: str = "in-progress"  # in-progress | completed | failed | cancelled
    transaction_time: str = ""
    progress: str = "queued"
    output: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    created: float = 0.0
    #: Who started the job (the kick-off's principal); only they may poll, download or delete it.
    owner: str | None = None


def parse_type_filters(values: Sequence[str]) -> dict[str, list[list[tuple[str, str]]]]:
    """``_typeFilter`` values (``Type?search``; comma-separated or repeated) by type."""
    out: dict[str, list[list[tuple[str, str]]]] = {}
    for value in values:
        for item in value.split(","):
            if not item:
                continue
            rtype, sep, query = item.partition("?")
            if not sep or not rtype.isalpha():
                raise InvalidRequest(
                    "_typeFilter must look like Type?param=value", expression=("_typeFilter",)
                )
            out.setdefault(rtype, []).append(parse_qsl(query, keep_blank_values=True))
    return out


class JobManager:
    """Creates, runs, reports and deletes export jobs under one folder."""

    def __init__(self, root: Path, store_factory: Callable[[], Store]) -> None:
        self.root = root
        self.store_factory = store_factory
        self._cancel: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._deleted: set[str] = set()
        self._lock = threading.Lock()

    def _dir(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):
            raise ResourceNotFound("no such export job")
        return self.root / job_id

    def start(
        self,
        request: BulkRequest,
        *,
        filter_fn: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
        owner: str | None = None,
    ) -> BulkJob:
        """Create a job and start it in the background.

        ``filter_fn`` sees every batch before it is written (the caller's access filter); ``owner``
        is stored with the job so that the API can tie status, files and deletion to the caller.
        """
        from rhip.store import format_instant

        job = BulkJob(
            uuid.uuid4().hex,
            request,
            transaction_time=format_instant(time.time()),
            created=time.time(),
            owner=owner,
        )
        self._dir(job.id).mkdir(parents=True)
        self._save(job)
        cancel = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(job, cancel, filter_fn), name=f"bulk-{job.id[:8]}", daemon=True
        )
        with self._lock:
            self._cancel[job.id] = cancel
            self._threads[job.id] = thread
        thread.start()
        return job

    def get(self, job_id: str) -> BulkJob:
        """The job's current state (ResourceNotFound when unknown or deleted)."""
        path = self._dir(job_id) / "job.json"
        if job_id in self._deleted:
            raise ResourceNotFound("no such export job")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ResourceNotFound("no such export job") from exc
        data["request"] = BulkRequest(**data["request"])
        return BulkJob(**data)

    def file(self, job_id: str, name: str) -> Path:
        """Path of an output file of a completed job."""
        if not _FILE.match(name):
            raise ResourceNotFound("no such export file")
        path = self._dir(job_id) / name
        if not path.is_file():
            raise ResourceNotFound("no such export file")
        return path

    def delete(self, job_id: str) -> None:
        """Cancel a running job and remove its files."""
        folder = self._dir(job_id)
        if not folder.exists():
            raise ResourceNotFound("no such export job")
        with self._lock:
            event = self._cancel.pop(job_id, None)
            thread = self._threads.pop(job_id, None)
            self._deleted.add(job_id)
        if event is not None:
            event.set()
        if thread is not None:
            thread.join(timeout=30)  # let the writer stop before its files are removed
        shutil.rmtree(folder, ignore_errors=True)

    def _save(self, job: BulkJob) -> None:
        folder = self._dir(job.id)
        if not folder.exists():
            return
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(asdict(job)), encoding="utf-8")
        tmp.replace(folder / "job.json")

    def _run(self, job: BulkJob, cancel: threading.Event, filter_fn: Any) -> None:
        store = self.store_factory()
        try:
            _Exporter(self, job, store, cancel, filter_fn).run()
            if not cancel.is_set():
                job.status, job.progress = "completed", "done"
        except Exception as exc:
            log.exception("bulk export job %s failed", job.id)
            job.status, job.error = "failed", f"export failed: {type(exc).__name__}"
        finally:
            with self._lock:
                self._cancel.pop(job.id, None)
                self._threads.pop(job.id, None)
        if not cancel.is_set():
            self._save(job)


class _Exporter:
    def __init__(
        self, manager: JobManager, job: BulkJob, store: Store, cancel: threading.Event, filter_fn: Any
    ) -> None:
        self.manager, self.job, self.store, self.cancel, self.filter_fn = (
            manager,
            job,
            store,
            cancel,
            filter_fn,
        )

    def run(self) -> None:
        req = self.job.request
        types = req.types or _all_types(self.store)
        patients: set[str] | None = None
        if req.level == "group":
            patients = _group_members(self.store, req.group_id or "")
        elif req.level == "patient":
            patients = {rid for body, rid, _, _ in self.store.iter_current("Patient") if body is not None}
        for i, rtype in enumerate(types):
            if self.cancel.is_set():
                return
            self.job.progress = f"{i}/{len(types)} types ({rtype})"
            self.manager._save(self.job)
            self.export_type(rtype, patients)

    def export_type(self, rtype: str, patients: set[str] | None) -> None:
        req = self.job.request
        allowed: set[str] | None = None
        if rtype in req.type_filters:
            allowed = set()
            for params in req.type_filters[rtype]:
                allowed.update(self.store.matching_ids(rtype, params))
        part, count, handle = 0, 0, None
        batch: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal handle, count, part
            rows = self.filter_fn(batch) if self.filter_fn else batch
            for res in rows:
                if handle is None or count >= FILE_ROWS:
                    if handle is not None:
                        handle.close()
                        self._record(rtype, part, count)
                        part += 1
                    handle = (self.manager._dir(self.job.id) / f"{rtype}-{part}.ndjson").open("wb")
                    count = 0
                handle.write(orjson.dumps(res) + b"\n")
                count += 1
            batch.clear()

        for body, rid, _, _ in self.store.iter_current(rtype, since=req.since):
            if self.cancel.is_set():
                break
            if body is None or (allowed is not None and rid not in allowed):
                continue
            if patients is not None and not _in_compartment(body, rtype, rid, patients):
                continue
            batch.append(body)
            if len(batch) >= 1000:
                flush()
        flush()
        if handle is not None:
            handle.close()
            self._record(rtype, part, count)

    def _record(self, rtype: str, part: int, count: int) -> None:
        self.job.output.append({"type": rtype, "file": f"{rtype}-{part}.ndjson", "count": count})


def _in_compartment(body: dict[str, Any], rtype: str, rid: str, patients: set[str]) -> bool:
    if rtype == "Patient":
        return rid in patients
    for key in PATIENT_REFS:
        ref = body.get(key)
        if isinstance(ref, dict):
            text = ref.get("reference")
            if isinstance(text, str) and text.startswith("Patient/") and text[8:] in patients:
                return True
    return False


def _group_members(store: Store, group_id: str) -> set[str]:
    group = store.read("Group", group_id)
    members: set[str] = set()
    for member in group.get("member", []) or []:
        ref = (member.get("entity") or {}).get("reference", "")
        if isinstance(ref, str) and ref.startswith("Patient/") and not member.get("inactive"):
            members.add(ref[8:])
    return members


def _all_types(store: Store) -> list[str]:
    from sqlalchemy import select

    from rhip.store.schema import resource

    with store.engine.connect() as conn:
        rows = conn.execute(select(resource.c.res_type).where(resource.c.deleted.is_(False)).distinct())
        return sorted(r[0] for r in rows if r[0] != "ViewDefinition")
