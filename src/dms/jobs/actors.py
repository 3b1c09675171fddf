"""Actors: plain functions taking ids, declared on whichever broker the process uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from flask import Flask

from dms.engine import importing
from dms.jobs.broker import QUEUE
from dms.jobs.outbox import deliver, job_owner_email, mark_queued, unsent_for_job
from dms.services import services

# name -> (function, dramatiq options); every actor is safe to run twice.
REGISTRY: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}


def actor(name: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a job function under `name` with dramatiq options."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = (fn, options)
        return fn

    return wrap


@actor("send_mail", max_retries=20, min_backoff=1_000, max_backoff=300_000)
def send_mail(outbox_id: int) -> None:
    """Deliver one outbox message (retried with backoff while SMTP is down)."""
    svc = services()
    deliver(svc.db.engine, svc.mailer, outbox_id)


# Imports of big files run long; a dead worker is detected by its heartbeat, not a time limit.
@actor(
    "run_import", max_retries=50, min_backoff=1_000, max_backoff=60_000, time_limit=24 * 3_600_000
)
def run_import(job_id: str) -> None:
    """Run (or resume) one import job, then send its end-of-job mail."""
    svc = services()
    # ImportBusy and database outages raise: dramatiq retries with backoff, and the job
    # resumes from its last committed checkpoint.
    importing.run_import(
        svc.db.engine,
        svc.catalog,
        job_id,
        batch_rows=int(svc.config["DMS_IMPORT_BATCH_ROWS"]),
        mail_to=job_owner_email(svc.db.engine, job_id),
        public_url=svc.config["DMS_PUBLIC_URL"],
        max_attempts=int(svc.config["DMS_IMPORT_MAX_ATTEMPTS"]),
    )
    queued = [
        m for m in unsent_for_job(svc.db.engine, job_id) if svc.enqueue_or_defer("send_mail", m)
    ]
    mark_queued(svc.db.engine, queued)


def declare_actors(broker: dramatiq.Broker, app: Callable[[], Flask]) -> dict[str, dramatiq.Actor]:
    """Declare every registered actor on `broker`, each running inside `app()`'s context."""
    declared = {}
    for name, (fn, options) in REGISTRY.items():
        declared[name] = dramatiq.Actor(
            _in_app_context(fn, app),
            broker=broker,
            actor_name=name,
            queue_name=QUEUE,
            priority=0,
            options=dict(options),
        )
    return declared


def _in_app_context(fn: Callable[..., Any], app: Callable[[], Flask]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with app().app_context():
            return fn(*args, **kwargs)

    run.__name__ = fn.__name__
    run.__module__ = fn.__module__
    return run
