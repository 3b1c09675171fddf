"""`flask --app dms import FILE --table T --user U`: the import pipeline from the command line."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext

from dms.auth.users import require_user
from dms.cli import fail
from dms.engine import importing
from dms.engine.errors import DmsError
from dms.engine.jobstatus import describe, get_job
from dms.engine.uploads import MAX_HEADER_BYTES, UploadOptions, UploadWriter, check_header
from dms.jobs.outbox import deliver, unsent_for_job
from dms.services import services


def store_file(user_id: int, table_name: str, path: Path, options: UploadOptions) -> str:
    """Store a local CSV as a queued job exactly as an upload would; return the job id."""
    svc = services()
    with path.open("rb") as handle, svc.db.engine.begin() as conn:
        table = svc.catalog.lookup(conn, user_id, table_name)
        # The upload checks the header from the file's first bytes before it reads on: so does
        # this, so a wrong header is refused before a byte is stored, not after the whole file.
        head = handle.read(MAX_HEADER_BYTES)
        reading = check_header(table, head, options)
        writer = UploadWriter(conn, user_id, int(svc.config["DMS_MAX_UPLOAD_BYTES"]))
        writer.start()
        for block in itertools.chain([head], iter(lambda: handle.read(1 << 20), b"")):
            writer.write(block)
        job_id, _ = writer.finish(table, reading, None)
    return job_id


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--table", "table_name", required=True, help="Target table.")
@click.option("--user", "username", required=True, help="Act as (and mail) this user.")
@click.option("--on-error", type=click.Choice(["skip", "abort"]), default="skip")
@click.option("--delimiter", default=None, help="Field delimiter (default: sniffed).")
@click.option("--encoding", default=None, help="File encoding (default: UTF-8).")
@click.option("--ignore-unknown-columns", is_flag=True, help="Skip header names with no column.")
@click.option("--async", "run_async", is_flag=True, help="Queue the job for a worker instead.")
@with_appcontext
def import_command(
    file: Path,
    table_name: str,
    username: str,
    on_error: str,
    delimiter: str | None,
    encoding: str | None,
    ignore_unknown_columns: bool,
    run_async: bool,
) -> None:
    """Import FILE into TABLE, in the foreground with a progress bar (or --async)."""
    svc = services()
    try:
        user = require_user(svc.db.engine, username)
        options = UploadOptions(on_error, delimiter, encoding, ignore_unknown_columns)
        job_id = store_file(user.id, table_name, file, options)
    except DmsError as exc:
        fail(exc)
    if run_async:
        svc.enqueue("run_import", job_id)
        click.echo(f"queued job {job_id}")
        return
    started = time.monotonic()
    size = file.stat().st_size
    bar: Any
    with click.progressbar(
        length=size,
        label="importing",
        show_eta=True,
        item_show_func=lambda rows: f"{rows or 0} rows",
    ) as bar:

        def progress(job: Any) -> None:
            bar.update(max(0, int(job.checkpoint_offset) - bar.pos), job.rows_processed)

        importing.run_import(
            svc.db.engine,
            svc.catalog,
            job_id,
            mail_to=user.email,
            batch_rows=int(svc.config["DMS_IMPORT_BATCH_ROWS"]),
            public_url=svc.config["DMS_PUBLIC_URL"],
            on_progress=progress,
            max_attempts=int(svc.config["DMS_IMPORT_MAX_ATTEMPTS"]),
        )
        bar.update(size - bar.pos)
    for outbox_id in unsent_for_job(svc.db.engine, job_id):
        try:
            deliver(svc.db.engine, svc.mailer, outbox_id)
        except Exception as exc:  # noqa: BLE001 - the sweep retries unsent mail later
            click.echo(f"mail not sent yet ({exc}); it will be retried", err=True)
    job = describe(get_job(svc.db.engine, user.id, job_id))
    seconds = time.monotonic() - started
    rate = job["rows_processed"] / seconds if seconds else 0
    click.echo(
        f"job {job_id}: {job['status']}; {job['rows_imported']} imported, "
        f"{job['rows_rejected']} rejected of {job['rows_processed']} rows "
        f"in {seconds:.1f}s ({rate:,.0f} rows/s)"
    )
    if job["rows_rejected"]:
        click.echo(f"errors: {job['errors_url']}")
    if job["status"] == "failed":
        raise click.ClickException(job["error"] or "the import failed")
