"""Import jobs seen from outside a run: ask one to stop, re-queue those a dead worker left."""

from __future__ import annotations

from sqlalchemy import Engine, delete, func, select, text, update

from dms.engine.jobstatus import ENDED
from dms.tables import import_jobs, upload_chunks

__all__ = ["ACTIVE", "JOB_LOCK_CLASS", "drop_ended_uploads", "reap_stale_jobs", "request_cancel"]

JOB_LOCK_CLASS = 0x444D55  # advisory lock class of import jobs (tables use 0x444D53)
ACTIVE = ("queued", "running")
# True while no session holds the job's advisory lock (two-int form: objsubid 2).
_LOCK_FREE = (
    "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid = :k AND l.objid = hashtext(dms_import_jobs.id)::oid AND l.objsubid = 2)"
)


def request_cancel(engine: Engine, job_id: str) -> None:
    """Ask a job that has not ended to stop at its next batch."""
    with engine.begin() as conn:
        conn.execute(
            update(import_jobs)
            .where(import_jobs.c.id == job_id, import_jobs.c.status.in_(("uploading", *ACTIVE)))
            .values(cancel_requested=True)
        )


def reap_stale_jobs(engine: Engine, *, stale_after_s: float = 60) -> list[str]:
    """Re-queue jobs a dead worker left running; return their ids and long-queued ones'."""
    free = text(_LOCK_FREE).bindparams(k=JOB_LOCK_CLASS)
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, float(stale_after_s))
    quiet = func.coalesce(import_jobs.c.heartbeat_at, import_jobs.c.created_at) < cutoff
    with engine.begin() as conn:
        # A job whose lock is held has a live worker, however late its heartbeat.
        dead = list(
            conn.execute(
                update(import_jobs)
                .where(import_jobs.c.status == "running", quiet, free)
                .values(status="queued", heartbeat_at=func.now())
                .returning(import_jobs.c.id)
            ).scalars()
        )
        # Touching heartbeat_at spaces out re-deliveries of a job whose message was lost.
        lost = conn.execute(
            update(import_jobs)
            .where(import_jobs.c.status == "queued", quiet, free)
            .values(heartbeat_at=func.now())
            .returning(import_jobs.c.id)
        ).scalars()
        return dead + [job_id for job_id in lost if job_id not in dead]


def drop_ended_uploads(engine: Engine, job_id: str | None = None) -> int:
    """Delete the stored file of ended jobs (of `job_id` only, if given); return chunks deleted.

    An ended job never reads its file again (the error report lives in its own table), so the
    file goes as soon as the job ends; the sweep catches any a crashed worker left behind.
    """
    ended = select(import_jobs.c.id).where(import_jobs.c.status.in_(ENDED))
    if job_id is not None:
        ended = ended.where(import_jobs.c.id == job_id)
    with engine.begin() as conn:
        return conn.execute(delete(upload_chunks).where(upload_chunks.c.job_id.in_(ended))).rowcount
