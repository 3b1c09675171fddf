"""The mail outbox: a row per message, written in the transaction that decides to send it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, func, or_, select, update

from dms.engine.mailbox import add_message
from dms.mailer import Mailer
from dms.tables import import_jobs, outbox, users

log = logging.getLogger("dms.jobs")

__all__ = ["add_message", "deliver", "job_owner_email", "mark_queued", "unsent", "unsent_for_job"]


def deliver(engine: Engine, mailer: Mailer, outbox_id: int) -> bool:
    """Send one outbox message unless already sent; return True if it was sent now."""
    try:
        with engine.begin() as conn:
            # Wait for the row lock (never skip it: the holder may be a short `mark_queued`
            # update, and skipping would drop this message). A second delivery waits for the
            # first to commit, then sees `sent_at` set and sends nothing.
            row = conn.execute(
                select(outbox)
                .where(outbox.c.id == outbox_id, outbox.c.sent_at.is_(None))
                .with_for_update()
            ).first()
            if row is None:
                return False
            mailer.send(row.recipient, row.subject, row.body)
            conn.execute(
                update(outbox).where(outbox.c.id == outbox_id).values(sent_at=datetime.now(UTC))
            )
    except Exception as exc:
        # Recorded after the rollback released the row lock; the broker retries with backoff.
        _record_failure(engine, outbox_id, exc)
        raise
    return True


def _record_failure(engine: Engine, outbox_id: int, exc: Exception) -> None:
    log.warning("mail %s not sent yet: %s", outbox_id, exc)
    with engine.begin() as conn:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == outbox_id)
            .values(attempts=outbox.c.attempts + 1, last_error=str(exc)[:500], queued_at=func.now())
        )


# dramatiq's retries of send_mail back off up to 5 minutes; a message tried or queued more
# recently than this still has a live retry chain and must not get a second one.
RETRY_CHAIN_QUIET_S = 600


def unsent(engine: Engine, older_than_s: float = 0) -> list[int]:
    """Return unsent messages that no retry chain is looking after (for the periodic sweep)."""
    now = datetime.now(UTC)
    never_queued = and_(
        outbox.c.queued_at.is_(None),
        outbox.c.created_at < now - timedelta(seconds=older_than_s),
    )
    chain_gone_quiet = outbox.c.queued_at < now - timedelta(
        seconds=max(older_than_s, RETRY_CHAIN_QUIET_S)
    )
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(outbox.c.id).where(
                    outbox.c.sent_at.is_(None), or_(never_queued, chain_gone_quiet)
                )
            ).scalars()
        )


def mark_queued(engine: Engine, outbox_ids: list[int]) -> None:
    """Record that a send was queued for these messages."""
    if outbox_ids:
        with engine.begin() as conn:
            conn.execute(
                update(outbox).where(outbox.c.id.in_(outbox_ids)).values(queued_at=func.now())
            )


def unsent_for_job(engine: Engine, job_id: str) -> list[int]:
    """Return the unsent message ids of one job (at most one: job_id is unique)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(outbox.c.id).where(outbox.c.job_id == job_id, outbox.c.sent_at.is_(None))
            ).scalars()
        )


def job_owner_email(engine: Engine, job_id: str) -> str | None:
    """Return the email address of the user who uploaded `job_id`."""
    with engine.connect() as conn:
        return conn.execute(
            select(users.c.email)
            .join(import_jobs, import_jobs.c.user_id == users.c.id)
            .where(import_jobs.c.id == job_id)
        ).scalar()
