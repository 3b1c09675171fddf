"""Import jobs as their owners see them: status, list, error report, cancel."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, Select, select, update

from dms.engine.errors import JobEnded, JobNotFound
from dms.engine.export import safe_text
from dms.tables import import_errors, import_jobs

ENDED = ("succeeded", "completed_with_errors", "failed", "cancelled")
_COLUMNS = (
    import_jobs.c.id,
    import_jobs.c.table_name,
    import_jobs.c.status,
    import_jobs.c.options,
    import_jobs.c.size_bytes,
    import_jobs.c.rows_total,
    import_jobs.c.rows_processed,
    import_jobs.c.rows_imported,
    import_jobs.c.rows_rejected,
    import_jobs.c.checkpoint_offset,
    import_jobs.c.created_at,
    import_jobs.c.started_at,
    import_jobs.c.finished_at,
    import_jobs.c.error,
    import_jobs.c.cancel_requested,
)


def error_rows(job_id: str) -> Select[Any]:
    """Return the query of a job's rejected rows (line, column, value, message) in file order."""
    return (
        select(
            import_errors.c.line,
            import_errors.c.column_name,
            import_errors.c.value,
            import_errors.c.message,
        )
        .where(import_errors.c.job_id == job_id)
        .order_by(import_errors.c.line, import_errors.c.id)
    )


def describe(row: Any, public_url: str = "") -> dict[str, Any]:
    """Return a job as the API shows it."""
    if row.status in ("succeeded", "completed_with_errors"):
        progress = 1.0  # the whole file was read
    elif row.size_bytes:
        progress = round(min(row.checkpoint_offset / row.size_bytes, 1.0), 4)
    else:
        progress = 0.0
    return {
        "id": row.id,
        "table_name": row.table_name,
        "status": row.status,
        "on_error": (row.options or {}).get("on_error", "skip"),
        "size_bytes": row.size_bytes,
        "rows_total": row.rows_total,
        "rows_processed": row.rows_processed,
        "rows_imported": row.rows_imported,
        "rows_rejected": row.rows_rejected,
        "progress": progress,
        "created_at": row.created_at.isoformat(),
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "error": row.error,
        "cancel_requested": row.cancel_requested,
        "status_url": f"{public_url}/import/jobs/{row.id}/",
        "errors_url": f"{public_url}/import/jobs/{row.id}/errors/",
    }


def _owned(conn: Connection, user_id: int, job_id: object) -> Any:
    if not isinstance(job_id, str) or len(job_id) > 64:
        raise JobNotFound("no such import job")
    row = conn.execute(
        select(*_COLUMNS).where(
            import_jobs.c.id == job_id,
            import_jobs.c.user_id == user_id,
            import_jobs.c.status != "uploading",
        )
    ).first()
    if row is None:
        raise JobNotFound("no such import job")
    return row


def get_job(engine: Engine, user_id: int, job_id: object) -> Any:
    """Return the caller's job row, or raise JobNotFound (also for another user's job)."""
    with engine.connect() as conn:
        return _owned(conn, user_id, job_id)


def list_jobs(engine: Engine, user_id: int, limit: int = 200) -> list[Any]:
    """Return the caller's jobs, newest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(*_COLUMNS)
                .where(import_jobs.c.user_id == user_id, import_jobs.c.status != "uploading")
                .order_by(import_jobs.c.created_at.desc(), import_jobs.c.id)
                .limit(limit)
            )
        )


def cancel_job(engine: Engine, user_id: int, job_id: object) -> Any:
    """Ask a job to stop at its next batch (a queued job stops before it starts)."""
    with engine.begin() as conn:
        row = _owned(conn, user_id, job_id)
        if row.status in ENDED:
            raise JobEnded(f"the job has already ended ({row.status})")
        conn.execute(
            update(import_jobs).where(import_jobs.c.id == row.id).values(cancel_requested=True)
        )
        return _owned(conn, user_id, job_id)


def error_report(engine: Engine, user_id: int, job_id: object) -> Iterator[bytes]:
    """Check ownership now, then stream `line,column,value,message` for every rejected row."""
    job = get_job(engine, user_id, job_id)

    def stream() -> Iterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(["line", "column", "value", "message"])
        yield buffer.getvalue().encode()
        query = error_rows(job.id)
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
            for part in result.partitions():
                buffer.seek(0)
                buffer.truncate()
                writer.writerows(
                    (line, col or "", safe_text(value or ""), safe_text(msg))
                    for line, col, value, msg in part
                )
                yield buffer.getvalue().encode()

    return stream()
