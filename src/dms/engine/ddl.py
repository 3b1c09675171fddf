"""Schema changes on user tables: each DDL and its registry update commit in one transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import psycopg.errors as pgerr
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.schema import CreateSchema

from dms.engine.catalog import (
    Catalog,
    ColumnDef,
    TableDef,
    id_column,
    schema_for_owner,
)
from dms.engine.errors import (
    ColumnExists,
    DmsError,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    TableBusy,
    TableExists,
    UniqueViolation,
    ValidationFailed,
)
from dms.engine.identifiers import name_of, validate_identifier
from dms.engine.jsonvalues import plain_decimal
from dms.engine.locks import lock_owner, set_lock_timeout, try_lock_table
from dms.engine.types import ColumnSpec, ColumnType, parse_column_spec
from dms.tables import user_columns, user_indexes, user_tables

T = TypeVar("T")
_DIALECT = postgresql.dialect()


@dataclass(frozen=True)
class Limits:
    """Configurable limits and lock settings for schema changes."""

    max_columns: int = 200
    max_tables: int = 1000
    lock_timeout_ms: int = 2000


def storable_default(value: Any) -> Any:
    """Return a column default as JSON for the registry (exact: numerics as strings)."""
    if isinstance(value, Decimal):
        return plain_decimal(value)  # "0.0000001", never "1E-7", which the types refuse
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return value


def default_sql(value: Any, column_type: ColumnType) -> sa.TextClause:
    """Return a SQL default expression rendered by SQLAlchemy from a validated value."""
    # The type's text for the value (the one the importer uses too), cast to the type.
    literal = sa.cast(sa.literal(column_type.to_text(value), sa.Text), column_type.sa_type())
    rendered = literal.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True})
    # text() reads ":name" as a bind parameter ('{"a":1}', 'at :noon'): escape every colon.
    return sa.text(str(rendered).replace(":", "\\:"))


def sa_column(name: str, spec: ColumnSpec) -> sa.Column[Any]:
    """Return the SQLAlchemy column for a user column (type, nullability, default)."""
    server_default = None
    if spec.has_default and spec.default is not None:
        server_default = default_sql(spec.default, spec.type)
    return sa.Column(
        name, spec.type.sa_type(), nullable=spec.nullable, server_default=server_default
    )


def index_name(table_id: int, columns: tuple[str, ...]) -> str:
    """Return a stable index name for these columns (bounded to 63 bytes)."""
    digest = hashlib.sha1("\0".join(columns).encode()).hexdigest()[:10]
    return f"ix_{table_id}_{digest}"


def unique_name(table_id: int, column: str) -> str:
    """Return the unique constraint name of a column."""
    return f"uq_{table_id}_{hashlib.sha1(column.encode()).hexdigest()[:10]}"


class Schemas:
    """Run DDL for one owner's tables against `engine`, keeping the registry in step."""

    def __init__(self, engine: Engine, catalog: Catalog, limits: Limits | None = None) -> None:
        self.engine = engine
        self.catalog = catalog
        self.limits = limits or Limits()

    # --- transactions -------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                set_lock_timeout(conn, self.limits.lock_timeout_ms)
                yield conn
        except DBAPIError as exc:
            raise _translate(exc) from exc

    def _alter(
        self, owner_id: int, table_name: object, change: Callable[[Connection, TableDef], T]
    ) -> TableDef:
        """Lock the table, apply `change`, bump the version, return the new definition."""
        with self._transaction() as conn:
            definition = self.catalog.lookup(conn, owner_id, table_name)
            try_lock_table(conn, definition.id)
            # Read again under the lock: a DDL that committed between the lookup and the lock
            # (two concurrent add_column of one name…) is seen, not overwritten.
            definition = self.catalog.by_id(conn, definition.id)
            change(conn, definition)
            _bump(conn, definition.id)
            result = self.catalog.by_id(conn, definition.id)
        return result

    # --- operations -----------------------------------------------------------------------

    def create_table(self, owner_id: int, table_name: object, fields: object) -> TableDef:
        """Create a table with an identity `id` and the given `{column: "type modifiers"}`."""
        name = validate_identifier(table_name, "table")
        columns = self._parse_fields(fields)
        try:
            with self._transaction() as conn:
                lock_owner(conn, owner_id)
                existing = conn.execute(
                    select(func.count())
                    .select_from(user_tables)
                    .where(user_tables.c.owner_id == owner_id)
                ).scalar_one()
                _refuse_taken_name(conn, owner_id, name)
                if existing >= self.limits.max_tables:
                    raise LimitExceeded(f"at most {self.limits.max_tables} tables per user")
                pg_schema = schema_for_owner(owner_id)
                conn.execute(CreateSchema(pg_schema, if_not_exists=True))
                table_id = conn.execute(
                    insert(user_tables)
                    .values(owner_id=owner_id, name=name, pg_schema=pg_schema)
                    .returning(user_tables.c.id)
                ).scalar_one()
                _ddl_table(name, pg_schema, columns).create(conn)
                ops = _ops(conn)
                for position, column in enumerate(columns):
                    _insert_column(conn, table_id, position, column)
                    self._constraints(ops, conn, table_id, name, pg_schema, column)
                result = self.catalog.by_id(conn, table_id)
        except IntegrityError as exc:
            raise TableExists(f"table {name!r} already exists") from exc
        return result

    def add_column(
        self, owner_id: int, table_name: object, column_name: object, column_type: object
    ) -> TableDef:
        """Add a column; PostgreSQL's rules for not null/unique on existing rows apply."""
        column = ColumnDef(validate_identifier(column_name, "column"), _parse(column_type))

        def change(conn: Connection, table: TableDef) -> None:
            if column.name in {c.name for c in table.columns}:
                raise ColumnExists(f"column {column.name!r} already exists")
            if len(table.columns) >= self.limits.max_columns:
                raise LimitExceeded(f"at most {self.limits.max_columns} columns per table")
            ops = _ops(conn)
            ops.add_column(table.name, sa_column(column.name, column.spec), schema=table.pg_schema)
            position = 1 + max(_positions(conn, table.id) or [-1])
            _insert_column(conn, table.id, position, column)
            self._constraints(ops, conn, table.id, table.name, table.pg_schema, column)

        return self._alter(owner_id, table_name, change)

    def remove_column(self, owner_id: int, table_name: object, column_name: object) -> TableDef:
        """Drop a column (and any index that used it)."""

        def change(conn: Connection, table: TableDef) -> None:
            column = table.column(_column_name(column_name))
            _ops(conn).drop_column(table.name, column.name, schema=table.pg_schema)
            conn.execute(
                delete(user_columns).where(
                    user_columns.c.table_id == table.id, user_columns.c.name == column.name
                )
            )
            # PostgreSQL drops every index on the column with it; forget them too.
            for index, cols in table.indexes:
                if column.name in cols:
                    conn.execute(
                        delete(user_indexes).where(
                            user_indexes.c.table_id == table.id, user_indexes.c.name == index
                        )
                    )

        return self._alter(owner_id, table_name, change)

    def rename_column(
        self, owner_id: int, table_name: object, column_name: object, new_name: object
    ) -> TableDef:
        """Rename a column."""
        target = validate_identifier(new_name, "column")

        def change(conn: Connection, table: TableDef) -> None:
            column = table.column(_column_name(column_name))
            if target == column.name:
                return
            if target in {c.name for c in table.columns}:
                raise ColumnExists(f"column {target!r} already exists")
            _ops(conn).alter_column(
                table.name, column.name, new_column_name=target, schema=table.pg_schema
            )
            conn.execute(
                update(user_columns)
                .where(user_columns.c.table_id == table.id, user_columns.c.name == column.name)
                .values(name=target)
            )
            for index, cols in table.indexes:
                if column.name in cols:
                    renamed = [target if c == column.name else c for c in cols]
                    conn.execute(
                        update(user_indexes)
                        .where(user_indexes.c.table_id == table.id, user_indexes.c.name == index)
                        .values(columns=renamed)
                    )

        return self._alter(owner_id, table_name, change)

    def rename_table(self, owner_id: int, table_name: object, new_name: object) -> TableDef:
        """Rename a table."""
        target = validate_identifier(new_name, "table")

        def change(conn: Connection, table: TableDef) -> None:
            if target == table.name:
                return
            lock_owner(conn, owner_id)
            _refuse_taken_name(conn, owner_id, target)
            _ops(conn).rename_table(table.name, target, schema=table.pg_schema)
            conn.execute(
                update(user_tables).where(user_tables.c.id == table.id).values(name=target)
            )

        return self._alter(owner_id, table_name, change)

    def alter_column(
        self, owner_id: int, table_name: object, column_name: object, column_type: object
    ) -> TableDef:
        """Change a column's type and modifiers, converting data; refuse if a value won't."""
        spec = _parse(column_type)

        def change(conn: Connection, table: TableDef) -> None:
            column = table.column(_column_name(column_name))
            if spec.type != column.type:  # same type: no value is converted, none can fail
                _check_convertible(conn, table, column.name, spec.type)
            ops, name, schema = _ops(conn), column.name, table.pg_schema
            # The column becomes exactly `spec`: the old default goes first (it may not cast).
            ops.alter_column(table.name, name, server_default=None, schema=schema)
            if spec.type != column.type:
                quoted = _DIALECT.identifier_preparer.quote(name)
                target = spec.type.sa_type().compile(dialect=_DIALECT)
                # Through text: the same rules as input, and no silent varchar truncation
                # (lengths were checked above).
                ops.alter_column(
                    table.name,
                    name,
                    type_=spec.type.sa_type(),
                    schema=schema,
                    postgresql_using=f"{quoted}::text::{target}",
                )
            if spec.has_default and spec.default is not None:
                default = default_sql(spec.default, spec.type)
                ops.alter_column(table.name, name, server_default=default, schema=schema)
            if column.spec.nullable != spec.nullable:
                ops.alter_column(table.name, name, nullable=spec.nullable, schema=schema)
            conn.execute(
                update(user_columns)
                .where(user_columns.c.table_id == table.id, user_columns.c.name == name)
                .values(**_column_values(spec))
            )
            self._reconcile_unique_and_index(ops, conn, table, column, spec)

        return self._alter(owner_id, table_name, change)

    def delete_table(self, owner_id: int, table_name: object) -> None:
        """Drop a table and forget it."""
        with self._transaction() as conn:
            table = self.catalog.lookup(conn, owner_id, table_name)
            try_lock_table(conn, table.id)
            table.table.drop(conn)
            conn.execute(delete(user_tables).where(user_tables.c.id == table.id))

    def create_index(self, owner_id: int, table_name: object, columns: object) -> TableDef:
        """Create an index on these columns (in this order)."""

        def change(conn: Connection, table: TableDef) -> None:
            names = self._index_columns(table, columns)
            if any(cols == names for _, cols in table.indexes):
                raise DmsError("an index on these columns already exists", code="conflict")
            self._create_index(_ops(conn), conn, table.id, table.name, table.pg_schema, names)

        return self._alter(owner_id, table_name, change)

    def drop_index(self, owner_id: int, table_name: object, columns: object) -> TableDef:
        """Drop the index on exactly these columns."""

        def change(conn: Connection, table: TableDef) -> None:
            names = self._index_columns(table, columns)
            match = [name for name, cols in table.indexes if cols == names]
            if not match:
                raise NotFound("no index on these columns")
            _ops(conn).drop_index(match[0], table_name=table.name, schema=table.pg_schema)
            conn.execute(
                delete(user_indexes).where(
                    user_indexes.c.table_id == table.id, user_indexes.c.name == match[0]
                )
            )
            if len(names) == 1:
                conn.execute(
                    update(user_columns)
                    .where(user_columns.c.table_id == table.id, user_columns.c.name == names[0])
                    .values(indexed=False)
                )

        return self._alter(owner_id, table_name, change)

    # --- helpers ------------------------------------------------------------------------

    def _parse_fields(self, fields: object) -> list[ColumnDef]:
        if not isinstance(fields, Mapping) or not fields:
            raise ValidationFailed(
                "fields must be a non-empty object of column: type",
                errors={"fields": ["must be a non-empty object mapping column names to types"]},
            )
        if len(fields) > self.limits.max_columns:
            raise LimitExceeded(f"at most {self.limits.max_columns} columns per table")
        columns: dict[str, ColumnDef] = {}
        errors: dict[str, list[str]] = {}
        first: DmsError | None = None
        for raw_name, raw_type in fields.items():
            try:
                name = validate_identifier(raw_name, "column")
                if name in columns:
                    raise ColumnExists(f"column {name!r} is given twice")
                columns[name] = ColumnDef(name, _parse(raw_type))
            except DmsError as exc:
                errors.setdefault(str(raw_name)[:80], []).append(exc.message)
                first = first or exc
        if first is not None:
            # The first problem decides the code (invalid_name, invalid_type…); all are listed.
            raise type(first)(first.message, errors=errors)
        return list(columns.values())

    def _index_columns(self, table: TableDef, columns: object) -> tuple[str, ...]:
        if isinstance(columns, str):
            columns = [columns]
        if not isinstance(columns, list) or not columns or len(columns) > 32:
            raise ValidationFailed(
                "columns must be a list of 1-32 column names",
                errors={"columns": ["must be a list of 1-32 column names"]},
            )
        # `id` may close an index, e.g. (filter, sort, id) for cursor pages.
        names = tuple(
            "id" if _column_name(c) == "id" else table.column(_column_name(c)).name for c in columns
        )
        if len(set(names)) != len(names):
            raise ValidationFailed("a column is listed twice", errors={"columns": ["duplicate"]})
        return names

    def _constraints(
        self,
        ops: Operations,
        conn: Connection,
        table_id: int,
        table_name: str,
        pg_schema: str,
        column: ColumnDef,
    ) -> None:
        if column.spec.unique:
            ops.create_unique_constraint(
                unique_name(table_id, column.name), table_name, [column.name], schema=pg_schema
            )
        if column.spec.index:
            self._create_index(ops, conn, table_id, table_name, pg_schema, (column.name,))

    def _create_index(
        self,
        ops: Operations,
        conn: Connection,
        table_id: int,
        table_name: str,
        pg_schema: str,
        names: tuple[str, ...],
    ) -> None:
        name = index_name(table_id, names)
        ops.create_index(name, table_name, list(names), schema=pg_schema)
        conn.execute(insert(user_indexes).values(table_id=table_id, name=name, columns=list(names)))
        if len(names) == 1:
            conn.execute(
                update(user_columns)
                .where(user_columns.c.table_id == table_id, user_columns.c.name == names[0])
                .values(indexed=True)
            )

    def _reconcile_unique_and_index(
        self,
        ops: Operations,
        conn: Connection,
        table: TableDef,
        column: ColumnDef,
        spec: ColumnSpec,
    ) -> None:
        if spec.unique and not column.spec.unique:
            ops.create_unique_constraint(
                unique_name(table.id, column.name),
                table.name,
                [column.name],
                schema=table.pg_schema,
            )
        elif column.spec.unique and not spec.unique:
            ops.drop_constraint(
                unique_name(table.id, column.name),
                table.name,
                type_="unique",
                schema=table.pg_schema,
            )
        single = [name for name, cols in table.indexes if cols == (column.name,)]
        if spec.index and not single:
            self._create_index(ops, conn, table.id, table.name, table.pg_schema, (column.name,))
        elif single and not spec.index:
            ops.drop_index(single[0], table_name=table.name, schema=table.pg_schema)
            conn.execute(
                delete(user_indexes).where(
                    user_indexes.c.table_id == table.id, user_indexes.c.name == single[0]
                )
            )


def _ddl_table(name: str, pg_schema: str, columns: list[ColumnDef]) -> sa.Table:
    """Return the Table to CREATE: the catalog's shape plus server defaults."""
    return sa.Table(
        name,
        sa.MetaData(),
        id_column(),
        *(sa_column(c.name, c.spec) for c in columns),
        schema=pg_schema,
    )


def _refuse_taken_name(conn: Connection, owner_id: int, name: str) -> None:
    """Raise TableExists if `owner_id` already has a table called `name`."""
    taken = conn.execute(
        select(user_tables.c.id).where(
            user_tables.c.owner_id == owner_id, user_tables.c.name == name
        )
    ).first()
    if taken:
        raise TableExists(f"table {name!r} already exists")


def _ops(conn: Connection) -> Operations:
    return Operations(MigrationContext.configure(conn))


def _parse(column_type: object) -> ColumnSpec:
    return parse_column_spec(column_type)  # type: ignore[arg-type]


def _column_name(name: object) -> str:
    """Return an existing column's name as looked up: ASCII lower-cased, like stored names."""
    if not isinstance(name, str):
        raise ValidationFailed("column_name must be a string", errors={"column_name": ["required"]})
    return name_of(name)


def _column_values(spec: ColumnSpec) -> dict[str, Any]:
    return {
        "type_spec": spec.type.spec,
        "is_unique": spec.unique,
        "nullable": spec.nullable,
        "has_default": spec.has_default,
        "default_value": storable_default(spec.default) if spec.default is not None else None,
        "indexed": spec.index,
    }


def _insert_column(conn: Connection, table_id: int, position: int, column: ColumnDef) -> None:
    values = _column_values(column.spec)
    values["indexed"] = False  # set by _create_index once the index exists
    conn.execute(
        insert(user_columns).values(
            table_id=table_id, name=column.name, position=position, **values
        )
    )


def _positions(conn: Connection, table_id: int) -> list[int]:
    return list(
        conn.execute(
            select(user_columns.c.position).where(user_columns.c.table_id == table_id)
        ).scalars()
    )


def _bump(conn: Connection, table_id: int) -> None:
    conn.execute(
        update(user_tables)
        .where(user_tables.c.id == table_id)
        .values(version=user_tables.c.version + 1, updated_at=func.now())
    )


def _check_convertible(
    conn: Connection, table: TableDef, column: str, target: ColumnType, limit: int = 10
) -> None:
    """Raise ValidationFailed listing the first ids whose value the new type would refuse."""
    col = table.table.c[column]
    query = (
        select(table.table.c.id, sa.cast(col, sa.Text))
        .where(col.is_not(None))
        .order_by(table.table.c.id)
        .execution_options(yield_per=5000)
    )
    bad: list[int] = []
    message = ""
    # Closed on the early exit too: a streamed result left open keeps its server-side cursor.
    with conn.execute(query) as result:
        for row_id, value in result:
            try:
                target.from_csv(value)
            except ValueError as exc:
                bad.append(row_id)
                message = message or f"{value[:40]!r}: {exc}"
                if len(bad) >= limit:
                    break
    if bad:
        raise ValidationFailed(
            f"cannot convert column {column!r} to {target.spec}: rows {bad} do not convert "
            f"(first: {message})",
            errors={column: [f"ids {bad} do not convert to {target.spec}"]},
            detail={"ids": bad},
        )


def _translate(exc: DBAPIError) -> Exception:
    """Turn PostgreSQL's refusals of a DDL into domain errors."""
    orig = exc.orig
    if isinstance(orig, pgerr.LockNotAvailable):
        return TableBusy("the table is busy (lock timeout); retry later")
    if isinstance(orig, pgerr.NotNullViolation):
        return ValidationFailed(
            "the table has rows with no value for this not null column; give it a default",
            errors={"column_type": ["not null needs a default when the table has rows"]},
        )
    if isinstance(orig, pgerr.UniqueViolation):
        return UniqueViolation("existing rows would share a value in this unique column")
    if isinstance(orig, pgerr.DuplicateTable | pgerr.DuplicateObject):
        return TableExists("a table or index of that name already exists")
    if isinstance(orig, pgerr.DataError | pgerr.CannotCoerce | pgerr.DatatypeMismatch):
        return InvalidRequest("PostgreSQL refused the conversion of existing values")
    return exc
