"""DMS: run-time PostgreSQL tables over a JSON API, with validated background CSV import."""

from dms.app import create_app

__all__ = ["create_app"]
