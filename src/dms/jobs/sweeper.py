"""The periodic sweep: re-queue jobs a dead worker or a lost message left behind, resend mail."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dms.auth.tokens import forget_expired_logins
from dms.auth.users import forget_old_attempts
from dms.engine.import_sweep import drop_ended_uploads, reap_stale_jobs
from dms.jobs.outbox import mark_queued, unsent
from dms.services import Services

log = logging.getLogger("dms.jobs")


def sweep(svc: Services) -> tuple[list[str], list[int]]:
    """Re-enqueue stale jobs and unsent mail once; return what was re-sent."""
    stale_after = float(svc.config["DMS_JOB_STALE_SECONDS"])
    jobs = reap_stale_jobs(svc.db.engine, stale_after_s=stale_after)
    for job_id in jobs:
        svc.enqueue("run_import", job_id)
    mails = unsent(svc.db.engine, older_than_s=stale_after)
    for outbox_id in mails:
        svc.enqueue("send_mail", outbox_id)
    mark_queued(svc.db.engine, mails)
    drop_ended_uploads(svc.db.engine)  # files a worker that died after the end left behind
    forget_old_attempts(svc.db.engine, int(svc.config["DMS_LOGIN_WINDOW_SECONDS"]))
    forget_expired_logins(svc.db.engine)
    if jobs or mails:
        log.info("sweep re-queued jobs %s and mail %s", jobs, mails)
    return jobs, mails


def start_sweeper(get_services: Callable[[], Services], interval_s: float) -> threading.Event:
    """Run `sweep` now and then every `interval_s` in a daemon thread; set the event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                sweep(get_services())
            except Exception:  # noqa: BLE001 - a sweep must never kill its thread
                log.exception("sweep failed; retrying next round")
            if stop.wait(interval_s):
                return

    threading.Thread(target=loop, name="dms-sweeper", daemon=True).start()
    return stop
