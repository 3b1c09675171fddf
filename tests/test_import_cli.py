"""`flask --app dms import FILE --table T --user U`: the same pipeline from the command line."""

from __future__ import annotations

from tests.conftest import bearer, login
from tests.csvfiles import make_csv
from tests.test_imports_api import make_table


def test_foreground_import_prints_the_summary_and_loads_the_rows(app, client, make_user, tmp_path):
    user = make_user()
    auth = bearer(login(client, user.username)["access"])
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
    auth = bearer(login(client, user.username)["access"])
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
    auth = bearer(login(client, user.username)["access"])
    make_table(client, auth, fields={"name": "text"})
    path = tmp_path / "bad.csv"
    path.write_bytes(b"name,bogus\na,b\n")
    result = app.test_cli_runner().invoke(
        args=["import", str(path), "--table", "people", "--user", user.username]
    )
    assert result.exit_code != 0 and "'bogus' is not a column of the table" in result.output
    assert client.get("/import/jobs/", headers=auth).get_json() == {"jobs": []}
