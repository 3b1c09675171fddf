"""`flask --app dms users …` commands."""

from __future__ import annotations

from tests.conftest import unique_name


def test_create_list_set_password_delete(app, client):
    runner = app.test_cli_runner()
    name = unique_name("cli")
    result = runner.invoke(
        args=[
            "users",
            "create",
            name,
            "--email",
            f"{name}@example.com",
            "--admin",
            "--password-stdin",
        ],
        input="first-password\n",
    )
    assert result.exit_code == 0, result.output
    assert name in runner.invoke(args=["users", "list"]).output
    ok = client.post("/api/token/", json={"username": name, "password": "first-password"})
    assert ok.status_code == 200
    result = runner.invoke(
        args=["users", "set-password", name, "--password-stdin"], input="second-password\n"
    )
    assert result.exit_code == 0, result.output
    old = client.post("/api/token/", json={"username": name, "password": "first-password"})
    assert old.status_code == 401
    access = client.post(
        "/api/token/", json={"username": name, "password": "second-password"}
    ).get_json()["access"]
    assert runner.invoke(args=["users", "delete", name, "--yes"]).exit_code == 0
    assert name not in runner.invoke(args=["users", "list"]).output
    # the deleted user's tokens die with their families
    gone = client.post("/api/token/revoke/", headers={"Authorization": f"Bearer {access}"})
    assert gone.status_code == 401


def test_create_refuses_duplicates_and_bad_input(app):
    runner = app.test_cli_runner()
    name = unique_name("dup")
    args = ["users", "create", name, "--email", "a@example.com", "--password-stdin"]
    assert runner.invoke(args=args, input="long-enough\n").exit_code == 0
    again = runner.invoke(args=args, input="long-enough\n")
    assert again.exit_code != 0 and "already exists" in again.output
    short = runner.invoke(args=[*args[:2], unique_name(), *args[3:]], input="short\n")
    assert short.exit_code != 0 and "at least 8" in short.output
    bad = runner.invoke(
        args=["users", "create", "bad name!", "--email", "nope", "--password-stdin"],
        input="long-enough\n",
    )
    assert bad.exit_code != 0 and "username" in bad.output


def test_ensure_admin_creates_the_first_admin_once(make_app):
    name = unique_name("admin")
    app = make_app(DMS_ADMIN_USER=name, DMS_ADMIN_PASSWORD="admin-password-1")
    runner = app.test_cli_runner()
    first = runner.invoke(args=["users", "ensure-admin"])
    assert first.exit_code == 0 and "created" in first.output and "curl" in first.output
    second = runner.invoke(args=["users", "ensure-admin"])
    assert second.exit_code == 0 and "exists" in second.output
    token = app.test_client().post(
        "/api/token/", json={"username": name, "password": "admin-password-1"}
    )
    assert token.status_code == 200
