"""Schema endpoints: create, alter, rename, drop and describe user tables."""

from __future__ import annotations

from flask import Blueprint, Response

from dms.api.docs import doc
from dms.api.identity import caller, known_table
from dms.api.jsonio import json_response
from dms.api.params import expect, owner_id, request_data
from dms.services import read_connection, services

bp = Blueprint("schemas", __name__, url_prefix="/schemas")

COLUMN = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string"},
        "unique": {"type": "boolean"},
        "nullable": {"type": "boolean"},
        "default": {},
        "index": {"type": "boolean"},
    },
}
DEFINITION = {
    "type": "object",
    "required": ["table_name", "columns", "version"],
    "properties": {
        "table_name": {"type": "string"},
        "owner": {"type": "string"},
        "columns": {"type": "array", "items": COLUMN},
        "indexes": {"type": "array", "items": {"type": "object"}},
        "primary_key": {"type": "string"},
        "version": {"type": "integer"},
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
    },
}
TABLE_LIST = {"type": "object", "properties": {"tables": {"type": "array", "items": DEFINITION}}}
OK = {200: ("table definition", DEFINITION), 409: "exists already, or table busy"}
_S = {"type": "string"}


def _body(*required: str, optional: tuple[str, ...] = ()) -> dict[str, object]:
    props: dict[str, object] = {name: _S for name in (*required, *optional, "owner")}
    if "fields" in props:
        props["fields"] = {"type": "object", "additionalProperties": _S}
    if "columns" in props:
        props["columns"] = {"type": "array", "items": _S}
    # `expect` refuses unknown keys, so the document says so.
    return {
        "type": "object",
        "required": list(required),
        "properties": props,
        "additionalProperties": False,
    }


@bp.post("/create_table/")
@doc(body=_body("table_name", "fields"), responses={201: ("created", DEFINITION), 409: "exists"})
def create_table() -> Response:
    """Create a table from `{column: "type modifiers"}`."""
    data = expect(request_data(), ["table_name", "fields"])
    table = services().schemas.create_table(owner_id(data), data["table_name"], data["fields"])
    return json_response(table.describe(), 201)


@bp.post("/add_column/")
@doc(body=_body("table_name", "column_name", "column_type"), responses=OK)
def add_column() -> Response:
    """Add a column."""
    data = expect(request_data(), ["table_name", "column_name", "column_type"])
    table = services().schemas.add_column(
        owner_id(data), data["table_name"], data["column_name"], data["column_type"]
    )
    return json_response(table.describe())


@bp.route("/remove_column/", methods=["POST", "DELETE"])
@doc(body=_body("table_name", "column_name"), responses=OK)
def remove_column() -> Response:
    """Remove a column and its data."""
    data = expect(request_data(), ["table_name", "column_name"])
    table = services().schemas.remove_column(
        owner_id(data), data["table_name"], data["column_name"]
    )
    return json_response(table.describe())


@bp.post("/rename_column/")
@doc(body=_body("table_name", "column_name", "new_name"), responses=OK)
def rename_column() -> Response:
    """Rename a column."""
    data = expect(request_data(), ["table_name", "column_name", "new_name"])
    table = services().schemas.rename_column(
        owner_id(data), data["table_name"], data["column_name"], data["new_name"]
    )
    return json_response(table.describe())


@bp.post("/rename_table/")
@doc(body=_body("table_name", "new_name"), responses=OK)
def rename_table() -> Response:
    """Rename a table."""
    data = expect(request_data(), ["table_name", "new_name"])
    table = services().schemas.rename_table(owner_id(data), data["table_name"], data["new_name"])
    return json_response(table.describe())


@bp.post("/alter_column/")
@doc(body=_body("table_name", "column_name", "column_type"), responses=OK)
def alter_column() -> Response:
    """Change a column's type (converting its data) and modifiers."""
    data = expect(request_data(), ["table_name", "column_name", "column_type"])
    table = services().schemas.alter_column(
        owner_id(data), data["table_name"], data["column_name"], data["column_type"]
    )
    return json_response(table.describe())


@bp.delete("/delete_table/")
@doc(body=_body("table_name"), responses={200: ("deleted", {"type": "object"}), 409: "busy"})
def delete_table() -> Response:
    """Drop a table and all its rows."""
    data = expect(request_data(), ["table_name"])
    services().schemas.delete_table(owner_id(data), data["table_name"])
    return json_response({"table_name": str(data["table_name"]).lower(), "deleted": True})


@bp.get("/list_tables/")
@doc(responses={200: ("your tables (admins: every table)", TABLE_LIST)})
def list_tables() -> Response:
    """List your tables; admins see every table with its owner."""
    svc, me = services(), caller()
    tables = svc.catalog.list(read_connection(), None if me.is_admin else me.id)
    return json_response({"tables": [t.describe() for t in tables]})


@bp.get("/describe_table/")
@doc(
    query=[
        {"name": n, "in": "query", "schema": _S, "required": n == "table_name"}
        for n in ("table_name", "owner")
    ],
    responses={200: ("table definition", DEFINITION)},
    reads_table=True,
)
def describe_table() -> Response:
    """Describe one table."""
    data, svc = expect(request_data(), ["table_name"]), services()
    table = svc.catalog.lookup(
        read_connection(), owner_id(data), data["table_name"], known=known_table()
    )
    return json_response(table.describe())


@bp.post("/create_index/")
@doc(body=_body("table_name", "columns"), responses=OK)
def create_index() -> Response:
    """Create an index on one or more columns."""
    data = expect(request_data(), ["table_name", "columns"])
    table = services().schemas.create_index(owner_id(data), data["table_name"], data["columns"])
    return json_response(table.describe())


@bp.post("/drop_index/")
@doc(body=_body("table_name", "columns"), responses=OK)
def drop_index() -> Response:
    """Drop the index on exactly these columns."""
    data = expect(request_data(), ["table_name", "columns"])
    table = services().schemas.drop_index(owner_id(data), data["table_name"], data["columns"])
    return json_response(table.describe())
