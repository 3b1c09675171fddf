"""Read benchmark: `read_records` and `create_record` under gunicorn vs the same SQL via psycopg.

Builds a table of BENCH_ROWS rows (default 1M), then for each scenario prints unloaded p50 of
the API and of the direct SQL (and the API's overhead), and loaded requests/s, p50, p99 driven
by wrk from a second process on loopback (bounded: a few seconds per scenario).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any
from urllib.parse import urlencode, urlparse

import psycopg
from sqlalchemy import create_engine, text

from bench.common import ROOT, SECRET, fresh_database, gunicorn, percentile, plain, token
from dms.app import cursor_key
from dms.engine.catalog import Catalog
from dms.engine.ddl import Schemas
from dms.engine.query import compile_read, parse_read_params

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
SAMPLES = 300
FILTER = json.dumps({"category": 7})


def build(url: str) -> Any:
    """Create the bench table with ROWS rows and its indexes; return its definition."""
    engine = create_engine(url)
    schemas = Schemas(engine, Catalog())
    with engine.connect() as conn:
        owner = conn.execute(text("SELECT id FROM dms_users WHERE username='bench'")).scalar_one()
    table = schemas.create_table(
        owner,
        "items",
        {
            "category": "int not null",
            "name": "text",
            "price": "numeric(10,2) not null",
            "created": "date",
        },
    )
    target = f'"{table.pg_schema}"."items"'
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {target} (category, name, price, created) "
                "SELECT g % 100, 'item ' || g, (g % 100000) / 100.0, date '2020-01-01' + g % 1500 "
                f"FROM generate_series(1, {ROWS}) g"
            )
        )
    schemas.create_index(owner, "items", ["category", "price", "id"])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f"VACUUM ANALYZE {target}"))
    engine.dispose()
    return table


def scenarios(base: str, auth: str) -> dict[str, dict[str, str]]:
    """Return name -> query parameters (a cursor page is found by paging once)."""
    common = {"table_name": "items", "filters": FILTER, "sort_by": "price", "limit": "50"}
    out = {
        "filter+sort+limit 50, count=exact": {**common},
        "filter+sort+limit 50, count=estimated": {**common, "count": "estimated"},
        "filter+sort+limit 50, count=none": {**common, "count": "none"},
        "deep offset 5000, count=none": {**common, "offset": "5000", "count": "none"},
    }
    page = _get(base, auth, {**common, "count": "none", "offset": "4950"})
    cursor = json.loads(page)["next_cursor"]
    out["cursor page at depth 5000, count=none"] = {**common, "count": "none", "cursor": cursor}
    return out


def _get(base: str, auth: str, params: dict[str, str]) -> bytes:
    conn = http.client.HTTPConnection(urlparse(base).netloc)
    conn.request(
        "GET",
        "/crud/read_records/?" + urlencode(params),
        headers={"Authorization": f"Bearer {auth}"},
    )
    return conn.getresponse().read()


def api_timer(base: str, auth: str, method: str, path: str, body: bytes | None) -> Any:
    """Return a function that times one request (s) over one keep-alive connection."""
    conn = http.client.HTTPConnection(urlparse(base).netloc)
    headers = {"Authorization": f"Bearer {auth}", "Content-Type": "application/json"}

    def once() -> float:
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - started
        assert response.status < 300, response.status
        return elapsed

    return once


def paired_p50s(*timers: Any) -> list[float]:
    """Return each timer's p50 (ms), sampling them in alternating blocks.

    This machine's speed drifts by tens of percent from minute to minute (a shared host);
    alternating small blocks puts every timer under the same drift, so differences hold.
    """
    samples: list[list[float]] = [[] for _ in timers]
    for timer in timers:
        for _ in range(20):
            timer()  # warm: pooled connections, prepared statements, caches
    for _ in range(SAMPLES // 25):
        for timing, timer in zip(samples, timers, strict=True):
            timing.extend(timer() for _ in range(25))
    return [percentile(timing, 0.5) * 1000 for timing in samples]


def sql_timer(conn: psycopg.Connection[Any], statements: list[tuple[str, Any]]) -> Any:
    """Return a function that times running the same statements directly with psycopg."""

    def once() -> float:
        started = time.perf_counter()
        for sql_text, params in statements:
            conn.execute(sql_text, params).fetchall()
        return time.perf_counter() - started

    return once


def statements_for(url: str, table: Any, params: dict[str, str]) -> list[tuple[str, Any]]:
    """Return the SQL (with parameters) the API runs for these query parameters."""
    engine = create_engine(url)
    read = parse_read_params(params)
    compiled = compile_read(table.table, table.types, read, cursor_key=cursor_key(SECRET))
    out = []
    for stmt in (compiled.select, compiled.count if read.count == "exact" else None):
        if stmt is not None:
            c = stmt.compile(dialect=engine.dialect)
            out.append((str(c), c.construct_params(dict(compiled.values))))
    if read.count == "estimated" and compiled.estimate is not None:
        c = compiled.estimate.compile(dialect=engine.dialect)
        explain = "EXPLAIN (FORMAT JSON) " + str(c)
        out.append((explain, c.construct_params(dict(compiled.values))))
    engine.dispose()
    return out


def wrk(
    url: str, auth: str, script: str | None = None, connections: int = 8
) -> tuple[float, float, float]:
    """Drive `url` with wrk (8 connections, or 1: unloaded); return req/s, p50 ms, p99 ms."""
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--latency"]
    cmd += ["-H", f"Authorization: Bearer {auth}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rate, _latency(out, "50%"), _latency(out, "99%")


def _latency(out: str, label: str) -> float:
    value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# Scenarios the reference prototype (bench/proto_app.py) also serves, by its `count` mode.
PROTO_COUNT = {
    "filter+sort+limit 50, count=exact": "exact",
    "filter+sort+limit 50, count=estimated": "estimated",
    "filter+sort+limit 50, count=none": "none",
}


def measure(
    base: str,
    auth: str,
    request: tuple[str, str, bytes | None],
    direct: Any,
    proto: tuple[str, str] | None,
    lua: str | None = None,
) -> tuple[Any, ...]:
    """Return loaded (req/s, p50, p99), unloaded p50s of DMS, SQL and the prototype, and
    the unloaded p50s of DMS and the prototype as a C client (wrk, one connection) sees them.
    """
    method, path, body = request
    timers = [api_timer(base, auth, method, path, body), direct]
    if proto is not None:
        timers.append(api_timer(proto[0], auth, "GET", proto[1], None))
    p50s = paired_p50s(*timers)
    loaded = wrk(base + path, auth, lua)
    proto_loaded = wrk(proto[0] + proto[1], auth) if proto is not None else None
    # Python's http.client spends a few tenths of a ms a request on its own side; wrk's
    # one-connection p50 is the server's (plus loopback), in C, like psycopg's client in SQL.
    c_api = wrk(base + path, auth, lua, connections=1)[1]
    c_proto = wrk(proto[0] + proto[1], auth, connections=1)[1] if proto is not None else None
    return (*loaded, *p50s[:2], p50s[2] if proto else None, proto_loaded, c_api, c_proto)


def main() -> None:
    """Run every scenario and print one table."""
    if shutil.which("wrk") is None:
        raise SystemExit("the read bench needs wrk (Debian: apt-get install wrk)")
    with fresh_database("dms_bench_reads") as url:
        started = time.monotonic()
        table = build(url)
        print(f"built {ROWS:,} rows in {time.monotonic() - started:.1f}s")
        proto_env = {
            "BENCH_PROTO_URL": url,
            "BENCH_PROTO_SCHEMA": table.pg_schema,
            "PYTHONPATH": str(ROOT),
        }
        proto_app = "bench.proto_app:create_app()"
        with (
            gunicorn(url) as base,
            gunicorn(url, extra_env=proto_env, app=proto_app) as proto_base,
            psycopg.connect(plain(url), autocommit=True) as sql,
        ):
            auth = token(base)
            rows = []
            for name, params in scenarios(base, auth).items():
                path = "/crud/read_records/?" + urlencode(params)
                direct = sql_timer(sql, statements_for(url, table, params))
                mode = PROTO_COUNT.get(name)
                proto = (proto_base, f"/read?category=7&count={mode}") if mode else None
                rows.append((name, *measure(base, auth, ("GET", path, None), direct, proto)))
            body = json.dumps(
                {
                    "table_name": "items",
                    "data": {
                        "category": 1,
                        "name": "new",
                        "price": "1.50",
                        "created": "2024-01-01",
                    },
                }
            )
            insert_sql = (
                f'INSERT INTO "{table.pg_schema}"."items" (category, name, price, created)'
                " VALUES (1, 'new', 1.50, '2024-01-01') RETURNING *"
            )
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
                lua.write(
                    'wrk.method = "POST"\nwrk.body = '
                    + json.dumps(body)
                    + '\nwrk.headers["Content-Type"] = "application/json"\n'
                )
            request = ("POST", "/crud/create_record/", body.encode())
            direct = sql_timer(sql, [(insert_sql, None)])
            rows.append(("create_record", *measure(base, auth, request, direct, None, lua.name)))
    report(rows)


def report(rows: list[tuple[Any, ...]]) -> None:
    """Print the results: DMS loaded and unloaded, direct SQL, and the reference prototype."""
    print(
        f"\n{'scenario':40} {'req/s':>6} {'p50':>6} {'p99':>6} | {'API':>5} {'SQL':>5} "
        f"{'over':>5} | {'proto':>5} {'p.over':>6} {'DMS-p':>5} {'p.req/s':>7} | "
        f"{'API(C)':>6} {'over(C)':>7} {'proto(C)':>8}"
    )
    for name, rate, p50, p99, api, direct, proto, proto_loaded, c_api, c_proto in rows:
        line = (
            f"{name:40} {rate:6.0f} {p50:6.2f} {p99:6.2f} | {api:5.2f} {direct:5.2f} "
            f"{api - direct:5.2f} |"
        )
        if proto is not None:
            line += f" {proto:5.2f} {proto - direct:6.2f} {api - proto:5.2f} {proto_loaded[0]:7.0f}"
        else:
            line += f" {'':5} {'':6} {'':5} {'':7}"
        line += f" | {c_api:6.2f} {c_api - direct:7.2f}"
        if c_proto is not None:
            line += f" {c_proto:8.2f}"
        print(line)
    print(
        "\nms; req/s, p50 and p99 under wrk -t2 -c8; API/SQL/proto: unloaded p50 of DMS, the same"
        "\nSQL run directly with psycopg, and the reference prototype (bench/proto_app.py: Flask +"
        "\nCore + psycopg, no auth, no registry) under the same gunicorn; over = API - SQL,"
        "\np.over = proto - SQL, DMS-p = API - proto. (C): the unloaded p50 as wrk sees it with one"
        "\nconnection (a client in C, as psycopg's is), over(C) = API(C) - SQL."
    )


if __name__ == "__main__":
    main()
