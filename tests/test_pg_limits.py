"""Input beyond a PostgreSQL limit is the caller's error: 400, nothing stored, never 503/500."""

from __future__ import annotations

import random
import string


def test_a_value_too_long_to_index_answers_400_and_stores_nothing(client, auth):
    table = "long_values"
    created = client.post(
        "/schemas/create_table/",
        json={"table_name": table, "fields": {"code": "text unique"}},
        headers=auth,
    )
    assert created.status_code == 201
    rng = random.Random(5)
    huge = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(40_000))
    response = client.post(
        "/crud/create_record/", json={"table_name": table, "data": {"code": huge}}, headers=auth
    )
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    assert body["code"] == "invalid_request" and "limit" in body["message"]
    page = client.get("/crud/read_records/", query_string={"table_name": table}, headers=auth)
    assert page.get_json()["count"] == 0
    short = client.post(
        "/crud/create_record/", json={"table_name": table, "data": {"code": "ok"}}, headers=auth
    )
    assert short.status_code == 201
