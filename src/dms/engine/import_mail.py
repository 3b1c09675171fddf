"""The end-of-import mail: written to the outbox in the transaction that ends the job."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

from dms.engine.jobstatus import error_rows
from dms.engine.mailbox import add_message
from dms.tables import outbox

__all__ = ["MAIL_ERRORS", "end_mail", "queue_end_mail"]

MAIL_ERRORS = 10  # the first errors shown in the mail; the report link has them all


def queue_end_mail(conn: Connection, job: Any, recipient: str, public_url: str) -> None:
    """Add the mail for ended `job` to the outbox unless it already has one."""
    if conn.execute(select(outbox.c.id).where(outbox.c.job_id == job.id)).first():
        return  # dms_outbox.job_id is unique: one mail per job, ever
    errors = conn.execute(error_rows(job.id).limit(MAIL_ERRORS)).all()
    subject, body = end_mail(job, errors, public_url)
    add_message(conn, recipient, subject, body, job_id=job.id)


def end_mail(job: Any, errors: Sequence[Any], public_url: str) -> tuple[str, str]:
    """Return (subject, body): table, status, counts, duration, first errors, report link."""
    subject = (
        f"Import into {job.table_name}: {job.status.replace('_', ' ')} "
        f"({job.rows_imported} imported, {job.rows_rejected} rejected)"
    )
    seconds = 0.0
    if job.started_at is not None and job.finished_at is not None:
        seconds = (job.finished_at - job.started_at).total_seconds()
    lines = [
        f"Your CSV import into table {job.table_name} has ended.",
        "",
        f"Status: {job.status}",
        f"Rows read: {job.rows_processed}",
        f"Rows imported: {job.rows_imported}",
        f"Rows rejected: {job.rows_rejected}",
        f"Duration: {seconds:.1f} s",
    ]
    if job.error:
        lines.append(f"Error: {job.error}")
    if errors:
        lines += ["", f"First {len(errors)} error(s) (line, column: message [value]):"]
        for line, column, value, message in errors:
            shown = "" if value is None else f" [{value[:80]!r}]"
            lines.append(f"  line {line}, {column or 'row'}: {message}{shown}")
    url = f"{public_url.rstrip('/')}/import/jobs/{job.id}/errors/"
    lines += ["", f"Error report: {url}", f"Job: {job.id}"]
    return subject, "\n".join(lines) + "\n"
