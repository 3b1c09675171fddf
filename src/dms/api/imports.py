"""Import endpoints: upload a CSV, follow the job, read its error report, cancel it."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, stream_with_context

from dms.api.docs import doc
from dms.api.identity import caller
from dms.api.jsonio import json_response
from dms.api.params import owner_id
from dms.api.uploads import receive_upload
from dms.engine import jobstatus
from dms.engine.catalog import TableDef
from dms.services import read_connection, services

bp = Blueprint("imports", __name__, url_prefix="/import")

_S = {"type": "string"}
JOB = {
    "type": "object",
    "properties": {
        "id": _S,
        "table_name": _S,
        "status": _S,
        "rows_total": {"type": ["integer", "null"]},
        "rows_processed": {"type": "integer"},
        "rows_imported": {"type": "integer"},
        "rows_rejected": {"type": "integer"},
        "progress": {"type": "number"},
        "started_at": {"type": ["string", "null"]},
        "finished_at": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
    },
}
ACCEPTED = {"type": "object", "properties": {"job_id": _S, "status": _S, "status_url": _S}}
UPLOAD = {
    "type": "object",
    "required": ["file", "table_name"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "table_name": _S,
        "owner": _S,
        "on_error": {"type": "string", "enum": ["skip", "abort"]},
        "delimiter": _S,
        "encoding": _S,
        "ignore_unknown_columns": {"type": "boolean"},
    },
}


def _resolve(form: dict[str, str]) -> TableDef:
    return services().catalog.lookup(read_connection(), owner_id(form), form.get("table_name"))


@bp.post("/upload/")
@doc(
    body=UPLOAD,
    content_type="multipart/form-data",
    responses={
        202: ("stored and queued", ACCEPTED),
        200: ("the same upload again", ACCEPTED),
        409: "Idempotency-Key reused with other bytes",
        413: "file too large",
        429: "too many imports queued or running",
    },
)
def upload() -> Response:
    """Upload a CSV for background import; answers as soon as the file is stored."""
    svc = services()
    job_id, created = receive_upload(caller().id, _resolve)
    if created:
        # The job is stored: if the broker is down the periodic sweep sends its message, so the
        # answer is still 202 (a 500 would invite a retry that creates a second job).
        svc.enqueue_or_defer("run_import", job_id)
    job = jobstatus.get_job(svc.db.engine, caller().id, job_id)
    body = {
        "job_id": job_id,
        "status": job.status,
        "status_url": f"{svc.config['DMS_PUBLIC_URL']}/import/jobs/{job_id}/",
    }
    return json_response(body, 202 if created else 200)


def _job_body(row: Any) -> dict[str, Any]:
    return jobstatus.describe(row, services().config["DMS_PUBLIC_URL"])


@bp.get("/jobs/")
@doc(responses={200: ("your jobs, newest first", {"type": "object"})})
def list_jobs() -> Response:
    """List your import jobs, newest first."""
    rows = jobstatus.list_jobs(services().db.engine, caller().id)
    return json_response({"jobs": [_job_body(r) for r in rows]})


@bp.get("/jobs/<job_id>/")
@doc(responses={200: ("job status", JOB)})
def job_status(job_id: str) -> Response:
    """Show a job's status, counts and progress."""
    return json_response(_job_body(jobstatus.get_job(services().db.engine, caller().id, job_id)))


@bp.get("/jobs/<job_id>/errors/")
@doc(responses={200: ("CSV line,column,value,message", {"_content_type": "text/csv"})})
def job_errors(job_id: str) -> Response:
    """Download every rejected row as CSV (line, column, value, message)."""
    rows = jobstatus.error_report(services().db.engine, caller().id, job_id)
    response = Response(stream_with_context(rows), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="errors-{job_id}.csv"'
    return response


@bp.post("/jobs/<job_id>/cancel/")
@doc(responses={202: ("cancellation requested", JOB), 409: "the job has ended"})
def cancel(job_id: str) -> Response:
    """Stop a job at its next batch; rows already committed stay."""
    row = jobstatus.cancel_job(services().db.engine, caller().id, job_id)
    return json_response(_job_body(row), 202)
