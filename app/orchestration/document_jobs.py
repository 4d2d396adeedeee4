"""Document jobs: a large document translated in the background, its progress and result kept in
files under DOCUMENTS_DIR, so a restart loses no finished result and replicas that share the folder
serve each other's jobs (status, events, result, cancel).

One folder per job: `source` (the upload), `state.json` (what GET /documents/jobs/{id} answers) and,
once done, `result`. Every write is atomic (a temporary file, then os.replace), so a reader on any
replica sees a whole old state or a whole new one. A cancel is a state change, which the replica
running the job reads before each slice. Jobs are deleted DOCUMENT_EXPIRY_S after their last change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from app.api.schemas import DocumentOptions
from app.errors import Unavailable
from app.orchestration import documents
from app.orchestration.translator import Translator
from model.text.documents import DocumentError

log = logging.getLogger("app.orchestration.document_jobs")

FINISHED = ("done", "failed", "cancelled")
STALE_MIN_S, STALE_TIMEOUTS = 120.0, 4
RETRY_STORAGE_S = 60  # a folder that cannot be written needs an operator, not a quick retry
_ID = re.compile(r"[0-9a-f]{32}")


class UnknownJob(LookupError):
    """No job with that id (never made, or expired)."""


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: readers never see half a file."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class JobStore:
    """The job folders under DOCUMENTS_DIR.

    A job whose state has not changed for `stale_s` while queued or running is reported failed: the
    replica running it stopped (a restart, a crash). Its runner, if alive after all, writes again and
    the job is live again.
    """

    def __init__(self, folder: Path, expiry_s: float, stale_s: float):
        self.folder, self.expiry_s, self.stale_s = folder, expiry_s, stale_s

    def create(self, filename: str, data: bytes, total: int) -> str:
        self.expire()
        job_id = uuid.uuid4().hex
        folder = self.folder / job_id
        folder.mkdir(parents=True)
        write_atomically(folder / "source", data)
        self.save(job_id, {"id": job_id, "filename": filename, "status": "queued", "segments_done": 0,
                           "segments_total": total, "eta_s": None, "started": time.time()})
        return job_id

    def path(self, job_id: str, name: str) -> Path:
        if not _ID.fullmatch(job_id) or not (self.folder / job_id / "state.json").is_file():
            raise UnknownJob(job_id)
        return self.folder / job_id / name

    def state(self, job_id: str) -> dict:
        path = self.path(job_id, "state.json")
        try:
            state, changed = json.loads(path.read_bytes()), path.stat().st_mtime
        except FileNotFoundError:  # expired between the check and the read
            raise UnknownJob(job_id) from None
        if state["status"] in FINISHED:
            return state
        if self.path(job_id, "cancelled").exists():
            state.update(status="cancelled", eta_s=None)
        elif time.time() - changed > self.stale_s:
            state.update(status="failed", eta_s=None, error=f"interrupted: no progress for {self.stale_s:g} s (the "
                         "server translating it stopped); submit it again")
        return state

    def cancel(self, job_id: str) -> None:
        """Mark the job cancelled: a file of its own, which the state written by the runner never overwrites."""
        write_atomically(self.path(job_id, "cancelled"), b"")

    def save(self, job_id: str, state: dict) -> None:
        write_atomically(self.folder / job_id / "state.json", json.dumps(state).encode())

    def update(self, job_id: str, **fields) -> dict:
        """Change fields of the state as the runner wrote it (a cancel stays in its own file)."""
        try:
            state = {**json.loads(self.path(job_id, "state.json").read_bytes()), **fields}
        except FileNotFoundError:
            raise UnknownJob(job_id) from None
        self.save(job_id, state)
        return state

    def result(self, job_id: str) -> tuple[Path, str] | None:
        """The result file and the name to download it as, once the job is done."""
        state = self.state(job_id)
        return (self.path(job_id, "result"), state["filename"]) if state["status"] == "done" else None

    def expire(self) -> None:
        """Delete the jobs untouched for DOCUMENT_EXPIRY_S."""
        if not self.folder.is_dir():
            return
        horizon = time.time() - self.expiry_s
        for folder in self.folder.iterdir():
            state = folder / "state.json"
            if _ID.fullmatch(folder.name) and state.is_file() and state.stat().st_mtime < horizon:
                shutil.rmtree(folder, ignore_errors=True)


class DocumentJobs:
    """Runs the jobs submitted to this replica, each a task on the event loop; the store is shared."""

    def __init__(self, translator: Translator):
        settings = translator.settings
        self.translator = translator
        # A slice decodes within REQUEST_TIMEOUT_S; a runner silent for several of them is gone.
        self.store = JobStore(settings.documents_dir, settings.document_expiry_s,
                              stale_s=max(STALE_MIN_S, STALE_TIMEOUTS * settings.request_timeout_s))
        self.tasks: set[asyncio.Task] = set()

    def submit(self, filename: str, data: bytes, options: DocumentOptions) -> dict:
        """Check the document, store it and start translating it; its first state. DocumentError if unreadable."""
        extracted = documents.extract(filename, data, self.translator.settings)
        job_id = self._create(filename, data, len(extracted.segments))
        task = asyncio.create_task(self._run(job_id, extracted, options), name=f"document-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return self.store.state(job_id)

    def keep(self, filename: str, data: bytes, result: bytes) -> str:
        """Store a document translated synchronously as a finished job (LibreTranslate's download URL); its id."""
        job_id = self._create(filename, data, 0)
        write_atomically(self.store.path(job_id, "result"), result)
        self.store.update(job_id, status="done", eta_s=0.0)
        return job_id

    def _create(self, filename: str, data: bytes, total: int) -> str:
        try:
            return self.store.create(filename, data, total)
        except OSError as e:  # a deployment without a writable DOCUMENTS_DIR: the operator's to fix, and it says so
            log.error("document jobs cannot be stored in %s: %s", self.store.folder, e)
            raise Unavailable(503, f"this server cannot store documents (DOCUMENTS_DIR: {e.strerror})",
                              RETRY_STORAGE_S) from None

    def cancel(self, job_id: str) -> dict:
        if self.store.state(job_id)["status"] not in FINISHED:
            self.store.cancel(job_id)
        return self.store.state(job_id)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _run(self, job_id: str, extracted, options: DocumentOptions) -> None:
        store, started = self.store, time.monotonic()
        store.update(job_id, status="running")

        def progress(done: int, total: int) -> None:
            elapsed = time.monotonic() - started
            eta = elapsed / done * (total - done) if done and done < total else (0.0 if done >= total else None)
            store.update(job_id, segments_done=done, eta_s=round(eta, 1) if eta is not None else None)

        def cancelled() -> bool:
            return store.state(job_id)["status"] == "cancelled"

        try:
            outcome = await documents.translate(self.translator, extracted, options, progress=progress,
                                                cancelled=cancelled)
            write_atomically(store.path(job_id, "result"), outcome.data)
            store.update(job_id, status="done", eta_s=0.0, untranslated=outcome.untranslated)
        except documents.Cancelled:
            log.info("document job %s cancelled", job_id)
        except (DocumentError, UnknownJob) as e:
            store.update(job_id, status="failed", error=str(e), eta_s=None)
        except Exception as e:  # the job's state says it failed; the server log says why
            log.exception("document job %s failed", job_id)
            store.update(job_id, status="failed", error=f"{type(e).__name__}: {e}", eta_s=None)
