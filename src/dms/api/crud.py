"""Record endpoints: create, read (filters, search, sort, pages), update, delete, bulk, export."""

from __future__ import annotations

from flask import Blueprint, Response, request, stream_with_context

from dms.api.docs import doc
from dms.api.identity import known_table
from dms.api.jsonio import json_response
from dms.api.params import expect, owner_id, request_data
from dms.engine.export import prepare_export, stream_csv
from dms.engine.query import parse_read_params
from dms.services import close_read_connection, read_connection, services

bp = Blueprint("crud", __name__, url_prefix="/crud")

_S = {"type": "string"}
RECORD = {"type": "object", "properties": {"id": {"type": "integer"}}, "additionalProperties": True}
PAGE = {
    "type": "object",
    "properties": {
        "records": {"type": "array", "items": RECORD},
        "count": {"type": ["integer", "null"]},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "next_cursor": {"type": ["string", "null"]},
    },
}
READ_PARAMS = [
    "table_name",
    "owner",
    "filters",
    "search",
    "sort_by",
    "order",
    "limit",
    "offset",
    "fields",
    "cursor",
    "count",
]


def _body(props: dict[str, object], required: list[str]) -> dict[str, object]:
    return {
        "type": "object",
        "required": required,
        "properties": {"table_name": _S, "owner": _S, **props},
        "additionalProperties": False,  # `expect` refuses unknown keys
    }


@bp.post("/create_record/")
@doc(
    body=_body({"data": {"type": "object"}}, ["table_name", "data"]),
    responses={201: ("the stored record", RECORD), 409: "unique violation"},
)
def create_record() -> Response:
    """Insert one record; returns it with its id."""
    data = expect(request_data(), ["table_name", "data"])
    record = services().records.create(owner_id(data), data["table_name"], data["data"])
    return json_response(record, 201)


@bp.post("/create_records/")
@doc(
    body=_body(
        {"records": {"type": "array", "items": {"type": "object"}}}, ["table_name", "records"]
    ),
    responses={201: ("the stored records", {"type": "object"}), 409: "unique violation"},
)
def create_records() -> Response:
    """Insert up to 1000 records, all or nothing."""
    data = expect(request_data(), ["table_name", "records"])
    records = services().records.create_many(owner_id(data), data["table_name"], data["records"])
    return json_response({"records": records}, 201)


@bp.get("/read_records/")
@doc(
    query=[
        {"name": n, "in": "query", "schema": _S, "required": n == "table_name"} for n in READ_PARAMS
    ],
    responses={200: ("one page of records", PAGE)},
    reads_table=True,
)
def read_records() -> Response:
    """Read records with filters, search, sort, fields and offset or cursor pages."""
    args = expect(request.args.to_dict(), ["table_name"], READ_PARAMS)
    params = parse_read_params(args)
    page = services().records.read(
        owner_id(args), args["table_name"], params, read_connection(), known=known_table()
    )
    return json_response(page.as_dict())


@bp.put("/update_record/")
@doc(
    body=_body(
        {"id": {"type": "integer"}, "data": {"type": "object"}}, ["table_name", "id", "data"]
    ),
    responses={200: ("the updated record", RECORD), 409: "unique violation"},
)
def update_record() -> Response:
    """Change some columns of one record."""
    data = expect(request_data(), ["table_name", "id", "data"])
    record = services().records.update(owner_id(data), data["table_name"], data["id"], data["data"])
    return json_response(record)


@bp.delete("/delete_record/")
@doc(
    body=_body({"id": {"type": "integer"}}, ["table_name", "id"]),
    responses={200: ("deleted", {"type": "object"})},
)
def delete_record() -> Response:
    """Delete one record."""
    data = expect(request_data(), ["table_name", "id"])
    return json_response(
        {"id": services().records.delete(owner_id(data), data["table_name"], data["id"])}
    )


@bp.get("/export/")
@doc(
    query=[
        {"name": n, "in": "query", "schema": _S, "required": n == "table_name"}
        for n in ("table_name", "owner", "filters", "search")
    ],
    responses={200: ("CSV of the matching rows", {"_content_type": "text/csv"})},
    reads_table=True,
)
def export() -> Response:
    """Stream the matching rows as CSV (formula cells neutralised)."""
    args = expect(request.args.to_dict(), ["table_name"], ["filters", "search"])
    params = parse_read_params({k: v for k, v in args.items() if k in ("filters", "search")})
    svc = services()
    table, query = prepare_export(
        read_connection(),
        svc.catalog,
        owner_id(args),
        args["table_name"],
        params.filters,
        params.search,
        known=known_table(),
    )
    # The stream reads on a connection of its own, for as long as the client takes: give the
    # request's connection back now rather than after the last byte.
    close_read_connection()
    response = Response(
        stream_with_context(stream_csv(svc.db.engine, table, query)), mimetype="text/csv"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{table.name}.csv"'
    return response
