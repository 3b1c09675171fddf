"""Run CSV import jobs: claim the job, resume from its checkpoint, load in batches, end once.

One dedicated connection per run holds two session-level advisory locks: the job's (so two
deliveries of one job never both import) and the table's (so DDL answers table_busy). With
on_error=skip each batch's rows, its error rows and the job's counters and checkpoint commit in
one transaction, so a crash between batches loses nothing and doubles nothing. With
on_error=abort the rows load in one transaction that commits only if no row was bad; progress
and the error report go through short side transactions and a retry restarts from the top.
The transaction that ends a job also queues its one mail in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction, delete, func, select, text, update

from dms.engine.catalog import Catalog, TableDef
from dms.engine.errors import InvalidRequest, TableNotFound
from dms.engine.import_mail import queue_end_mail
from dms.engine.import_plan import Batch, ImportPlan, PlanError
from dms.engine.import_reader import Reader, open_reader
from dms.engine.import_sweep import (
    ACTIVE,
    JOB_LOCK_CLASS,
    drop_ended_uploads,
    reap_stale_jobs,
    request_cancel,
)
from dms.engine.jobstatus import ENDED
from dms.engine.loader import Loader
from dms.engine.locks import hold_table_for_import, release_table_for_import
from dms.tables import import_errors, import_jobs

__all__ = [
    "JOB_LOCK_CLASS",
    "ImportBusy",
    "ImportOutcome",
    "reap_stale_jobs",
    "request_cancel",
    "run_import",
]

_TRY_JOB_LOCK = text("SELECT pg_try_advisory_lock(:k, hashtext(:j))")
_JOB_UNLOCK = text("SELECT pg_advisory_unlock(:k, hashtext(:j))")
Progress = Callable[[Any], None]


MAX_ATTEMPTS = 10  # runs that stopped without finishing before a job is failed
log = logging.getLogger("dms.import")


class Superseded(Exception):
    """Raised inside a run whose job another run has claimed since (fencing by attempt)."""


class ImportBusy(Exception):
    """Raised when the table's import lock is held (DDL or another import): retry later."""


@dataclass(frozen=True)
class ImportOutcome:
    """What a run did: the job's status and counts; ran=False when it did nothing."""

    job_id: str
    status: str
    rows_imported: int
    rows_rejected: int
    ran: bool


def run_import(
    engine: Engine,
    catalog: Catalog,
    job_id: str,
    *,
    batch_rows: int = 20_000,
    mail_to: str | None = None,
    public_url: str = "",
    on_progress: Progress | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> ImportOutcome:
    """Run or resume import job `job_id` to its end; raise ImportBusy if the table is held.

    A job whose runs have stopped without finishing `max_attempts` times (a worker killed, a
    crash) ends as failed on the next run instead of starting again.
    """
    run = _Run(engine, catalog, job_id, max(1, batch_rows), mail_to, public_url, on_progress)
    run.max_attempts = max(1, max_attempts)
    try:
        outcome = run.run()
    finally:
        run.release()
    if outcome.ran and outcome.status in ENDED:
        drop_ended_uploads(engine, job_id)
    return outcome


class _Run:
    """One attempt at one job, on one dedicated connection."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        job_id: str,
        batch_rows: int,
        mail_to: str | None,
        public_url: str,
        on_progress: Progress | None,
    ) -> None:
        self.engine = engine
        self.catalog = catalog
        self.job_id = job_id
        self.batch_rows = batch_rows
        self.mail_to = mail_to
        self.public_url = public_url.rstrip("/")
        self.on_progress = on_progress
        self.conn = engine.connect()
        # The attempt this run claimed: a fencing token. Once another run has claimed the job
        # (this one froze and lost its session), this run's updates match no row and stop.
        self.attempt: int | None = None
        self.job_locked = False
        self.table_locked: int | None = None
        self.max_attempts = MAX_ATTEMPTS  # run_import sets the caller's

    # --- claim ----------------------------------------------------------------------------

    def run(self) -> ImportOutcome:
        conn = self.conn
        with conn.begin():
            self.job_locked = bool(
                conn.execute(_TRY_JOB_LOCK, {"k": JOB_LOCK_CLASS, "j": self.job_id}).scalar()
            )
        if not self.job_locked:
            return self._outcome(ran=False)  # another worker is running it right now
        with conn.begin():
            job = conn.execute(
                select(import_jobs).where(import_jobs.c.id == self.job_id).with_for_update()
            ).first()
            if job is None or job.status not in ACTIVE:
                return self._outcome(ran=False)
            if job.cancel_requested:
                return self._end("cancelled")
            if job.table_id is None:
                return self._end("failed", "the table was deleted before the import ran")
        with conn.begin():
            held = hold_table_for_import(conn, job.table_id)
        if not held:
            with conn.begin():
                conn.execute(self._job_update().values(status="queued", heartbeat_at=func.now()))
            raise ImportBusy("the table is busy with a schema change or another import")
        self.table_locked = job.table_id
        with conn.begin():
            # Counted before anything that could crash, so a job that kills every run it gets
            # ends as failed instead of being re-queued for ever.
            job = conn.execute(
                self._job_update()
                .values(attempts=import_jobs.c.attempts + 1, heartbeat_at=func.now())
                .returning(*import_jobs.c)
            ).one()
            self.attempt = int(job.attempts)
            if self.attempt > self.max_attempts:
                return self._end(
                    "failed",
                    f"the import stopped {self.max_attempts} times without finishing; "
                    "it will not be tried again",
                )
        try:
            with conn.begin():
                table = self.catalog.by_id(conn, job.table_id)
            encoding = conn.connection.driver_connection.info.encoding  # type: ignore[union-attr]
            plan = ImportPlan(table, list(job.options.get("columns") or []), encoding)
        except (TableNotFound, PlanError) as exc:
            with conn.begin():
                return self._end("failed", f"the import cannot run: {exc}")
        abort = job.options.get("on_error") == "abort"
        with conn.begin():
            # The duplicate probes are many cheap index lookups that JIT would only slow down.
            conn.execute(text("SELECT set_config('jit', 'off', false)"))
            job = self._start(restart=abort or job.checkpoint_offset == 0)
        try:
            if abort:
                return self._load_all_or_nothing(job, table, plan)
            return self._load_in_batches(job, table, plan)
        except Superseded:
            log.warning("import %s was taken over by another run; this run stops", self.job_id)
            return self._outcome(ran=False)
        except InvalidRequest as exc:  # CsvFormatError, an unusable encoding or delimiter
            if conn.in_transaction():
                conn.rollback()
            with conn.begin():
                return self._end("failed", f"the file cannot be read: {exc.message}")

    def _start(self, *, restart: bool) -> Any:
        values: dict[str, Any] = {
            "status": "running",
            "started_at": func.coalesce(import_jobs.c.started_at, func.now()),
            "heartbeat_at": func.now(),
            "error": None,
        }
        if restart:
            values.update(
                rows_processed=0,
                rows_imported=0,
                rows_rejected=0,
                checkpoint_offset=0,
                checkpoint_line=0,
            )
            self.conn.execute(delete(import_errors).where(import_errors.c.job_id == self.job_id))
        started = self._job_update().values(**values).returning(*import_jobs.c)
        return self.conn.execute(started).one()

    # --- loading --------------------------------------------------------------------------

    def _reader(self, job: Any, plan: ImportPlan) -> Reader:
        start = (int(job.checkpoint_offset), int(job.checkpoint_line))
        return open_reader(
            self.engine, self.job_id, start, job.options, plan, self.batch_rows, int(job.size_bytes)
        )

    def _load_in_batches(self, job: Any, table: TableDef, plan: ImportPlan) -> ImportOutcome:
        """on_error=skip: commit each batch with its errors, counters and checkpoint."""
        conn = self.conn
        loader = Loader(conn, table, plan, self.job_id)
        batches = self._reader(job, plan)
        try:
            for batch in batches:
                with conn.begin():
                    if self._cancel_requested(conn):
                        return self._end("cancelled")
                    loaded, refused = loader.load(batch)
                    loader.write_errors(batch.errors + refused)
                    # Superseded rolls this batch back with it.
                    job = self._progress(
                        conn,
                        batch,
                        rows_processed=import_jobs.c.rows_processed + batch.records,
                        rows_imported=import_jobs.c.rows_imported + loaded,
                        rows_rejected=import_jobs.c.rows_rejected + batch.rejected + len(refused),
                    )
                if self.on_progress is not None:
                    self.on_progress(job)
        finally:
            batches.close()
        with conn.begin():
            status = "completed_with_errors" if job.rows_rejected else "succeeded"
            return self._end(status, read_all=True)

    def _load_all_or_nothing(self, job: Any, table: TableDef, plan: ImportPlan) -> ImportOutcome:
        """on_error=abort: one transaction for every row; any bad row rolls it all back."""
        conn = self.conn
        loader = Loader(conn, table, plan, self.job_id)
        txn: RootTransaction | None = conn.begin()
        imported = rejected = processed = 0
        batches = self._reader(job, plan)
        try:
            for batch in batches:
                with self.engine.connect() as side:
                    cancel = self._cancel_requested(side)
                if cancel:
                    _rollback(txn)
                    with conn.begin():
                        return self._end("cancelled", rows_imported=0)
                refused: list[Any] = []
                if txn is not None:
                    loaded, refused = loader.load(batch)
                    imported += loaded
                bad = batch.rejected + len(refused)
                rejected += bad
                processed += batch.records
                # Without unique columns nothing more can be learnt by loading: stop at once.
                # With them, later rows must still meet earlier ones to report every duplicate.
                if bad and txn is not None and not plan.unique:
                    txn.rollback()
                    txn = None
                job = self._side_progress(loader, batch, refused, processed, rejected)
                if self.on_progress is not None:
                    self.on_progress(job)
            if rejected:
                _rollback(txn)
                txn = None
                with conn.begin():
                    return self._end(
                        "failed",
                        f"on_error=abort and {rejected} row(s) were rejected: nothing was stored",
                        rows_imported=0,
                        read_all=True,
                    )
            assert txn is not None
            outcome = self._end("succeeded", rows_imported=imported, read_all=True)
            txn.commit()
            txn = None
            return outcome
        finally:
            batches.close()
            _rollback(txn)

    def _side_progress(
        self, loader: Loader, batch: Batch, refused: list[Any], processed: int, rejected: int
    ) -> Any:
        """Record errors, progress and heartbeat outside the all-or-nothing transaction."""
        with self.engine.begin() as side:
            loader.write_errors(batch.errors + refused, side)
            return self._progress(side, batch, rows_processed=processed, rows_rejected=rejected)

    def _progress(self, conn: Connection, batch: Batch, **counts: Any) -> Any:
        """Store counts, the batch's checkpoint and a heartbeat; raise Superseded if fenced out."""
        job = conn.execute(
            self._job_update()
            .values(
                status="running",
                checkpoint_offset=batch.end_offset,
                checkpoint_line=batch.end_line,
                heartbeat_at=func.now(),
                **counts,
            )
            .returning(*import_jobs.c)
        ).first()
        if job is None:
            raise Superseded(self.job_id)
        return job

    # --- the end --------------------------------------------------------------------------

    def _end(
        self,
        status: str,
        error: str | None = None,
        *,
        rows_imported: int | None = None,
        read_all: bool = False,
    ) -> ImportOutcome:
        """End the job in the caller's transaction and queue its one mail there too."""
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "finished_at": func.now(),
            "heartbeat_at": func.now(),
            "rows_total": import_jobs.c.rows_processed,
        }
        if rows_imported is not None:
            values["rows_imported"] = rows_imported
        if read_all:  # progress 1.0 even when trailing blank lines held no record
            values["checkpoint_offset"] = import_jobs.c.size_bytes
        job = self.conn.execute(
            self._job_update()
            .where(import_jobs.c.status.in_(ACTIVE))
            .values(**values)
            .returning(*import_jobs.c)
        ).first()
        if job is None:
            return self._outcome(ran=False)
        if self.mail_to:
            queue_end_mail(self.conn, job, self.mail_to, self.public_url)
        return ImportOutcome(job.id, job.status, job.rows_imported, job.rows_rejected, True)

    def _outcome(self, *, ran: bool) -> ImportOutcome:
        if self.conn.in_transaction():
            job = self.conn.execute(select(import_jobs).where(import_jobs.c.id == self.job_id))
        else:
            with self.conn.begin():
                job = self.conn.execute(select(import_jobs).where(import_jobs.c.id == self.job_id))
        row = job.first()
        if row is None:
            return ImportOutcome(self.job_id, "not_found", 0, 0, ran)
        return ImportOutcome(row.id, row.status, row.rows_imported, row.rows_rejected, ran)

    def _cancel_requested(self, conn: Connection) -> bool:
        return bool(
            conn.execute(
                select(import_jobs.c.cancel_requested).where(import_jobs.c.id == self.job_id)
            ).scalar()
        )

    def _job_update(self) -> Any:
        query = update(import_jobs).where(import_jobs.c.id == self.job_id)
        if self.attempt is not None:
            query = query.where(import_jobs.c.attempts == self.attempt)
        return query

    def release(self) -> None:
        """Release the advisory locks and close the connection, whatever happened."""
        conn = self.conn
        try:
            if conn.in_transaction():
                conn.rollback()
            if self.job_locked or self.table_locked is not None:
                with conn.begin():
                    conn.execute(text("RESET jit"))
                    if self.table_locked is not None:
                        release_table_for_import(conn, self.table_locked)
                    if self.job_locked:
                        conn.execute(_JOB_UNLOCK, {"k": JOB_LOCK_CLASS, "j": self.job_id})
        except Exception:  # noqa: BLE001 - a broken session: closing it frees its locks
            conn.invalidate()
        finally:
            conn.close()


def _rollback(txn: RootTransaction | None) -> None:
    """Roll back `txn` if it is still open."""
    if txn is not None and txn.is_active:
        txn.rollback()
