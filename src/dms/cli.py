"""`flask --app dms …` commands: db, users, mail (tables and import join later)."""

from __future__ import annotations

import secrets
import signal
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from werkzeug.serving import WSGIRequestHandler, run_simple

from dms import migrate
from dms.auth import users as user_store
from dms.engine.errors import DmsError
from dms.jobs.outbox import add_message, mark_queued
from dms.services import services

db_cli = AppGroup("db", help="Database migrations.")
users_cli = AppGroup("users", help="Manage users.")
mail_cli = AppGroup("mail", help="Outgoing mail.")


def fail(error: DmsError) -> None:
    """Print a domain error the way the API words it and exit 1."""
    details = "".join(f"\n  {k}: {'; '.join(v)}" for k, v in (error.errors or {}).items())
    raise click.ClickException(f"{error.message}{details}")


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations to the service tables."""
    migrate.upgrade(services().db.engine)
    click.echo("database is up to date")


@db_cli.command("check")
def db_check() -> None:
    """Fail if the service table models and the migrations disagree."""
    migrate.check(services().db.engine)
    click.echo("models and migrations agree")


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_cli.command("create")
@click.argument("name")
@click.option("--email", required=True)
@click.option("--admin", is_flag=True, help="Give the user admin rights.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(name: str, email: str, admin: bool, password_stdin: bool) -> None:
    """Create a user."""
    try:
        user = user_store.create_user(
            services().db.engine, name, email, _read_password(password_stdin), is_admin=admin
        )
    except DmsError as exc:
        fail(exc)
    click.echo(f"created user {user.username}{' (admin)' if user.is_admin else ''}")


@users_cli.command("list")
def users_list() -> None:
    """List users."""
    for user in user_store.list_users(services().db.engine):
        click.echo(f"{user.username}\t{user.email}\t{'admin' if user.is_admin else ''}")


@users_cli.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_set_password(name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    try:
        user_store.set_password(services().db.engine, name, _read_password(password_stdin))
    except DmsError as exc:
        fail(exc)
    click.echo(f"password changed for {name}")


@users_cli.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def users_delete(name: str, yes: bool) -> None:
    """Delete a user and everything they own."""
    if not yes:
        click.confirm(f"Delete user {name} and all their tables and jobs?", abort=True)
    try:
        user_store.delete_user(services().db.engine, name)
    except DmsError as exc:
        fail(exc)
    click.echo(f"deleted user {name}")


@users_cli.command("ensure-admin")
@click.option("--url", default=None, help="where the API will listen (default DMS_PUBLIC_URL)")
def users_ensure_admin(url: str | None) -> None:
    """Make sure the first admin (DMS_ADMIN_USER) exists; print how to log in."""
    svc = services()
    url = url or str(svc.config["DMS_PUBLIC_URL"])
    name = svc.config["DMS_ADMIN_USER"]
    password = svc.config["DMS_ADMIN_PASSWORD"]
    existing = user_store.get_user(svc.db.engine, name)
    if existing is None:
        generated = not password
        password = password or secrets.token_urlsafe(12)
        user_store.create_user(
            svc.db.engine, name, f"{name}@localhost", str(password), is_admin=True
        )
        note = " (generated: shown once, keep it)" if generated else ""
        click.echo(f"Admin user {name!r} created with password {password}{note}")
    elif password:
        user_store.set_password(svc.db.engine, name, str(password))
        click.echo(f"Admin user {name!r} exists; password set from DMS_ADMIN_PASSWORD")
    else:
        click.echo(
            f"Admin user {name!r} exists (password unchanged; "
            f"`flask --app dms users set-password {name}` to reset it)"
        )
    shown = password or "<password>"
    click.echo(
        f"Log in:\n  curl -s -X POST {url.rstrip('/')}/api/token/ "
        f'-H \'Content-Type: application/json\' -d \'{{"username": "{name}", '
        f'"password": "{shown}"}}\''
    )


@mail_cli.command("send-test")
@click.option("--to", "recipient", required=True)
def mail_send_test(recipient: str) -> None:
    """Queue a test message through the outbox and the broker."""
    svc = services()
    with svc.db.engine.begin() as conn:
        outbox_id = add_message(conn, recipient, "DMS test message", "Mail from DMS works.")
    svc.enqueue("send_mail", outbox_id)
    mark_queued(svc.db.engine, [outbox_id])
    click.echo(f"queued message {outbox_id}")


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's request handler without the version banner."""

    def version_string(self) -> str:
        """Return the Server header: no product versions."""
        return "dms"


@click.command("serve")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=8000, type=int)
@with_appcontext
def serve(host: str, port: int) -> None:
    """Serve the API (threaded, no reloader) with the in-process worker; for `make run`."""
    from dms.app import start_background

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    # SIGTERM (a service manager stopping us) must run atexit too: it stops the in-process
    # worker and the embedded PostgreSQL cleanly instead of leaving the server behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    start_background(app)
    run_simple(host, port, app, threaded=True, request_handler=_QuietHandler)


def register_cli(app: Flask) -> None:
    """Attach the command groups to `app`."""
    from dms.cli_import import import_command
    from dms.cli_tables import tables_cli

    for group in (db_cli, users_cli, mail_cli, tables_cli, import_command, serve):
        app.cli.add_command(group)
