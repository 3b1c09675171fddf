"""Service tables (all `dms_`-prefixed), owned by alembic; user tables live in per-owner schemas."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

# Predictable constraint names, so migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


users = Table(
    "dms_users",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("username", Text, nullable=False, unique=True),
    Column("email", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("is_admin", Boolean, nullable=False, server_default="false"),
    _now(),
)

token_families = Table(
    "dms_token_families",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", BigInteger, ForeignKey("dms_users.id", ondelete="CASCADE"), nullable=False),
    _now(),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_dms_token_families_user_id", "user_id"),
    Index("ix_dms_token_families_expires_at", "expires_at"),
)

refresh_tokens = Table(
    "dms_refresh_tokens",
    metadata,
    Column("jti", Text, primary_key=True),
    Column(
        "family_id",
        Text,
        ForeignKey("dms_token_families.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    _now(),
    Column("used_at", DateTime(timezone=True)),
)

login_failures = Table(
    "dms_login_failures",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("username", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_dms_login_failures_username_at", "username", "at"),
)

user_tables = Table(
    "dms_tables",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("owner_id", BigInteger, ForeignKey("dms_users.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("pg_schema", Text, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),
    _now(),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("owner_id", "name"),
)

user_columns = Table(
    "dms_columns",
    metadata,
    Column(
        "table_id",
        BigInteger,
        ForeignKey("dms_tables.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", Text, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("type_spec", Text, nullable=False),
    Column("is_unique", Boolean, nullable=False, server_default="false"),
    Column("nullable", Boolean, nullable=False, server_default="true"),
    Column("has_default", Boolean, nullable=False, server_default="false"),
    Column("default_value", JSONB),
    Column("indexed", Boolean, nullable=False, server_default="false"),
)

user_indexes = Table(
    "dms_indexes",
    metadata,
    Column(
        "table_id",
        BigInteger,
        ForeignKey("dms_tables.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", Text, primary_key=True),
    Column("columns", JSONB, nullable=False),
    _now(),
)

import_jobs = Table(
    "dms_import_jobs",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", BigInteger, ForeignKey("dms_users.id", ondelete="CASCADE"), nullable=False),
    Column("table_id", BigInteger, ForeignKey("dms_tables.id", ondelete="SET NULL")),
    Column("table_name", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="queued"),
    Column("options", JSONB, nullable=False),
    Column("idempotency_key", Text),
    Column("content_sha256", Text),
    Column("size_bytes", BigInteger, nullable=False, server_default="0"),
    Column("rows_total", BigInteger),
    Column("rows_processed", BigInteger, nullable=False, server_default="0"),
    Column("rows_imported", BigInteger, nullable=False, server_default="0"),
    Column("rows_rejected", BigInteger, nullable=False, server_default="0"),
    Column("checkpoint_offset", BigInteger, nullable=False, server_default="0"),
    Column("checkpoint_line", BigInteger, nullable=False, server_default="0"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("cancel_requested", Boolean, nullable=False, server_default="false"),
    Column("error", Text),
    _now(),
    Column("started_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("notified_at", DateTime(timezone=True)),
    UniqueConstraint("user_id", "idempotency_key"),
    CheckConstraint(
        "status IN ('uploading', 'queued', 'running', 'succeeded', "
        "'completed_with_errors', 'failed', 'cancelled')",
        name="status",
    ),
    Index("ix_dms_import_jobs_user_id_created_at", "user_id", "created_at"),
    Index("ix_dms_import_jobs_status", "status"),
)

upload_chunks = Table(
    "dms_upload_chunks",
    metadata,
    Column("job_id", Text, ForeignKey("dms_import_jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("start_offset", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

import_errors = Table(
    "dms_import_errors",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "job_id",
        Text,
        ForeignKey("dms_import_jobs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("line", BigInteger, nullable=False),
    Column("column_name", Text),
    Column("value", Text),
    Column("message", Text, nullable=False),
    Index("ix_dms_import_errors_job_id_line", "job_id", "line"),
)

outbox = Table(
    "dms_outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("job_id", Text, ForeignKey("dms_import_jobs.id", ondelete="SET NULL"), unique=True),
    _now(),
    Column("sent_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    # Last time a send was queued or tried: the sweep leaves messages with a live retry chain.
    Column("queued_at", DateTime(timezone=True)),
)
