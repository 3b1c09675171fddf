"""CSV export of filtered rows: streamed in constant memory, guarded against formula injection."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Select, select

from dms.engine import jsonvalues
from dms.engine.catalog import Catalog, KnownTable, TableDef
from dms.engine.query import compile_where

# A spreadsheet treats a text cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_text(value: str) -> str:
    """Return `value` with a leading apostrophe if a spreadsheet would run it as a formula."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def cell(value: Any) -> str:
    """Return one CSV cell: ISO dates, true/false, JSON for jsonb, guarded text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return safe_text(jsonvalues.dumps(value))
    if isinstance(value, Decimal):
        return jsonvalues.plain_decimal(value)
    return str(value)  # numbers (never formulas), UUIDs


def prepare_export(
    conn: Connection,
    catalog: Catalog,
    owner_id: int,
    table_name: object,
    filters: object,
    search: object,
    known: KnownTable | None = None,
) -> tuple[TableDef, Select[Any]]:
    """Validate everything up front (so errors are JSON, not a broken stream); return the query.

    `known`: the table's (id, version) if already read in this request (see Catalog.lookup).
    """
    table = catalog.lookup(conn, owner_id, table_name, known)
    where = compile_where(table.table, table.types, filters, search)
    query = select(*table.table.c).order_by(table.table.c.id)
    if where is not None:
        query = query.where(where)
    return table, query


def stream_csv(
    engine: Engine, table: TableDef, query: Select[Any], rows_per_chunk: int = 2000
) -> Iterator[bytes]:
    """Yield the CSV (header first) in chunks, reading through a server-side cursor."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["id", *(c.name for c in table.columns)])
    yield buffer.getvalue().encode()
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=rows_per_chunk).execute(
            query
        )
        for partition in result.partitions():
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([cell(v) for v in row] for row in partition)
            yield buffer.getvalue().encode()
