"""`flask --app dms import FILE --table T --user U`: the same pipeline from the command line."""

from __future__ import annotations

from sqlalchemy import event, func, select

from dms.tables import import_jobs, upload_chunks
from tests.conftest import auth_for
from tests.csvfiles import make_csv
from tests.test_imports_api import make_table


def test_foreground_import_prints_the_summary_and_loads_the_rows(app, client, make_user, tmp_path):
    user = make_user()
    auth = auth_for(client, user.username)
    make_table(client, auth)
    data, bad_lines, good = make_csv(3000, bad_every=100)
    path = tmp_path / "people.csv"
    path.write_bytes(data)
    result = app.test_cli_runner().invoke(
        args=["import", str(path), "--table", "people", "--user", user.username]
    )
    assert result.exit_code == 0, result.output
    assert f"{good} imported, {len(bad_lines)} rejected of 3000 rows" in result.output
    assert "completed_with_errors" in result.output and "errors: " in result.output
    page = client.get("/crud/read_records/?table_name=people&limit=1", headers=auth).get_json()
    assert page["count"] == good
    jobs = client.get("/import/jobs/", headers=auth).get_json()["jobs"]
    assert [(j["status"], j["rows_imported"]) for j in jobs] == [("completed_with_errors", good)]


def test_async_import_queues_the_job(app, client, make_user, tmp_path):
    user = make_user()
    auth = auth_for(client, user.username)
    make_table(client, auth, fields={"name": "text"})
    path = tmp_path / "names.csv"
    path.write_bytes(b"name\na\nb\n")
    result = app.test_cli_runner().invoke(
        args=["import", str(path), "--table", "people", "--user", user.username, "--async"]
    )
    assert result.exit_code == 0 and "queued job" in result.output, result.output
    jobs = client.get("/import/jobs/", headers=auth).get_json()["jobs"]
    assert [j["status"] for j in jobs] == ["queued"]


def test_a_bad_header_is_refused_with_the_api_message_and_stores_nothing(
    app, client, make_user, tmp_path
):
    user = make_user()
    auth = auth_for(client, user.username)
    make_table(client, auth, fields={"name": "text"})
    path = tmp_path / "bad.csv"
    path.write_bytes(b"name,bogus\na,b\n")
    result = app.test_cli_runner().invoke(
        args=["import", str(path), "--table", "people", "--user", user.username]
    )
    assert result.exit_code != 0 and "'bogus' is not a column of the table" in result.output
    assert client.get("/import/jobs/", headers=auth).get_json() == {"jobs": []}


def test_an_unknown_header_column_is_refused_before_any_byte_is_stored(
    app, client, make_user, tmp_path
):
    user = make_user()
    make_table(client, auth_for(client, user.username), fields={"name": "text"})
    path = tmp_path / "big.csv"
    path.write_bytes(b"name,bogus\n" + b"a,b\n" * 800_000)  # ~3 MiB: several chunks
    engine, written = app.extensions["dms"].db.engine, []

    def note(_conn, _cursor, statement, *_rest):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            written.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        result = app.test_cli_runner().invoke(
            args=["import", str(path), "--table", "people", "--user", user.username]
        )
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert result.exit_code == 1
    assert "the header does not fit the table" in result.output
    assert "header: 'bogus' is not a column of the table" in result.output
    assert written == []  # refused from the first bytes: not stored and rolled back
    with engine.connect() as conn:
        jobs = conn.execute(select(import_jobs.c.id).where(import_jobs.c.user_id == user.id)).all()
        chunks = conn.execute(
            select(func.count())
            .select_from(upload_chunks.join(import_jobs))
            .where(import_jobs.c.user_id == user.id)
        ).scalar_one()
    assert (jobs, chunks) == ([], 0)
