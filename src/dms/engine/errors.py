"""Domain errors: they carry data (a stable code, a message, per-field errors), never HTTP status.

`dms.api.errors` alone maps each code to a status and the one JSON error shape.
"""

from __future__ import annotations

from typing import Any


class DmsError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        errors: dict[str, list[str]] | None = None,
        code: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.detail = detail or {}
        if code is not None:
            self.code = code


class InvalidRequest(DmsError):
    """Raised when a request is malformed (wrong shape, bad parameter)."""

    code = "invalid_request"


class ValidationFailed(DmsError):
    """Raised when values fail validation; `errors` maps field -> messages."""

    code = "validation_error"


class InvalidName(DmsError):
    """Raised when a table or column name breaks the naming rules."""

    code = "invalid_name"


class InvalidType(DmsError):
    """Raised when a column type specification is not in the type mini-language."""

    code = "invalid_type"


class ConversionError(ValueError):
    """Raised by a type converter when a value does not fit the column type."""


class NotFound(DmsError):
    """Raised when something does not exist (or is not visible to the caller)."""

    code = "not_found"


class TableNotFound(NotFound):
    """Raised when a table does not exist for this owner."""

    code = "table_not_found"


class ColumnNotFound(NotFound):
    """Raised when a column does not exist in the table."""

    code = "column_not_found"


class RecordNotFound(NotFound):
    """Raised when no row has the requested id."""

    code = "record_not_found"


class JobNotFound(NotFound):
    """Raised when an import job does not exist for this user."""

    code = "job_not_found"


class Conflict(DmsError):
    """Raised when the request conflicts with stored state."""

    code = "conflict"


class TableExists(Conflict):
    """Raised when a table of that name already exists for this owner."""

    code = "table_exists"


class ColumnExists(Conflict):
    """Raised when a column of that name already exists in the table."""

    code = "column_exists"


class UniqueViolation(Conflict):
    """Raised when a write would duplicate a value in a unique column."""

    code = "unique_violation"


class TableBusy(Conflict):
    """Raised when DDL meets a table that an import or another DDL holds."""

    code = "table_busy"


class IdempotencyConflict(Conflict):
    """Raised when an Idempotency-Key is reused with a different upload."""

    code = "idempotency_conflict"


class JobEnded(Conflict):
    """Raised when an operation needs a job that has not ended yet."""

    code = "job_ended"


class LimitExceeded(DmsError):
    """Raised when a configured limit (columns, tables, page size) is exceeded."""

    code = "limit_exceeded"


class RateLimited(DmsError):
    """Raised when a caller has made too many attempts."""

    code = "rate_limited"


class PayloadTooLarge(DmsError):
    """Raised when a request body or upload exceeds its size limit."""

    code = "payload_too_large"


class Unavailable(DmsError):
    """Raised when a dependency (database, broker) is down or a statement timed out."""

    code = "unavailable"
