"""Locks shared by DDL and the importer: a per-table advisory lock and a bounded lock wait."""

from __future__ import annotations

from sqlalchemy import Connection, text

from dms.engine.errors import TableBusy

# First key of PostgreSQL's two-int advisory lock space: ours, so we never meet other users.
TABLE_LOCK_CLASS = 0x444D53  # "DMS"
OWNER_LOCK_CLASS = 0x444D54


def set_lock_timeout(conn: Connection, timeout_ms: int) -> None:
    """Bound how long this transaction waits for any lock (readers never queue behind us long)."""
    conn.execute(text("SELECT set_config('lock_timeout', :v, true)"), {"v": f"{int(timeout_ms)}ms"})


def try_lock_table(conn: Connection, table_id: int) -> None:
    """Take the table's transaction-level advisory lock or raise TableBusy at once."""
    got = conn.execute(
        text("SELECT pg_try_advisory_xact_lock(:k, :t)"), {"k": TABLE_LOCK_CLASS, "t": table_id}
    ).scalar()
    if not got:
        raise TableBusy("the table is busy with an import or another schema change; retry later")


def lock_owner(conn: Connection, owner_id: int) -> None:
    """Serialize one owner's table creation (schema creation, name uniqueness, table limit)."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:k, :o)"), {"k": OWNER_LOCK_CLASS, "o": owner_id}
    )


def hold_table_for_import(conn: Connection, table_id: int) -> bool:
    """Take the table's session-level advisory lock for an import; False if someone holds it."""
    return bool(
        conn.execute(
            text("SELECT pg_try_advisory_lock(:k, :t)"), {"k": TABLE_LOCK_CLASS, "t": table_id}
        ).scalar()
    )


def release_table_for_import(conn: Connection, table_id: int) -> None:
    """Release the import's session-level lock."""
    conn.execute(text("SELECT pg_advisory_unlock(:k, :t)"), {"k": TABLE_LOCK_CLASS, "t": table_id})
