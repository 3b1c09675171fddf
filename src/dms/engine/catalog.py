"""The registry of user tables: rows in dms_tables/dms_columns -> `TableDef` with its `Table`.

Definitions are cached by (table id, version); every DDL bumps the version, so a process sees
another process's DDL at once at the cost of one cheap indexed lookup per request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import sqlalchemy as sa
from marshmallow import RAISE, Schema
from sqlalchemy import Connection, select

from dms.engine.errors import ColumnNotFound, TableNotFound
from dms.engine.identifiers import validate_identifier
from dms.engine.types import TYPES, ColumnSpec, ColumnType, TypeRegistry, parse_column_spec
from dms.tables import user_columns, user_indexes, user_tables, users

ID_COLUMN = "id"


@dataclass(frozen=True)
class ColumnDef:
    """One user column: its name and parsed specification."""

    name: str
    spec: ColumnSpec

    @property
    def type(self) -> ColumnType:
        """Return the column's type."""
        return self.spec.type


@dataclass(frozen=True)
class TableDef:
    """A user table as the registry defines it, with its SQLAlchemy `Table`."""

    id: int
    owner_id: int
    owner: str
    name: str
    pg_schema: str
    version: int
    columns: tuple[ColumnDef, ...]
    indexes: tuple[tuple[str, tuple[str, ...]], ...]
    created_at: datetime
    updated_at: datetime
    table: sa.Table = field(compare=False, repr=False)
    _by_name: dict[str, ColumnDef] = field(compare=False, repr=False, default_factory=dict)
    # Built once per (table, version), like the Table: never on every write.
    _schemas: dict[bool, Schema] = field(compare=False, repr=False, default_factory=dict)

    def column(self, name: object) -> ColumnDef:
        """Return the column called `name`, or raise ColumnNotFound."""
        found = self._by_name.get(name) if isinstance(name, str) else None
        if found is None:
            shown = name if isinstance(name, str) else repr(name)
            raise ColumnNotFound(f"table {self.name!r} has no column {str(shown)[:80]!r}")
        return found

    @cached_property
    def types(self) -> dict[str, ColumnType]:
        """Return column name -> type for every user column (built once: read on every page)."""
        return {c.name: c.type for c in self.columns}

    def input_schema(self, *, partial: bool = False) -> Schema:
        """Return the marshmallow schema validating a record's `data` (unknown keys refused)."""
        schema = self._schemas.get(partial)
        if schema is None:
            schema = self._schemas[partial] = self._build_schema(partial)
        return schema

    def _build_schema(self, partial: bool) -> Schema:
        fields = {
            c.name: c.type.field(
                required=not partial and c.spec.required,
                allow_none=c.spec.nullable,
            )
            for c in self.columns
        }
        return Schema.from_dict(fields, name=f"Record_{self.id}_{self.version}")(unknown=RAISE)

    def describe(self) -> dict[str, Any]:
        """Return the definition as the API shows it."""
        return {
            "table_name": self.name,
            "owner": self.owner,
            "columns": [c.spec.describe(c.name) for c in self.columns],
            "indexes": [{"name": n, "columns": list(cols)} for n, cols in self.indexes],
            "primary_key": ID_COLUMN,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def schema_for_owner(owner_id: int) -> str:
    """Return the PostgreSQL schema holding `owner_id`'s tables."""
    return f"dms_user_{int(owner_id)}"


def id_column() -> sa.Column[int]:
    """Return the `id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY` every table gets."""
    return sa.Column(ID_COLUMN, sa.BigInteger, sa.Identity(always=True), primary_key=True)


def build_table(name: str, pg_schema: str, columns: Iterable[ColumnDef]) -> sa.Table:
    """Return the SQLAlchemy Table for a definition (its own MetaData: never shared)."""
    cols: list[sa.Column[Any]] = [id_column()]
    for column in columns:
        cols.append(sa.Column(column.name, column.type.sa_type(), nullable=column.spec.nullable))
    return sa.Table(name, sa.MetaData(), *cols, schema=pg_schema)


@dataclass(frozen=True)
class KnownTable:
    """An owner's table name and its registry (id, version), or None if it does not exist."""

    owner_id: int
    name: str
    id_version: tuple[int, int] | None


# default_value as its JSON text: `ColumnType.from_registry` parses it, never the session's
# JSON deserializer (whose exact Decimals double and jsonb defaults would not read back as).
_COLUMNS = sa.select(
    *(c for c in user_columns.c if c.key != "default_value"),
    sa.cast(user_columns.c.default_value, sa.Text).label("default_value"),
)

# Built once: every table request runs it, and building a select costs more than running it.
_ID_VERSION = sa.select(user_tables.c.id, user_tables.c.version).where(
    user_tables.c.owner_id == sa.bindparam("owner_id"), user_tables.c.name == sa.bindparam("name")
)


class Catalog:
    """Look up table definitions, caching each by (id, version)."""

    def __init__(self, registry: TypeRegistry = TYPES, max_entries: int = 4096) -> None:
        self.registry = registry
        self.max_entries = max_entries
        self._cache: dict[tuple[int, int], TableDef] = {}
        self._lock = threading.Lock()

    def lookup(
        self,
        conn: Connection,
        owner_id: int,
        table_name: object,
        known: KnownTable | None = None,
    ) -> TableDef:
        """Return `owner_id`'s table called `table_name` (validated first), or raise.

        `known` is this table's (id, version) as read earlier in the same request, which saves
        the version query; it is ignored unless it names the same owner and table.
        """
        name = validate_identifier(table_name, "table")
        if known is not None and known.owner_id == owner_id and known.name == name:
            row = known.id_version
        else:
            found = conn.execute(_ID_VERSION, {"owner_id": owner_id, "name": name}).first()
            row = None if found is None else (found.id, found.version)
        if row is None:
            raise TableNotFound(f"table {name!r} does not exist")
        cached = self._cache.get(row)
        if cached is not None:
            return cached
        return self._load(conn, row[0])

    def by_id(self, conn: Connection, table_id: int) -> TableDef:
        """Return the table with registry id `table_id`, or raise TableNotFound."""
        version = conn.execute(
            select(user_tables.c.version).where(user_tables.c.id == table_id)
        ).scalar()
        if version is None:
            raise TableNotFound("table does not exist any more")
        return self._cache.get((table_id, version)) or self._load(conn, table_id)

    def list(self, conn: Connection, owner_id: int | None) -> list[TableDef]:
        """Return `owner_id`'s tables by name, or every table when `owner_id` is None."""
        query = select(user_tables.c.id, user_tables.c.version).order_by(
            user_tables.c.owner_id, user_tables.c.name
        )
        if owner_id is not None:
            query = query.where(user_tables.c.owner_id == owner_id)
        return [
            self._cache.get((r.id, r.version)) or self._load(conn, r.id)
            for r in conn.execute(query)
        ]

    def _load(self, conn: Connection, table_id: int) -> TableDef:
        head = conn.execute(
            select(user_tables, users.c.username)
            .join(users, users.c.id == user_tables.c.owner_id)
            .where(user_tables.c.id == table_id)
        ).one()
        column_rows = conn.execute(
            _COLUMNS.where(user_columns.c.table_id == table_id).order_by(user_columns.c.position)
        ).all()
        index_rows = conn.execute(
            select(user_indexes.c.name, user_indexes.c.columns)
            .where(user_indexes.c.table_id == table_id)
            .order_by(user_indexes.c.name)
        ).all()
        columns = tuple(ColumnDef(r.name, self._spec(r)) for r in column_rows)
        definition = TableDef(
            id=head.id,
            owner_id=head.owner_id,
            owner=head.username,
            name=head.name,
            pg_schema=head.pg_schema,
            version=head.version,
            columns=columns,
            indexes=tuple((r.name, tuple(r.columns)) for r in index_rows),
            created_at=head.created_at,
            updated_at=head.updated_at,
            table=build_table(head.name, head.pg_schema, columns),
            _by_name={c.name: c for c in columns},
        )
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()  # rare; a definition reloads in one query
            self._cache[(definition.id, definition.version)] = definition
        return definition

    def _spec(self, row: Any) -> ColumnSpec:
        base = parse_column_spec(row.type_spec, self.registry)
        stored = row.default_value  # JSON text; SQL NULL or JSON null: no default value
        default = None if stored is None or stored == "null" else base.type.from_registry(stored)
        return ColumnSpec(
            base.type,
            unique=row.is_unique,
            nullable=row.nullable,
            default=default,
            has_default=row.has_default,
            index=row.indexed,
        )
