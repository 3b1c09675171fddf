"""A job whose runs keep stopping unfinished ends as failed instead of being retried for ever."""

from __future__ import annotations

from typing import Any

import pytest

from dms.engine.importing import run_import
from tests.test_imports_api import make_table, upload


class Crash(Exception):
    """A run that dies in the middle (a killed worker, an out-of-memory)."""


def _crash(_job: Any) -> None:
    raise Crash


def test_a_job_that_kills_every_run_fails_after_the_attempt_limit(app, client, auth):
    make_table(client, auth, name="crashy", fields={"name": "text"})
    data = b"name\n" + b"".join(b"row %d\n" % i for i in range(10))
    job_id = upload(client, auth, data, table="crashy").get_json()["job_id"]
    svc = app.extensions["dms"]
    for _ in range(3):  # each run commits one batch of one row, then dies
        with pytest.raises(Crash):
            run_import(
                svc.db.engine, svc.catalog, job_id, batch_rows=1, on_progress=_crash, max_attempts=3
            )
    outcome = run_import(svc.db.engine, svc.catalog, job_id, max_attempts=3)
    assert (outcome.ran, outcome.status, outcome.rows_imported) == (True, "failed", 3)
    job = client.get(f"/import/jobs/{job_id}/", headers=auth).get_json()
    assert job["status"] == "failed" and "3 times" in job["error"]
    assert job["finished_at"] is not None
    rows = client.get("/crud/read_records/", query_string={"table_name": "crashy"}, headers=auth)
    assert rows.get_json()["count"] == 3  # what the runs committed stays, once each


def test_runs_below_the_limit_resume_and_finish(app, client, auth):
    make_table(client, auth, name="twice", fields={"name": "text"})
    job_id = upload(client, auth, b"name\na\nb\nc\n", table="twice").get_json()["job_id"]
    svc = app.extensions["dms"]
    with pytest.raises(Crash):
        run_import(svc.db.engine, svc.catalog, job_id, batch_rows=1, on_progress=_crash)
    outcome = run_import(svc.db.engine, svc.catalog, job_id, max_attempts=2)
    assert (outcome.status, outcome.rows_imported) == ("succeeded", 3)
