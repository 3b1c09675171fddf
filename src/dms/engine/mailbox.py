"""The outbox row: a message is decided in the same transaction as what it reports."""

from __future__ import annotations

from sqlalchemy import Connection, insert

from dms.tables import outbox


def add_message(
    conn: Connection, recipient: str, subject: str, body: str, job_id: str | None = None
) -> int:
    """Queue a message in the caller's transaction and return its outbox id."""
    return int(
        conn.execute(
            insert(outbox)
            .values(recipient=recipient, subject=subject, body=body, job_id=job_id)
            .returning(outbox.c.id)
        ).scalar_one()
    )
