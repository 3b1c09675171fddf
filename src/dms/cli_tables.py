"""`flask --app dms tables …`: the schema endpoints from the command line, same validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from flask.cli import AppGroup

from dms.auth.users import require_user
from dms.cli import fail
from dms.engine.errors import DmsError, ValidationFailed
from dms.services import services

tables_cli = AppGroup("tables", help="Manage a user's tables.")
user_option = click.option("--user", "username", required=True, help="Act as this user.")


def _run(action: Callable[[int], Any], username: str) -> Any:
    """Run `action(owner_id)` turning domain errors into a clean CLI error."""
    try:
        return action(require_user(services().db.engine, username).id)
    except DmsError as exc:
        fail(exc)


def _show(definition: Any) -> None:
    click.echo(json.dumps(definition.describe(), indent=2, default=str))


def parse_field_args(pairs: tuple[str, ...], fields_json: str | None) -> dict[str, Any]:
    """Return `{column: type}` from `col:type` arguments or a --fields JSON object."""
    if fields_json:
        try:
            fields = json.loads(fields_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--fields") from exc
        return fields if isinstance(fields, dict) else {}
    fields = {}
    for pair in pairs:
        name, sep, spec = pair.partition(":")
        if not sep:
            fail(ValidationFailed("columns are given as name:type", errors={pair: ["no ':'"]}))
        fields[name.strip()] = spec.strip()
    return fields


@tables_cli.command("create")
@click.argument("name")
@click.argument("columns", nargs=-1)
@click.option("--fields", "fields_json", help='JSON object, e.g. \'{"age": "int not null"}\'.')
@user_option
def create(name: str, columns: tuple[str, ...], fields_json: str | None, username: str) -> None:
    """Create table NAME with columns given as name:type (e.g. age:"int not null")."""
    fields = parse_field_args(columns, fields_json)
    _show(_run(lambda owner: services().schemas.create_table(owner, name, fields), username))


@tables_cli.command("add-column")
@click.argument("table")
@click.argument("column")
@click.argument("column_type")
@user_option
def add_column(table: str, column: str, column_type: str, username: str) -> None:
    """Add COLUMN of COLUMN_TYPE to TABLE."""
    _show(_run(lambda o: services().schemas.add_column(o, table, column, column_type), username))


@tables_cli.command("remove-column")
@click.argument("table")
@click.argument("column")
@user_option
def remove_column(table: str, column: str, username: str) -> None:
    """Remove COLUMN (and its data) from TABLE."""
    _show(_run(lambda o: services().schemas.remove_column(o, table, column), username))


@tables_cli.command("rename-column")
@click.argument("table")
@click.argument("column")
@click.argument("new_name")
@user_option
def rename_column(table: str, column: str, new_name: str, username: str) -> None:
    """Rename COLUMN of TABLE to NEW_NAME."""
    _show(_run(lambda o: services().schemas.rename_column(o, table, column, new_name), username))


@tables_cli.command("rename")
@click.argument("table")
@click.argument("new_name")
@user_option
def rename(table: str, new_name: str, username: str) -> None:
    """Rename TABLE to NEW_NAME."""
    _show(_run(lambda o: services().schemas.rename_table(o, table, new_name), username))


@tables_cli.command("alter-column")
@click.argument("table")
@click.argument("column")
@click.argument("column_type")
@user_option
def alter_column(table: str, column: str, column_type: str, username: str) -> None:
    """Change COLUMN of TABLE to COLUMN_TYPE, converting its data."""
    _show(_run(lambda o: services().schemas.alter_column(o, table, column, column_type), username))


@tables_cli.command("drop")
@click.argument("table")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@user_option
def drop(table: str, yes: bool, username: str) -> None:
    """Drop TABLE and all its rows."""
    if not yes:
        click.confirm(f"Drop table {table} and all its rows?", abort=True)
    _run(lambda o: services().schemas.delete_table(o, table), username)
    click.echo(f"dropped {table.lower()}")


@tables_cli.command("list")
@user_option
def list_tables(username: str) -> None:
    """List the user's tables."""

    def action(owner: int) -> list[Any]:
        with services().db.reader.connect() as conn:
            return services().catalog.list(conn, owner)

    for table in _run(action, username):
        columns = ", ".join(f"{c.name} {c.type.spec}" for c in table.columns)
        click.echo(f"{table.name}\t{columns}")


@tables_cli.command("describe")
@click.argument("table")
@user_option
def describe(table: str, username: str) -> None:
    """Describe TABLE."""

    def action(owner: int) -> Any:
        with services().db.reader.connect() as conn:
            return services().catalog.lookup(conn, owner, table)

    _show(_run(action, username))
