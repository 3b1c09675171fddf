"""Fuzzing fixtures: an app on the session's database, a user with a token, a seeded `fuzzed`."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from dms import create_app
from tests.conftest import base_config, bearer, insert_user, login, unique_name
from tests.fuzz.strategies import FIELDS, KNOWN, SEED_ROWS, TABLE
from tests.test_imports_api import upload

# Statuses seen per operation, printed at the end: proof that the fuzzing reached real code.
TALLY: dict[str, Counter[int]] = defaultdict(Counter)


@dataclass
class FuzzTarget:
    """The fuzzed app, its user's token and the `fuzzed` table it keeps in shape."""

    app: Flask
    client: FlaskClient
    username: str
    token: str
    baseline: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        """Return the Authorization header of the fuzzing user."""
        return bearer(self.token)

    def describe(self) -> dict[str, Any] | None:
        """Return `fuzzed`'s columns and indexes, or None when it is gone."""
        response = self.client.get(
            "/schemas/describe_table/", query_string={"table_name": TABLE}, headers=self.headers
        )
        if response.status_code != 200:
            return None
        body = response.get_json()
        return {"columns": body["columns"], "indexes": body["indexes"]}

    def create(self) -> None:
        """Create `fuzzed` with its seed rows."""
        response = self.client.post(
            "/schemas/create_table/",
            json={"table_name": TABLE, "fields": FIELDS},
            headers=self.headers,
        )
        assert response.status_code == 201, response.get_json()
        response = self.client.post(
            "/crud/create_records/",
            json={"table_name": TABLE, "records": SEED_ROWS},
            headers=self.headers,
        )
        assert response.status_code == 201, response.get_json()

    def restore(self) -> None:
        """Put `fuzzed` back as it was if a fuzzed schema change altered, renamed or dropped it."""
        current = self.describe()
        if current == self.baseline:
            return
        if current is not None:
            response = self.client.delete(
                "/schemas/delete_table/", json={"table_name": TABLE}, headers=self.headers
            )
            assert response.status_code == 200, response.get_json()
        self.create()

    def fresh_token(self) -> str:
        """Return the access token of a new login (for the operation that revokes its own)."""
        return str(login(self.client, self.username)["access"])


@pytest.fixture(scope="module")
def fuzz_target(
    app: Flask, database_url: str, password_hash: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzTarget]:
    """Return an app (on the session's migrated database) with its own user and `fuzzed`."""
    config = base_config(database_url, str(tmp_path_factory.mktemp("fuzzvar")))
    config["DMS_ACCESS_TOKEN_MINUTES"] = 24 * 60  # a long `make fuzz` outlives 15 minutes
    fuzz_app = create_app(config)
    client = fuzz_app.test_client()
    username = unique_name("fuzz")
    insert_user(fuzz_app.extensions["dms"].db.engine, username, password_hash)
    target = FuzzTarget(fuzz_app, client, username, login(client, username)["access"])
    target.create()
    target.baseline = target.describe() or {}
    # One real job (queued: no worker runs here) so the job endpoints answer more than 404.
    job = upload(client, target.headers, b"name,qty\nfirst,1\nsecond,x\n", table=TABLE)
    assert job.status_code == 202, job.get_json()
    KNOWN.update(username=username, job_id=job.get_json()["job_id"])
    yield target
    fuzz_app.extensions["dms"].close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put each schemathesis item's operation in its node id (lost on pytest >= 9.2)."""
    # pytest 9.2 builds a Function's node id from `originalname` and its callspec only, so every
    # item that `schema.parametrize()` makes shares one id and a report cannot say which
    # operation failed. Remove once schemathesis names its items for pytest 9.2 itself.
    for item in items:
        label = getattr(item, "operation_label", None)
        node_id = getattr(item, "_id", None)
        if label and getattr(node_id, "params", "") is None and hasattr(node_id, "with_params"):
            item._id = node_id.with_params(label)  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what each fuzzed operation answered, status by status."""
    if not TALLY:
        return
    terminalreporter.section("fuzz: statuses per operation")
    for label in sorted(TALLY, key=lambda text: text.split(" ", 1)[::-1]):
        counts = " ".join(f"{status}x{n}" for status, n in sorted(TALLY[label].items()))
        terminalreporter.write_line(f"{label:<40} {counts}")
